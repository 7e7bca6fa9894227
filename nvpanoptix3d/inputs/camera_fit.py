"""A posed frame's colour and depth resampled into the model's camera (focal length and principal point), so
that each model pixel sees the ray it saw in training and the frame's pose still holds.

Colour: resized (Lanczos) to the model's focal length first, then each model pixel is sampled bilinearly along
its ray, through the camera's distortion when it has one; pixels outside the photo are grey. Depth: sampled
nearest along the same rays (no blending across depth edges), 0 where invalid or outside.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from ..geometry import Intrinsics
from .posed import Camera


def _model_rays(model: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    v, u = np.meshgrid(np.arange(model.height, dtype=np.float64), np.arange(model.width, dtype=np.float64),
                       indexing="ij")
    return (u - model.cx) / model.fx, (v - model.cy) / model.fy


def _distort(x: np.ndarray, y: np.ndarray, d: tuple) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's radial-tangential model on normalised coordinates."""
    k1, k2, p1, p2 = d
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 * r2
    return (x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
            y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y)


def _source_pixels(camera: Camera, model: Intrinsics, fx: float, fy: float, cx: float, cy: float):
    x, y = _model_rays(model)
    if camera.distorted:
        x, y = _distort(x, y, camera.distortion)
    return x * fx + cx, y * fy + cy


def fit_rgb(rgb: np.ndarray, camera: Camera, model: Intrinsics) -> np.ndarray:
    """H x W x 3 uint8 of the camera -> model.height x model.width x 3 uint8 in the model's camera."""
    sx, sy = model.fx / camera.fx, model.fy / camera.fy
    width, height = max(1, round(camera.width * sx)), max(1, round(camera.height * sy))
    small = np.asarray(Image.fromarray(rgb).resize((width, height), Image.LANCZOS), dtype=np.float32)
    sx, sy = width / camera.width, height / camera.height          # the scale the rounding gave
    u, v = _source_pixels(camera, model, camera.fx * sx, camera.fy * sy, (camera.cx + 0.5) * sx - 0.5,
                          (camera.cy + 0.5) * sy - 0.5)
    u0, v0 = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    fu, fv = (u - u0)[..., None], (v - v0)[..., None]
    inside = (u0 >= 0) & (v0 >= 0) & (u0 + 1 < width) & (v0 + 1 < height)
    a, b = np.clip(u0, 0, width - 2), np.clip(v0, 0, height - 2)
    out = (small[b, a] * (1 - fu) * (1 - fv) + small[b, a + 1] * fu * (1 - fv) + small[b + 1, a] * (1 - fu) * fv
           + small[b + 1, a + 1] * fu * fv)
    out[~inside] = 128
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def fit_depth(depth: np.ndarray, camera: Camera, model: Intrinsics) -> np.ndarray:
    """H x W metres of the depth camera (0: invalid) -> model-size metres, nearest sample along each ray."""
    u, v = _source_pixels(camera, model, camera.fx, camera.fy, camera.cx, camera.cy)
    a, b = np.round(u).astype(np.int64), np.round(v).astype(np.int64)
    inside = (a >= 0) & (b >= 0) & (a < depth.shape[1]) & (b < depth.shape[0])
    out = np.zeros((model.height, model.width), np.float32)
    out[inside] = depth[b[inside], a[inside]]
    out[~np.isfinite(out)] = 0
    return out
