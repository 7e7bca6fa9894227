"""A synthetic scene's whole 3D truth in world coordinates: points on every surface (the room's six faces and
each furniture box's), labelled with class and the scene's instance ids, the ids the frames' panoptic maps use."""
from __future__ import annotations

import math

import numpy as np

from ..labels import CEILING, FLOOR, WALL
from .scene import Scene


def _face_grid(u: float, v: float, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres of a u x v rectangle at about `spacing`."""
    nu, nv = max(1, math.ceil(u / spacing)), max(1, math.ceil(v / spacing))
    a, b = np.meshgrid((np.arange(nu) + 0.5) / nu * u, (np.arange(nv) + 0.5) / nv * v, indexing="ij")
    return a.ravel(), b.ravel()


def _box_surface(half: np.ndarray, spacing: float) -> np.ndarray:
    """Points on the six faces of the box [-half, half] (its own frame)."""
    out = []
    for axis in range(3):
        u_axis, v_axis = [a for a in range(3) if a != axis]
        a, b = _face_grid(2 * half[u_axis], 2 * half[v_axis], spacing)
        for side in (-1.0, 1.0):
            p = np.zeros((len(a), 3))
            p[:, axis] = side * half[axis]
            p[:, u_axis], p[:, v_axis] = a - half[u_axis], b - half[v_axis]
            out.append(p)
    return np.concatenate(out)


def surface_points(scene: Scene, spacing: float = 0.015) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points N x 3 float32 world metres, semantic N, instance N) on every surface of the scene."""
    size = np.asarray(scene.size, np.float64)
    room = _box_surface(size / 2, spacing) + size / 2
    label = np.full(len(room), WALL)
    label[np.isclose(room[:, 2], 0.0)] = FLOOR
    label[np.isclose(room[:, 2], size[2])] = CEILING
    points, semantic, instance = [room], [label], [np.zeros(len(room), np.int64)]
    for part in scene.parts:
        local = _box_surface(np.asarray(part.half, np.float64), spacing)
        c, s = math.cos(part.yaw), math.sin(part.yaw)
        world = np.stack([c * local[:, 0] - s * local[:, 1], s * local[:, 0] + c * local[:, 1], local[:, 2]], 1)
        points.append(world + np.asarray(part.center))
        semantic.append(np.full(len(local), part.label))
        instance.append(np.full(len(local), part.instance))
    return (np.concatenate(points).astype(np.float32), np.concatenate(semantic).astype(np.int64),
            np.concatenate(instance).astype(np.int64))
