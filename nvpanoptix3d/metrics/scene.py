"""Scores of a fused scene against the scene's true surfaces (world metres).

- geometry: accuracy (mean distance predicted -> true), completeness (true -> predicted), precision, recall and
  F-score within 5 cm, between the fused voxels' centres and the true surface points;
- scene PRQ / RSQ / RRQ: segments in the world voxel grid, each dilated by one voxel, IoU above 0.25, the
  single-view rules (the ceiling ignored);
- instance consistency: how many predicted object IDs one true object gets (each covering 10% of it or more).
Precision, accuracy and scene PRQ use the truth inside some frame's view frustum, seen or hidden (`in_frusta`),
as single-view PRQ uses the whole frustum; recall and completeness use the truth some frame saw
(`visible_truth`): a walk-through is not asked to complete walls it never faced.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.spatial import cKDTree

from ..labels import CEILING, NAMES, NUM_CLASSES, is_thing
from .panoptic import PanopticAccumulator, segments, thickened_segments

IS_THING = np.array([is_thing(c) for c in range(NUM_CLASSES)])


@dataclass
class SceneScore:
    accuracy_m: float
    completeness_m: float
    precision: float
    recall: float
    fscore: float
    prq: float
    rsq: float
    rrq: float
    ids_per_object: float
    objects_true: int
    objects_found: int

    def as_dict(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def in_frusta(points: np.ndarray, views, depth_range: tuple = (0.4, 6.0)) -> np.ndarray:
    """N bool: true surface points inside some frame's view frustum (projecting into its image within the
    depth range), whether the frame saw them or not."""
    inside_any = np.zeros(len(points), bool)
    for camera_to_world, depth, fx, fy, cx, cy in views:
        w2c = np.linalg.inv(camera_to_world)
        p = points @ w2c[:3, :3].T + w2c[:3, 3]
        z = p[:, 2]
        front = (z >= depth_range[0]) & (z <= depth_range[1])
        u = p[:, 0] / np.where(front, z, 1) * fx + cx
        v = p[:, 1] / np.where(front, z, 1) * fy + cy
        h, w = depth.shape
        inside_any |= front & (u >= -0.5) & (v >= -0.5) & (u < w - 0.5) & (v < h - 0.5)
    return inside_any


def visible_truth(points: np.ndarray, views, tolerance: float = 0.05) -> np.ndarray:
    """N bool: true surface points that lie on some frame's depth (within `tolerance`) where it projects.
    views: (camera_to_world 4x4, depth H x W metres, fx, fy, cx, cy) per frame."""
    seen = np.zeros(len(points), bool)
    for camera_to_world, depth, fx, fy, cx, cy in views:
        w2c = np.linalg.inv(camera_to_world)
        p = points @ w2c[:3, :3].T + w2c[:3, 3]
        z = p[:, 2]
        front = z > 0.05
        u = np.round(p[:, 0] / np.where(front, z, 1) * fx + cx).astype(np.int64)
        v = np.round(p[:, 1] / np.where(front, z, 1) * fy + cy).astype(np.int64)
        h, w = depth.shape
        inside = front & (u >= 0) & (v >= 0) & (u < w) & (v < h)
        d = np.zeros(len(points), np.float32)
        d[inside] = depth[v[inside], u[inside]]
        seen |= inside & (d > 0) & (np.abs(d - z) <= tolerance)
    return seen


def voxel_labels(points: np.ndarray, semantic: np.ndarray, instance: np.ndarray, voxel_size: float):
    """The voxels the points fall in (coords V x 3), each with its most frequent (class, instance) label."""
    coords = np.floor(points / voxel_size).astype(np.int64)
    label = semantic.astype(np.int64) * (1 << 32) + instance.astype(np.int64)
    table = np.concatenate([coords, label[:, None]], 1)
    pairs, counts = np.unique(table, axis=0, return_counts=True)
    order = np.lexsort((-counts, pairs[:, 3], pairs[:, 2], pairs[:, 1], pairs[:, 0]))
    pairs = pairs[order]
    first = np.concatenate([[True], (pairs[1:, :3] != pairs[:-1, :3]).any(1)])
    best = pairs[first]
    return best[:, :3], best[:, 3] >> 32, best[:, 3] & 0xFFFFFFFF


def score_scene(pred_coords: np.ndarray, pred_semantic: np.ndarray, pred_instance: np.ndarray, voxel_size: float,
                true_points: np.ndarray, true_semantic: np.ndarray, true_instance: np.ndarray,
                seen: np.ndarray | None = None, threshold: float = 0.05) -> SceneScore:
    """Scores of predicted world voxels against true surface points (cut to the frames' frusta); `seen` (N bool)
    marks the points some frame saw, which recall and completeness use (None: all)."""
    pred_points = (pred_coords + 0.5) * voxel_size
    seen_points = true_points if seen is None else true_points[seen]
    if len(pred_points) == 0 or len(seen_points) == 0:
        return SceneScore(float("inf"), float("inf"), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0)
    to_true = cKDTree(true_points).query(pred_points, workers=-1)[0]
    to_pred = cKDTree(pred_points).query(seen_points, workers=-1)[0]
    precision, recall = float((to_true < threshold).mean()), float((to_pred < threshold).mean())
    fscore = 2 * precision * recall / max(precision + recall, 1e-12)
    true_coords, true_sem, true_inst = voxel_labels(true_points, true_semantic, true_instance, voxel_size)
    prq = _scene_prq(pred_coords, pred_semantic, pred_instance, true_coords, true_sem, true_inst)
    ids, found, total = _ids_per_object(pred_coords, pred_instance, true_coords, true_sem, true_inst)
    return SceneScore(float(to_true.mean()), float(to_pred.mean()), precision, recall, fscore, prq["prq"],
                      prq["rsq"], prq["rrq"], ids, total, found)


def _scene_prq(pred_coords, pred_sem, pred_inst, true_coords, true_sem, true_inst) -> dict:
    low = np.minimum(pred_coords.min(0), true_coords.min(0))
    dims = np.maximum(pred_coords.max(0), true_coords.max(0)) - low + 2
    acc = PanopticAccumulator(IS_THING, 0.25, {CEILING}, list(NAMES))
    truth = thickened_segments(true_coords - low, segments(true_sem, true_inst, IS_THING, {CEILING}), dims)
    pred = thickened_segments(pred_coords - low, segments(pred_sem, pred_inst, IS_THING, {CEILING}), dims)
    acc.add_masks(truth, pred)
    return acc.result().as_dict("prq")


def _ids_per_object(pred_coords, pred_inst, true_coords, true_sem, true_inst, min_voxels: int = 50,
                    min_share: float = 0.1):
    """Mean number of predicted IDs per true object they cover (over objects with any predicted object voxel),
    objects found, true objects."""
    side = np.maximum(pred_coords.max(0), true_coords.max(0)) - np.minimum(pred_coords.min(0), true_coords.min(0)) + 1
    low = np.minimum(pred_coords.min(0), true_coords.min(0))

    def key(c):
        c = c - low
        return (c[:, 0] * side[1] + c[:, 1]) * side[2] + c[:, 2]

    pred_key = key(pred_coords)
    order = np.argsort(pred_key)
    pred_key, pred_inst = pred_key[order], pred_inst[order]
    counts, total = [], 0
    for obj in np.unique(true_inst[IS_THING[true_sem] & (true_inst > 0)]):
        mine = key(true_coords[true_inst == obj])
        if len(mine) < min_voxels:
            continue
        total += 1
        pos = np.searchsorted(pred_key, mine).clip(max=len(pred_key) - 1)
        got = pred_inst[pos][(pred_key[pos] == mine) & (pred_inst[pos] > 0)]
        if len(got) == 0:
            continue
        _, n = np.unique(got, return_counts=True)
        counts.append(int((n >= min_share * len(got)).sum()))
    return (float(np.mean(counts)) if counts else 0.0), len(counts), total
