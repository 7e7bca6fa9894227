"""Depth from posed RGB frames: a plane sweep over inverse depth with a zero-mean NCC cost.

For a reference frame:
1. pick source frames by pose: a baseline of 5 cm to 1 m (no depth from pure rotation, little overlap far
   away) and optical axes within 40 degrees; the four with the best baseline x alignment score;
2. for each of `planes` inverse depths between 1/depth_min and 1/depth_max, warp every source into the
   reference through its pose (all frames share the model's camera after camera_fit) and score it with
   zero-mean NCC over a 5 x 5 window, which ignores exposure and white-balance changes between photos;
3. average the sources' costs, smooth each plane over 5 x 5 pixels, take the best plane with a parabolic
   sub-plane refinement;
4. confidence: the best cost against the best cost two or more planes away (a unique, sharp minimum) and the
   window's texture; pixels below `min_confidence` are 0 (untextured walls, reflections, occlusions) and the
   3D stage fills them from the monocular prediction aligned to the confident pixels.
Vectorised in torch: the GPU when there is one, the CPU otherwise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from ..geometry import Intrinsics


@dataclass
class MultiViewDepth:
    depth: torch.Tensor        # H x W metres, 0 where not confident
    confidence: torch.Tensor   # H x W in [0, 1]
    sources: list[int]         # the frames used


def pick_sources(poses: list[np.ndarray], ref: int, count: int = 4, min_baseline: float = 0.05,
                 max_baseline: float = 1.0, max_angle_deg: float = 40.0) -> list[int]:
    """Frames to match the reference against (the rule above), best first."""
    centre, axis = poses[ref][:3, 3], poses[ref][:3, 2]
    scored = []
    for i, pose in enumerate(poses):
        if i == ref:
            continue
        baseline = float(np.linalg.norm(pose[:3, 3] - centre))
        cos = float(np.clip(pose[:3, 2] @ axis, -1, 1))
        if not min_baseline <= baseline <= max_baseline or math.degrees(math.acos(cos)) > max_angle_deg:
            continue
        scored.append((min(baseline / 0.3, 1.0) * cos, i))
    return [i for _, i in sorted(scored, reverse=True)[:count]]


def _gray(image: torch.Tensor) -> torch.Tensor:
    """3 x H x W (float in [0, 1], or uint8) -> 1 x 1 x H x W luminance in [0, 1]."""
    image = image.float() / 255 if image.dtype == torch.uint8 else image.float()
    return (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])[None, None]


def _box(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.avg_pool2d(x, size, stride=1, padding=size // 2, count_include_pad=False)


def _census(x: torch.Tensor, window: int) -> torch.Tensor:
    """N x 1 x H x W -> N x (window^2 - 1) x H x W bits: is each neighbour brighter than the centre."""
    r = window // 2
    padded = F.pad(x, (r, r, r, r), mode="replicate")
    h, w = x.shape[-2:]
    bits = [padded[..., dy:dy + h, dx:dx + w] > x for dy in range(window) for dx in range(window)
            if (dy, dx) != (r, r)]
    return torch.cat(bits, 1)


def _ncc_cost(warped, ref_img, ref_mean, ref_var, window):
    """1 - zero-mean NCC of each warped image with the reference over the window (one pooling call)."""
    n = warped.shape[0]
    pooled = _box(torch.cat([warped, warped * warped, warped * ref_img], 0), window)
    mean_w, mean_sq, mean_cross = pooled[:n], pooled[n:2 * n], pooled[2 * n:]
    cov = mean_cross - mean_w * ref_mean
    return 1 - cov / torch.sqrt(((mean_sq - mean_w ** 2) * ref_var).clamp(min=1e-8))


def _census_cost(warped, ref_census, window):
    """Hamming distance of the census bits, scaled to [0, 2] like 1 - NCC."""
    return 2 * (_census(warped, window) != ref_census).float().mean(1, keepdim=True)


COSTS = ("ncc", "census")


def plane_sweep(images: list[torch.Tensor], poses: list[np.ndarray], ref: int, k: Intrinsics,
                depth_min: float = 0.4, depth_max: float = 6.0, planes: int = 64, window: int = 5,
                min_confidence: float = 0.5, cost_kind: str = "ncc",
                device: torch.device | None = None) -> MultiViewDepth:
    """images: 3 x H x W (float in [0, 1] or uint8), all in camera k; poses: camera-to-world (OpenCV).
    device: where the sweep runs (default: where the reference image is); images move there one at a time."""
    sources = pick_sources(poses, ref)
    device = device or images[ref].device
    h, w = k.height, k.width
    if not sources:
        zero = torch.zeros(h, w, device=device)
        return MultiViewDepth(zero, zero.clone(), [])
    inverse = torch.linspace(1 / depth_min, 1 / depth_max, planes, device=device)
    v, u = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                          torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    rays = torch.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, torch.ones_like(u)], 0).reshape(3, -1)  # 3 x HW
    ref_img = _gray(images[ref].to(device))
    ref_mean, ref_var = _box(ref_img, window), _box(ref_img ** 2, window) - _box(ref_img, window) ** 2
    ref_census = _census(ref_img, window) if cost_kind == "census" else None
    c2w_ref = torch.as_tensor(poses[ref], dtype=torch.float32, device=device)
    cost = torch.zeros(planes, h, w, device=device)
    # a GPU takes every source and plane in one batch (a few large kernels, not many small ones); a CPU one source
    # at a time, which stays in its caches
    for group in [sources] if device.type == "cuda" else [[s] for s in sources]:
        w2c = torch.as_tensor(np.linalg.inv(np.stack([poses[s] for s in group])), dtype=torch.float32, device=device)
        rel = w2c @ c2w_ref                                                 # G x 4 x 4: reference -> source camera
        p = rel[:, None, :3, :3] @ rays * (1 / inverse)[None, :, None, None] + rel[:, None, :3, 3:4]  # G x P x 3 x HW
        z = p[:, :, 2].clamp(min=1e-3)
        su, sv = p[:, :, 0] / z * k.fx + k.cx, p[:, :, 1] / z * k.fy + k.cy
        n = len(group) * planes
        grid = torch.stack([(su + 0.5) / w * 2 - 1, (sv + 0.5) / h * 2 - 1], -1).reshape(n, h, w, 2)
        src = torch.cat([_gray(images[s].to(device)) for s in group])      # G x 1 x H x W
        warped = F.grid_sample(src[:, None].expand(-1, planes, -1, -1, -1).reshape(n, 1, h, w), grid,
                               align_corners=False, padding_mode="zeros")  # GP x 1 x H x W
        one = _census_cost(warped, ref_census, window) if cost_kind == "census" else \
            _ncc_cost(warped, ref_img, ref_mean, ref_var, window)
        inside = _box((grid.abs() <= 1).all(-1)[:, None].float(), window) > 0.99  # the window inside the source
        cost += torch.where(inside, one, torch.full_like(one, 2.0)).reshape(len(group), planes, h, w).sum(0)
    cost = _box(cost[:, None] / len(sources), window)[:, 0]               # aggregate over the window
    best = cost.argmin(0)
    best_cost = cost.gather(0, best[None])[0]
    # sub-plane refinement: the parabola through the best plane and its neighbours
    lo, hi = (best - 1).clamp(min=0), (best + 1).clamp(max=planes - 1)
    c0, c2 = cost.gather(0, lo[None])[0], cost.gather(0, hi[None])[0]
    curvature = (c0 + c2 - 2 * best_cost).clamp(min=1e-6)
    shift = torch.where((best > 0) & (best < planes - 1), 0.5 * (c0 - c2) / curvature, torch.zeros_like(c0))
    index = best.float() + shift.clamp(-0.5, 0.5)
    step = (inverse[-1] - inverse[0]) / (planes - 1)
    depth = 1 / (inverse[0] + index * step)
    # confidence: a unique minimum (the best cost well below any plane two or more away) on a textured window
    planes_idx = torch.arange(planes, device=device)[:, None, None]
    far = (planes_idx - best[None]).abs() >= 2
    second = torch.where(far, cost, torch.full_like(cost, 9.0)).min(0).values
    margin = ((second - best_cost) / 0.3).clamp(0, 1)
    texture = (ref_var[0, 0].sqrt() / 0.02).clamp(0, 1)
    confidence = margin * texture * (best_cost < 0.8).float()
    return MultiViewDepth(torch.where(confidence >= min_confidence, depth, torch.zeros_like(depth)), confidence,
                          sources)
