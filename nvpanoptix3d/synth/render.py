"""Exact ray casting of box scenes in batched PyTorch (same code on CPU and CUDA), several frames at once.

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
from .frames import FrameBatch, Shot, rotate, yaw_rotation


@dataclass
class RenderedFrame:
    rgb: torch.Tensor        # H x W x 3 uint8
    depth: torch.Tensor      # H x W float32 metres
    semantic: torch.Tensor   # H x W int64
    instance: torch.Tensor   # H x W int64


@dataclass
class Hits:
    """Nearest hit per pixel of B frames (all B x H x W [x 3]); part -1 is the room."""
    depth: torch.Tensor
    label: torch.Tensor
    instance: torch.Tensor
    part: torch.Tensor
    points: torch.Tensor
    normal: torch.Tensor


def screen_rects(corners_cam: np.ndarray, k: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Pixel bounds (v0, v1, u0, u1) of boxes (P x 8 x 3 camera-frame corners), the whole image for a box that
    reaches behind the camera; and which boxes can be seen at all."""
    z = corners_cam[..., 2]
    behind, crossing = (z <= 0.05).all(-1), (z <= 0.05).any(-1)
    zs = np.where(z > 0.05, z, 1.0)
    u = corners_cam[..., 0] / zs * k.fx + k.cx
    v = corners_cam[..., 1] / zs * k.fy + k.cy
    u0 = np.maximum(0, np.floor(u.min(-1)).astype(np.int64) - 1)
    u1 = np.minimum(k.width, np.ceil(u.max(-1)).astype(np.int64) + 2)
    v0 = np.maximum(0, np.floor(v.min(-1)).astype(np.int64) - 1)
    v1 = np.minimum(k.height, np.ceil(v.max(-1)).astype(np.int64) + 2)
    rects = np.stack([v0, v1, u0, u1], -1)
    rects[crossing & ~behind] = (0, k.height, 0, k.width)
    seen = ~behind & (rects[:, 0] < rects[:, 1]) & (rects[:, 2] < rects[:, 3])
    return rects, seen


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


def cast(frames: FrameBatch, k: Intrinsics, batched: bool | None = None) -> Hits:
    """Nearest hit per pixel of every frame. Parts go one by one on the CPU and all at once (all frames too) on
    a GPU (few kernel launches); both give the same result."""
    dev = frames.device
    rays = k.pixel_rays(dev)                                               # H x W x 3, camera z = 1
    dirs = rotate(frames.rot[:, None, None], rays[None])                  # B x H x W x 3
    eye = frames.eye[:, None, None]
    size = frames.size[:, None, None]
    # the room: the ray leaves the box [0, size] through exactly one face
    inv = 1.0 / torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t_face = torch.where(dirs > 0, (size - eye) * inv, (0 - eye) * inv)
    t_best, axis = t_face.min(dim=-1)
    positive = torch.gather(dirs, -1, axis[..., None])[..., 0] > 0
    room_label = torch.where(axis == 2, torch.where(positive, CEILING, FLOOR), WALL)
    normal = -torch.nn.functional.one_hot(axis, 3).float() * torch.where(positive, 1.0, -1.0)[..., None]
    part_index = torch.full_like(axis, -1)
    label, instance = room_label, torch.zeros_like(room_label)
    if len(frames.part_frame_np):
        batched = dev.type == "cuda" if batched is None else batched
        rects, seen = screen_rects(frames.corners_camera, k)
        step = _cast_parts_batched if batched else _cast_parts_one_by_one
        step(frames, rects, seen, dirs, t_best, part_index, normal)
        is_part, safe = part_index >= 0, part_index.clamp(min=0)
        label = torch.where(is_part, frames.label[safe], room_label)
        instance = torch.where(is_part, frames.instance[safe], 0)
    points = eye + dirs * t_best[..., None]
    return Hits(t_best, label, instance, part_index, points, normal)


def _part_origins(frames: FrameBatch) -> torch.Tensor:
    """Each part's camera centre in the part's frame (P x 3)."""
    return yaw_rotation(frames.cos, frames.sin, frames.eye[frames.part_frame] - frames.center)


def _cast_parts_one_by_one(frames, rects, seen, dirs, t_best, part_index, normal) -> None:
    origin = _part_origins(frames)
    for index in np.flatnonzero(seen).tolist():
        b = int(frames.part_frame_np[index])
        v0, v1, u0, u1 = rects[index].tolist()
        cos, sin = frames.cos[index], frames.sin[index]
        d_local = yaw_rotation(cos, sin, dirs[b, v0:v1, u0:u1])
        t_near, t_far, near_axis = _slab(d_local, origin[index], frames.half[index])
        window = t_best[b, v0:v1, u0:u1]
        hit = (t_near <= t_far) & (t_near > 1e-4) & (t_near < window)
        t_best[b, v0:v1, u0:u1] = torch.where(hit, t_near, window)
        part_index[b, v0:v1, u0:u1] = torch.where(hit, index, part_index[b, v0:v1, u0:u1])
        normal[b, v0:v1, u0:u1] = torch.where(hit[..., None], _entry_normal(d_local, near_axis, cos, sin),
                                              normal[b, v0:v1, u0:u1])


