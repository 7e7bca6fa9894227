"""Exact ray casting of a box scene in batched PyTorch (same code on CPU and CUDA).

Each part only touches the rays of its own screen rectangle, so a frame costs about its visible pixels
rather than pixels x parts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..geometry import Intrinsics
from ..labels import CEILING, FLOOR, WALL
from .scene import Scene


@dataclass
class RenderedFrame:
    rgb: torch.Tensor        # H x W x 3 uint8
    depth: torch.Tensor      # H x W float32 metres
    semantic: torch.Tensor   # H x W int64
    instance: torch.Tensor   # H x W int64


def part_corners(part) -> np.ndarray:
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
    c, s = math.cos(part.yaw), math.sin(part.yaw)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    return (signs * part.half) @ rot.T + part.center


def _screen_rect(corners_cam: np.ndarray, k: Intrinsics) -> tuple[int, int, int, int] | None:
    """Pixel bounds (v0, v1, u0, u1) of a box, the whole image when it reaches behind the camera."""
    z = corners_cam[:, 2]
    if (z <= 0.05).all():
        return None
    if (z <= 0.05).any():
        return 0, k.height, 0, k.width
    u = corners_cam[:, 0] / z * k.fx + k.cx
    v = corners_cam[:, 1] / z * k.fy + k.cy
    u0, u1 = max(0, int(math.floor(u.min())) - 1), min(k.width, int(math.ceil(u.max())) + 2)
    v0, v1 = max(0, int(math.floor(v.min())) - 1), min(k.height, int(math.ceil(v.max())) + 2)
    if u0 >= u1 or v0 >= v1:
        return None
    return v0, v1, u0, u1


def _to_part(v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """World vectors into a part's frame (rotation by -yaw about z); cos / sin broadcast against v[..., 0]."""
    return torch.stack([cos * v[..., 0] + sin * v[..., 1], -sin * v[..., 0] + cos * v[..., 1], v[..., 2]], -1)


def _slab(d_local: torch.Tensor, o_local: torch.Tensor, half: torch.Tensor):
    """Ray / box entry: (t_near, t_far, entry axis) for rays from o_local along d_local."""
    inv = 1.0 / torch.where(d_local.abs() < 1e-9, torch.full_like(d_local, 1e-9), d_local)
    t1, t2 = (-half - o_local) * inv, (half - o_local) * inv
    t_near, near_axis = torch.minimum(t1, t2).max(dim=-1)
    return t_near, torch.maximum(t1, t2).min(dim=-1).values, near_axis


def _entry_normal(d_local, near_axis, cos, sin) -> torch.Tensor:
    """World normal of the face a ray enters through."""
    sign = -torch.sign(torch.gather(d_local, -1, near_axis[..., None]))
    n = torch.nn.functional.one_hot(near_axis, 3).float() * sign
    return torch.stack([cos * n[..., 0] - sin * n[..., 1], sin * n[..., 0] + cos * n[..., 1], n[..., 2]], -1)


def cast(scene: Scene, pose: np.ndarray, k: Intrinsics, device="cpu", batched: bool | None = None):
    """Nearest hit per pixel: depth, label, instance, part index (-1 room), world point, world normal.
    Parts go one by one on the CPU and all at once on a GPU (few kernel launches); both give the same result."""
    rot = torch.tensor(pose[:3, :3], dtype=torch.float32, device=device)
    eye = torch.tensor(pose[:3, 3], dtype=torch.float32, device=device)
    dirs = k.pixel_rays(device) @ rot.T                      # H x W x 3, camera z = 1
    size = torch.tensor(scene.size, dtype=torch.float32, device=device)
    # the room: the ray leaves the box [0, size] through exactly one face
    inv = 1.0 / torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t_face = torch.where(dirs > 0, (size - eye) * inv, (0 - eye) * inv)
    t_best, axis = t_face.min(dim=-1)
    positive = torch.gather(dirs, -1, axis[..., None])[..., 0] > 0
    room_label = torch.full_like(axis, WALL)
    room_label = torch.where((axis == 2) & ~positive, torch.full_like(axis, FLOOR), room_label)
    room_label = torch.where((axis == 2) & positive, torch.full_like(axis, CEILING), room_label)
    normal = -torch.nn.functional.one_hot(axis, 3).float() * torch.where(positive, 1.0, -1.0)[..., None]
    part_index = torch.full_like(axis, -1)
    if scene.parts:
        batched = torch.device(device).type == "cuda" if batched is None else batched
        cam_from_world = np.linalg.inv(pose)
        rects = [_screen_rect(part_corners(p) @ cam_from_world[:3, :3].T + cam_from_world[:3, 3], k)
                 for p in scene.parts]
        step = _cast_parts_batched if batched else _cast_parts_one_by_one
        step(scene, rects, dirs, eye, t_best, part_index, normal)
    labels = torch.tensor([p.label for p in scene.parts] + [0], device=device)
    instances = torch.tensor([p.instance for p in scene.parts] + [0], device=device)
    is_part = part_index >= 0
    label = torch.where(is_part, labels[part_index], room_label)
    instance = torch.where(is_part, instances[part_index], 0)
    points = eye + dirs * t_best[..., None]
    return t_best, label, instance, part_index, points, normal


