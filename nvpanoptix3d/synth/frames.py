"""Several frames of (scene, camera) as flat tables, so rendering and voxelisation run a batch of frames in a
few kernel launches: the parts of every frame are concatenated, each with the index of its frame.

The tables are built in NumPy and copied to the device once per field (a GPU spends most of a small frame's
time in launches and host-to-device copies, not in arithmetic).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from ..labels import WALL
from .scene import Scene

CORNER_SIGNS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)


def corners(center: np.ndarray, half: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """World corners of oriented boxes: P x 8 x 3."""
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    local = CORNER_SIGNS[None] * half[:, None]
    x = c * local[..., 0] - s * local[..., 1]
    y = s * local[..., 0] + c * local[..., 1]
    return np.stack([x, y, local[..., 2]], -1) + center[:, None]


def rotate(rot: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """rot @ v for broadcastable stacks (..., 3, 3) and (..., 3), written elementwise so every frame gets the
    same bits whatever the batch it is in (a batched matmul may block the sums differently)."""
    return v[..., 0:1] * rot[..., :, 0] + v[..., 1:2] * rot[..., :, 1] + v[..., 2:3] * rot[..., :, 2]


@dataclass
class Shot:
    """Per-frame random draws of the photograph (drawn from the frame's generator, in this order)."""
    ambient: float
    exposure: float
    noise_sigma: float
    noise_seed: int

    @classmethod
    def draw(cls, rng: np.random.Generator, noise: bool = True) -> "Shot":
        ambient, exposure = float(rng.uniform(0.3, 0.45)), float(rng.uniform(0.85, 1.15))
        if not noise:
            return cls(ambient, exposure, 0.0, 0)
        return cls(ambient, exposure, float(rng.uniform(0.0, 0.02)), int(rng.integers(2**31)))


@dataclass
class FrameBatch:
    """B frames; part tables are P long (all frames' parts), `part_frame` says whose."""
    scenes: list[Scene]
    poses: np.ndarray          # B x 4 x 4 camera-to-world (float64, host)
    part_frame_np: np.ndarray  # P (host)
    corners_world: np.ndarray  # P x 8 x 3 (host)
    part_is_wall: np.ndarray   # P bool (host): corner blocks of L-shaped rooms
    rot: torch.Tensor          # B x 3 x 3 camera-to-world rotation
    eye: torch.Tensor          # B x 3
    size: torch.Tensor         # B x 3 room extent
    part_frame: torch.Tensor   # P
    center: torch.Tensor       # P x 3
    half: torch.Tensor         # P x 3
    cos: torch.Tensor          # P
    sin: torch.Tensor          # P
    label: torch.Tensor        # P
    instance: torch.Tensor     # P
    texture: torch.Tensor      # P
    color: torch.Tensor        # P x 3
    stuff_color: torch.Tensor  # B x 16 x 3 (by label)
    stuff_texture: torch.Tensor  # B x 16
    lights: torch.Tensor       # B x L x 3 (padded)
    light_valid: torch.Tensor  # B x L
    openings: torch.Tensor     # B x O x 9: wall, along, bottom, width, height, valid, rgb (padded)

    @property
    def count(self) -> int:
        return len(self.scenes)

    @property
    def device(self) -> torch.device:
        return self.eye.device

    @classmethod
    def build(cls, scenes: list[Scene], poses: list[np.ndarray], device="cpu") -> "FrameBatch":
        b = len(scenes)
        parts = [p for s in scenes for p in s.parts]
        part_frame = np.array([i for i, s in enumerate(scenes) for _ in s.parts], dtype=np.int64)
        center = np.array([p.center for p in parts], dtype=np.float64).reshape(-1, 3)
        half = np.array([p.half for p in parts], dtype=np.float64).reshape(-1, 3)
        yaw = np.array([p.yaw for p in parts], dtype=np.float64)
        poses_np = np.stack(poses).astype(np.float64)
        stuff_color, stuff_texture = np.zeros((b, 16, 3)), np.zeros((b, 16), dtype=np.int64)
        for i, s in enumerate(scenes):
            for lab, col in s.stuff_colors.items():
                stuff_color[i, lab], stuff_texture[i, lab] = col, s.stuff_textures[lab]
        n_lights = max(len(s.lights) for s in scenes)
        lights, light_valid = np.zeros((b, n_lights, 3)), np.zeros((b, n_lights), dtype=bool)
        n_open = max(1, max(len(s.openings) for s in scenes))
        openings = np.zeros((b, n_open, 9))
        for i, s in enumerate(scenes):
            lights[i, :len(s.lights)], light_valid[i, :len(s.lights)] = s.lights, True
            for j, op in enumerate(s.openings):
                openings[i, j] = [op.wall, op.along, op.bottom, op.width, op.height, 1.0, *op.color]
        f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device)  # noqa: E731
        i64 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(device)    # noqa: E731
        return cls(scenes, poses_np, part_frame, corners(center, half, yaw),
                   np.array([p.label for p in parts], dtype=np.int64) == WALL,
                   f32(poses_np[:, :3, :3]), f32(poses_np[:, :3, 3]), f32(np.stack([s.size for s in scenes])),
                   i64(part_frame), f32(center), f32(half), f32(np.cos(yaw)), f32(np.sin(yaw)),
                   i64([p.label for p in parts]), i64([p.instance for p in parts]),
                   i64([p.texture for p in parts]), f32(np.array([p.color for p in parts]).reshape(-1, 3)),
                   f32(stuff_color), i64(stuff_texture), f32(lights),
                   torch.from_numpy(light_valid).to(device), f32(openings))

    @cached_property
    def corners_camera(self) -> np.ndarray:
        """Part corners in the camera frame of their own frame: P x 8 x 3 (host, float64); rendering and
        voxelisation both read them."""
        cam_from_world = np.linalg.inv(self.poses)[self.part_frame_np]          # P x 4 x 4
        return np.einsum("pij,pkj->pki", cam_from_world[:, :3, :3], self.corners_world) + \
            cam_from_world[:, None, :3, 3]


def yaw_rotation(cos: torch.Tensor, sin: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """World vectors into a part's frame (rotation by -yaw about z); cos / sin broadcast against v[..., 0]."""
    return torch.stack([cos * v[..., 0] + sin * v[..., 1], -sin * v[..., 0] + cos * v[..., 1], v[..., 2]], -1)

