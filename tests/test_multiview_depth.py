"""Plane-sweep depth with known answers: a textured wall seen from three posed cameras."""
from __future__ import annotations

import math

import numpy as np
import torch

from nvpanoptix3d.depth.multiview import pick_sources, plane_sweep
from nvpanoptix3d.geometry import Intrinsics


def _pose(x: float = 0.0, y: float = 0.0, yaw_deg: float = 0.0) -> np.ndarray:
    pose = np.eye(4)
    a = math.radians(yaw_deg)
    pose[:3, :3] = [[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]]
    pose[:3, 3] = (x, y, 0.0)
    return pose


_CELLS = np.random.default_rng(0).uniform(0.2, 0.8, (400, 400))


def _texture(x: np.ndarray, y: np.ndarray, cell: float = 0.02) -> np.ndarray:
    """Random grey values on a 2 cm grid, bilinearly blended: a texture with no repeating pattern."""
    gx, gy = x / cell + 200, y / cell + 200
    x0, y0 = np.floor(gx).astype(int).clip(0, 398), np.floor(gy).astype(int).clip(0, 398)
    fx, fy = np.clip(gx - x0, 0, 1), np.clip(gy - y0, 0, 1)
    return (_CELLS[x0, y0] * (1 - fx) * (1 - fy) + _CELLS[x0 + 1, y0] * fx * (1 - fy)
            + _CELLS[x0, y0 + 1] * (1 - fx) * fy + _CELLS[x0 + 1, y0 + 1] * fx * fy)


def _view(pose: np.ndarray, k: Intrinsics, wall_z: float, gain: float = 1.0) -> torch.Tensor:
    """What a camera at `pose` sees of the textured plane z = wall_z (world), as 3 x H x W in [0, 1]."""
    v, u = np.meshgrid(np.arange(k.height), np.arange(k.width), indexing="ij")
    rays = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u, float)], -1) @ pose[:3, :3].T
    t = (wall_z - pose[2, 3]) / rays[..., 2]
    hit = pose[:3, 3] + rays * t[..., None]
    gray = np.clip(gain * _texture(hit[..., 0], hit[..., 1]), 0, 1)
    return torch.from_numpy(np.repeat(gray[None], 3, 0)).float()


def test_a_textured_wall_is_placed_at_its_depth_despite_exposure_changes():
    k = Intrinsics.front3d()
    poses = [_pose(), _pose(x=0.25), _pose(y=-0.2), _pose(x=-0.15, y=0.1)]
    images = [_view(p, k, 2.5, gain) for p, gain in zip(poses, (1.0, 1.3, 0.8, 1.1))]   # exposures differ
    result = plane_sweep(images, poses, 0, k, planes=64)
    depth, kept = result.depth.numpy(), result.depth.numpy() > 0
    assert set(result.sources) == {1, 2, 3}
    assert kept.mean() > 0.8                                           # a textured wall: nearly all confident
    assert np.abs(depth[kept] - 2.5).mean() / 2.5 < 0.02               # planes 9% apart there: refined to 2%


def test_untextured_pixels_are_left_to_the_prediction():
    k = Intrinsics.front3d()
    poses = [_pose(), _pose(x=0.25)]
    flat = [torch.full((3, k.height, k.width), 0.5) for _ in poses]
    assert (plane_sweep(flat, poses, 0, k).depth == 0).all()


def test_sources_need_a_baseline_and_a_similar_view():
    poses = [_pose(), _pose(yaw_deg=20), _pose(x=0.3), _pose(x=0.2, yaw_deg=90), _pose(x=3.0), _pose(x=0.04)]
    # 1: a pure rotation; 3: looks elsewhere; 4: too far; 5: too short a baseline
    assert pick_sources(poses, 0) == [2]


def test_the_prediction_fitted_to_the_given_depth():
    from nvpanoptix3d.model.network import aligned_to
    truth = torch.rand(1, 30, 40) * 4 + 0.5
    predicted = 0.5 * truth + 0.3                                       # off in scale and shift
    given = torch.where(torch.rand(1, 30, 40) < 0.3, truth, torch.zeros_like(truth))   # 30% known
    assert torch.allclose(aligned_to(predicted, given), truth, atol=1e-4)