def _part_tables(scene: Scene, eye: torch.Tensor):
    dev = eye.device
    cos = torch.tensor([math.cos(p.yaw) for p in scene.parts], dtype=torch.float32, device=dev)
    sin = torch.tensor([math.sin(p.yaw) for p in scene.parts], dtype=torch.float32, device=dev)
    center = torch.tensor(np.array([p.center for p in scene.parts]), dtype=torch.float32, device=dev)
    half = torch.tensor(np.array([p.half for p in scene.parts]), dtype=torch.float32, device=dev)
    return cos, sin, _to_part(eye - center, cos, sin), half


def _cast_parts_one_by_one(scene, rects, dirs, eye, t_best, part_index, normal) -> None:
    cos, sin, origin, half = _part_tables(scene, eye)
    for index, rect in enumerate(rects):
        if rect is None:
            continue
        v0, v1, u0, u1 = rect
        d_local = _to_part(dirs[v0:v1, u0:u1], cos[index], sin[index])
        t_near, t_far, near_axis = _slab(d_local, origin[index], half[index])
        window = t_best[v0:v1, u0:u1]
        hit = (t_near <= t_far) & (t_near > 1e-4) & (t_near < window)
        t_best[v0:v1, u0:u1] = torch.where(hit, t_near, window)
        part_index[v0:v1, u0:u1] = torch.where(hit, index, part_index[v0:v1, u0:u1])
        n_world = _entry_normal(d_local, near_axis, cos[index], sin[index])
        normal[v0:v1, u0:u1] = torch.where(hit[..., None], n_world, normal[v0:v1, u0:u1])


def _cast_parts_batched(scene, rects, dirs, eye, t_best, part_index, normal) -> None:
    """Every (part, pixel of its screen rectangle) pair at once, reduced per pixel; ties go to the room, then
    to the first part, as one part after another would."""
    dev = dirs.device
    cos, sin, origin, half = _part_tables(scene, eye)
    kept = [(i, r) for i, r in enumerate(rects) if r is not None]
    if not kept:
        return
    ids = torch.tensor([i for i, _ in kept], device=dev)
    box = torch.tensor([r for _, r in kept], device=dev)                       # v0 v1 u0 u1
    height, width = box[:, 1] - box[:, 0], box[:, 3] - box[:, 2]
    counts = height * width
    which = torch.repeat_interleave(torch.arange(len(kept), device=dev), counts)
    local = torch.arange(len(which), device=dev) - (torch.cumsum(counts, 0) - counts)[which]
    v = box[which, 0] + local // width[which]
    u = box[which, 2] + local % width[which]
    part = ids[which]
    c, s = cos[part], sin[part]
    d_local = _to_part(dirs[v, u], c, s)
    t_near, t_far, near_axis = _slab(d_local, origin[part], half[part])
    pixel = v * dirs.shape[1] + u
    room_t = t_best.reshape(-1)
    hit = (t_near <= t_far) & (t_near > 1e-4) & (t_near < room_t[pixel])
    best = room_t.scatter_reduce(0, pixel[hit], t_near[hit], reduce="amin")
    wins = hit & (t_near == best[pixel])
    n_parts = len(scene.parts)
    first = torch.full_like(room_t, n_parts, dtype=torch.long).scatter_reduce(0, pixel[wins], part[wins], reduce="amin")
    chosen = wins & (part == first[pixel])
    t_best.view(-1)[:] = best
    part_index.view(-1)[pixel[chosen]] = part[chosen]
    normal.view(-1, 3)[pixel[chosen]] = _entry_normal(d_local[chosen], near_axis[chosen], c[chosen], s[chosen])


