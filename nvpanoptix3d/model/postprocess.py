"""From network outputs to panoptic labels: Mask2Former-style fusion in 2D, query-propagated labels in 3D."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ..config import ExperimentConfig
from ..labels import NUM_CLASSES, is_thing
from .frustum3d import Output3D
from .head2d import Output2D

THING_TABLE = torch.tensor([is_thing(c) for c in range(NUM_CLASSES)])


@dataclass
class Panoptic2D:
    semantic: torch.Tensor   # H x W
    instance: torch.Tensor   # H x W (query index + 1 for things, 0 for stuff)
    depth: torch.Tensor      # H x W metres


@dataclass
class Panoptic3D:
    index: torch.Tensor          # V x 3 occupied voxels of the 256^3 grid
    semantic: torch.Tensor       # V
    instance: torch.Tensor       # V
    probability: torch.Tensor    # V occupancy probability
    scores: dict                 # instance id -> query score
    dims: tuple

    def dense(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        occ = torch.zeros(self.dims, dtype=torch.bool)
        sem = torch.zeros(self.dims, dtype=torch.int64)
        inst = torch.zeros(self.dims, dtype=torch.int64)
        i, j, k = self.index.cpu().unbind(-1)
        occ[i, j, k] = True
        sem[i, j, k] = self.semantic.cpu()
        inst[i, j, k] = self.instance.cpu()
        return occ, sem, inst


def kept_queries(class_logits: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(keep mask, label, score) per query (... x N x C logits); class 0 is 'no object'."""
    prob = class_logits.float().softmax(-1)
    score, label = prob[..., 1:].max(-1)
    label = label + 1
    return score > threshold, label, score