def _cast_parts_batched(frames, rects, seen, dirs, t_best, part_index, normal) -> None:
    """Every (part, pixel of its screen rectangle) pair of every frame at once, reduced per pixel; ties go to the
    room, then to the first part, as one part after another would."""
    dev = dirs.device
    kept = np.flatnonzero(seen)
    if not len(kept):
        return
    _, h, w = t_best.shape
    box = torch.from_numpy(rects[kept]).to(dev)                              # v0 v1 u0 u1
    height, width = box[:, 1] - box[:, 0], box[:, 3] - box[:, 2]
    counts = height * width
    which = torch.repeat_interleave(torch.arange(len(kept), device=dev), counts)
    local = torch.arange(len(which), device=dev) - (torch.cumsum(counts, 0) - counts)[which]
    v = box[which, 0] + local // width[which]
    u = box[which, 2] + local % width[which]
    part = torch.from_numpy(kept).to(dev)[which]
    frame = frames.part_frame[part]
    c, s = frames.cos[part], frames.sin[part]
    d_local = yaw_rotation(c, s, dirs[frame, v, u])
    t_near, t_far, near_axis = _slab(d_local, _part_origins(frames)[part], frames.half[part])
    pixel = (frame * h + v) * w + u
    room_t = t_best.reshape(-1)
    hit = (t_near <= t_far) & (t_near > 1e-4) & (t_near < room_t[pixel])
    best = room_t.scatter_reduce(0, pixel[hit], t_near[hit], reduce="amin")
    wins = hit & (t_near == best[pixel])
    n_parts = len(frames.part_frame_np)
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


def hash_noise(seeds: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Zero-mean, unit-variance noise (B x shape) from integer hashing of (seed, element): exact integer
    arithmetic, so CPU and GPU give the same values, and no generator state to carry between frames. The sum of
    four uniform bytes (Irwin-Hall) is close enough to a Gaussian for sensor noise."""
    mask = 0xFFFFFFFF
    n = math.prod(shape)
    x = (torch.arange(n, device=seeds.device)[None] * 0x9E3779B1 + seeds[:, None] * 0x2C1B3C6D) & mask
    for mult in (0x7FEB352D, 0x297A2D39):  # constants below 2^31: products stay inside int64
        x = ((x ^ (x >> 16)) * mult) & mask
    x = x ^ (x >> 15)
    total = (x & 255) + ((x >> 8) & 255) + ((x >> 16) & 255) + ((x >> 24) & 255)
    return ((total.float() / 255.0 - 2.0) * math.sqrt(3.0)).reshape(-1, *shape)


def shade(frames: FrameBatch, k: Intrinsics, shots: list[Shot], noise: bool = True) -> list[RenderedFrame]:
    """Lambertian shading with ambient light, textures, painted openings and optional sensor noise."""
    hits = cast(frames, k)
    dev = frames.device
    b = frames.count
    is_part = hits.part >= 0
    safe = hits.part.clamp(min=0)
    rows = torch.arange(b, device=dev)[:, None, None]
    stuff_albedo, stuff_tex = frames.stuff_color[rows, hits.label], frames.stuff_texture[rows, hits.label]
    if len(frames.part_frame_np):
        albedo = torch.where(is_part[..., None], frames.color[safe], stuff_albedo)
        tex = torch.where(is_part, frames.texture[safe], stuff_tex)
    else:
        albedo, tex = stuff_albedo, stuff_tex
    albedo = albedo * _texture(tex, hits.points)[..., None]
    albedo = _paint_openings(frames, albedo, hits.label, hits.points)
    to_light = frames.lights[:, :, None, None, :] - hits.points[:, None]         # B x L x H x W x 3
    dist2 = (to_light ** 2).sum(-1)
    lambert = ((to_light * hits.normal[:, None]).sum(-1) / dist2.sqrt()).clamp(min=0) / (1.0 + 0.08 * dist2)
    valid = frames.light_valid.float()
    per_frame = torch.tensor([[s.ambient, s.exposure, s.noise_sigma] for s in shots], dtype=torch.float32,
                             device=dev)[:, :, None, None]
    light = per_frame[:, 0] + 1.1 * (lambert * valid[..., None, None]).sum(1) / valid.sum(1).sqrt()[:, None, None]
    rgb = (albedo * light[..., None] * per_frame[:, 1, ..., None]).clamp(0, 1)
    if noise:
        seeds = torch.tensor([s.noise_seed for s in shots], dtype=torch.int64, device=dev)
        rgb = (rgb + per_frame[:, 2, ..., None] * hash_noise(seeds, tuple(rgb.shape[1:]))).clamp(0, 1)
    rgb = (rgb * 255 + 0.5).to(torch.uint8)
    return [RenderedFrame(rgb[i], hits.depth[i].float(), hits.label[i], hits.instance[i]) for i in range(b)]


def _paint_openings(frames: FrameBatch, albedo: torch.Tensor, label: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Doors and windows are painted rectangles on the walls (still wall in the labels). Wall 0 is y = size_y,
    1 is x = size_x, 2 is y = 0, 3 is x = 0."""
    size = frames.size[:, None, None]
    for j in range(frames.openings.shape[1]):
        op = frames.openings[:, j, :, None, None]                               # B x 9 x 1 x 1
        wall = op[:, 0]
        along_y = (wall == 0) | (wall == 2)                                     # the walls along x
        coord = torch.where(along_y, p[..., 1], p[..., 0])
        plane = torch.where(wall == 0, size[..., 1], torch.where(wall == 1, size[..., 0], 0.0))
        along = torch.where(along_y, p[..., 0], p[..., 1])
        inside = ((coord - plane).abs() < 1e-3) & (label == WALL) & ((along - op[:, 1]).abs() < op[:, 3] / 2) & \
            (p[..., 2] > op[:, 2]) & (p[..., 2] < op[:, 2] + op[:, 4]) & (op[:, 5] > 0)
        albedo = torch.where(inside[..., None], op[:, 6:9].permute(0, 2, 3, 1), albedo)
    return albedo