def _texture(kind: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    a, b = p[..., 0] + p[..., 1], p[..., 2]
    stripes = 0.82 + 0.18 * (torch.sin(a * 25.0) > 0).float()
    checker = 0.75 + 0.25 * ((torch.floor(p[..., 0] / 0.3) + torch.floor(p[..., 1] / 0.3) +
                              torch.floor(b / 0.3)) % 2)
    wood = 0.85 + 0.15 * torch.sin(a * 40.0 + 3.0 * torch.sin(b * 7.0 + p[..., 0] * 3.0))
    plain = torch.ones_like(a)
    return torch.stack([plain, stripes, checker, wood], -1).gather(-1, kind[..., None])[..., 0]


def shade(scene: Scene, pose: np.ndarray, k: Intrinsics, rng: np.random.Generator, device="cpu",
          noise: bool = True) -> RenderedFrame:
    depth, label, instance, part_index, points, normal = cast(scene, pose, k, device)
    n_parts = len(scene.parts)
    part_colors = torch.tensor(np.array([p.color for p in scene.parts] or np.zeros((0, 3))),
                               dtype=torch.float32, device=device).reshape(n_parts, 3)
    part_tex = torch.tensor([p.texture for p in scene.parts], dtype=torch.long, device=device)
    stuff_colors = torch.zeros(16, 3, device=device)
    stuff_tex = torch.zeros(16, dtype=torch.long, device=device)
    for lab, col in scene.stuff_colors.items():
        stuff_colors[lab] = torch.tensor(col, dtype=torch.float32)
        stuff_tex[lab] = scene.stuff_textures[lab]
    is_part = part_index >= 0
    safe = part_index.clamp(min=0)
    albedo = torch.where(is_part[..., None], part_colors[safe] if n_parts else stuff_colors[label],
                         stuff_colors[label])
    tex = torch.where(is_part, part_tex[safe] if n_parts else stuff_tex[label], stuff_tex[label])
    albedo = albedo * _texture(tex, points)[..., None]
    albedo = _paint_openings(scene, albedo, label, points)
    lights = torch.tensor(scene.lights, dtype=torch.float32, device=device)
    to_light = lights[:, None, None, :] - points[None]
    dist2 = (to_light ** 2).sum(-1)
    lambert = ((to_light * normal[None]).sum(-1) / dist2.sqrt()).clamp(min=0) / (1.0 + 0.08 * dist2)
    ambient = float(rng.uniform(0.3, 0.45))
    exposure = float(rng.uniform(0.85, 1.15))
    light = ambient + 1.1 * lambert.sum(0) / len(scene.lights) ** 0.5
    rgb = (albedo * light[..., None] * exposure).clamp(0, 1)
    if noise:
        sigma = float(rng.uniform(0.0, 0.02))
        gen = torch.Generator(device="cpu").manual_seed(int(rng.integers(2**31)))
        rgb = (rgb + sigma * torch.randn(rgb.shape, generator=gen).to(device)).clamp(0, 1)
    return RenderedFrame((rgb * 255 + 0.5).to(torch.uint8), depth.float(), label, instance)


def _paint_openings(scene: Scene, albedo: torch.Tensor, label: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Doors and windows are painted rectangles on the walls (still wall in the labels)."""
    size = scene.size
    for op in scene.openings:
        on_wall = {0: (p[..., 1] - size[1]).abs() < 1e-3, 1: (p[..., 0] - size[0]).abs() < 1e-3,
                   2: p[..., 1].abs() < 1e-3, 3: p[..., 0].abs() < 1e-3}[op.wall]
        along = p[..., 0] if op.wall in (0, 2) else p[..., 1]
        inside = on_wall & (label == WALL) & ((along - op.along).abs() < op.width / 2) & \
            (p[..., 2] > op.bottom) & (p[..., 2] < op.bottom + op.height)
        color = torch.tensor(op.color, dtype=torch.float32, device=albedo.device)
        albedo = torch.where(inside[..., None], color, albedo)
    return albedo