def panoptic_2d(out: Output2D, i: int, cfg: ExperimentConfig, size: tuple[int, int]) -> Panoptic2D:
    pp = cfg.postprocess
    keep, label, score = kept_queries(out.class_logits[i], pp.object_mask_threshold)
    masks = F.interpolate(out.mask_logits[i][None].float(), size=size, mode="bilinear",
                          align_corners=False)[0].sigmoid()
    depth = F.interpolate(out.depth[i][None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]
    semantic = torch.zeros(size, dtype=torch.long, device=masks.device)
    instance = torch.zeros_like(semantic)
    if not keep.any():
        return Panoptic2D(semantic, instance, depth)
    q_idx = keep.nonzero()[:, 0]
    prob_masks = score[q_idx, None, None] * masks[q_idx]
    owner = prob_masks.argmax(0)
    for slot, q in enumerate(q_idx.tolist()):
        region = (owner == slot) & (masks[q] >= 0.5)
        original = (masks[q] >= 0.5).sum()
        if original == 0 or region.sum() / original < pp.overlap_threshold:
            continue
        c = int(label[q])
        semantic[region] = c
        if is_thing(c):
            instance[region] = q + 1
    if cfg.model.mode == "semantic":
        instance.zero_()
    return Panoptic2D(semantic, instance, depth)


def panoptic_3d(out2d: Output2D, out3d: Output3D, i: int, cfg: ExperimentConfig, mode: str | None = None) -> Panoptic3D:
    pp = cfg.postprocess
    mode = mode or cfg.model.mode
    prob = out3d.fine_logits[i].float().sigmoid()
    if pp.occupancy_threshold < out3d.label_above:
        raise ValueError(f"postprocess.occupancy_threshold {pp.occupancy_threshold} is below the "
                         f"{out3d.label_above} the 3D stage labelled voxels above; build the model with it")
    occupied = out3d.fine_valid[i] & (prob > pp.occupancy_threshold)
    index = out3d.fine_index[i][occupied]
    sem_logits = out3d.semantic_logits[i][occupied].float()
    sem_logits[:, 0] = -1e4                                        # occupied voxels are never void
    semantic = neighbour_mean(index, sem_logits.softmax(-1), pp.semantic_smoothing_radius).argmax(-1)
    instance = torch.zeros_like(semantic)
    keep, label, score = kept_queries(out2d.class_logits[i], pp.object_mask_threshold)
    things = keep & THING_TABLE.to(label.device)[label]
    scores = {}
    thing_voxel = THING_TABLE.to(semantic.device)[semantic]
    if things.any() and thing_voxel.any() and mode != "semantic":
        q_idx = things.nonzero()[:, 0]
        affinity = out3d.query_logits[i][occupied][thing_voxel][:, q_idx].float()
        instance[thing_voxel] = q_idx[affinity.argmax(-1)] + 1
        # an instance takes the majority class of its voxels
        semantic[thing_voxel] = majority_class(instance[thing_voxel], semantic[thing_voxel])
        scores = {int(q) + 1: float(score[q]) for q in q_idx.tolist()}
    prob_kept = prob[occupied]
    keep_vox = large_segments(semantic, instance, pp.min_segment_voxels)
    if mode == "instance":
        keep_vox = keep_vox & thing_voxel
    index, semantic, instance, prob_kept = index[keep_vox], semantic[keep_vox], instance[keep_vox], prob_kept[keep_vox]
    present = set(instance.unique().tolist())
    scores = {k: v for k, v in scores.items() if k in present}
    return Panoptic3D(index, semantic, instance, prob_kept, scores, tuple(cfg.model.frustum3d.grid_dimensions))


def neighbour_mean(index: torch.Tensor, values: torch.Tensor, radius: int) -> torch.Tensor:
    """V x 3 distinct voxels, V x C values -> V x C: each voxel's mean over the voxels of the set within `radius`
    along every axis (itself included), as one sparse V x V neighbour matrix times the values."""
    if radius <= 0 or len(index) == 0:
        return values
    # a lookup volume over the set's box padded by the radius: no neighbour key past one face lands on the other
    shifted = index - index.min(0).values + radius
    size = (shifted.max(0).values + radius + 1).tolist()
    stride = torch.tensor([size[1] * size[2], size[2], 1], device=index.device)
    key = (shifted * stride).sum(-1)                          # integer matmul has no CUDA kernel
    row_of = torch.full((size[0] * size[1] * size[2],), -1, dtype=torch.int64, device=index.device)
    row_of[key] = torch.arange(len(index), device=index.device)
    span = torch.arange(-radius, radius + 1, device=index.device)
    neighbours = row_of[key[:, None] + (torch.cartesian_prod(span, span, span) * stride).sum(-1)]  # V x (2r+1)^3
    present = neighbours >= 0
    counts = present.sum(1)
    rows = torch.zeros(len(index) + 1, dtype=torch.int64, device=index.device)
    rows[1:] = counts.cumsum(0)
    columns = neighbours[present]
    with warnings.catch_warnings():  # CSR is "beta" to PyTorch; its product is 10x faster than gather + index_add
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        adjacency = torch.sparse_csr_tensor(rows, columns, torch.ones_like(columns, dtype=values.dtype),
                                            size=(len(index), len(index)))
    return (adjacency @ values) / counts[:, None].to(values.dtype)


def majority_class(group: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
    """V group ids (any integers), V classes -> V: the most frequent class of each voxel's group."""
    ids, inverse = group.unique(return_inverse=True)
    votes = torch.zeros(len(ids), NUM_CLASSES, device=semantic.device)
    votes.index_put_((inverse, semantic), torch.ones_like(inverse, dtype=torch.float), accumulate=True)
    return votes.argmax(-1)[inverse]


def large_segments(semantic: torch.Tensor, instance: torch.Tensor, min_voxels: int) -> torch.Tensor:
    """V bool: the voxels of segments (class and instance; stuff's instance is 0) of at least min_voxels voxels."""
    if min_voxels <= 1 or semantic.numel() == 0:
        return torch.ones_like(semantic, dtype=torch.bool)
    _, inverse, counts = torch.unique(semantic * (instance.max() + 1) + instance, return_inverse=True,
                                      return_counts=True)
    return counts[inverse] >= min_voxels
