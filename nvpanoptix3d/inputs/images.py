"""A folder (or images.tar.gz) of RGB photos of any size, each brought to the model's camera.

The model was trained with one camera: a 60 degree horizontal field of view at 320 x 240. What matters for the
3D stage is the focal length in pixels, not the pixel count: a voxel is lifted along the ray its pixel sees.
So a photo is scaled until its focal length equals the model's, then cropped or padded about its centre to the
model's size. With `inference.horizontal_fov_deg` unknown (0), the photo is taken to have the model's field of
view (phone main cameras have 60-70 degrees), and only its aspect ratio is corrected by the crop or pad.
"""
from __future__ import annotations

import math
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .. import fileio
from ..config import DataError, SpecError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class FittedImage:
    rgb: np.ndarray          # H x W x 3 uint8 at the model's size
    scale: float             # photo pixels -> model pixels
    offset: tuple            # (x, y) of the photo's scaled top-left corner in the model image (negative: cropped)
    original_size: tuple     # (width, height) of the photo


def list_images(images_dir: str, unpack_to: Path) -> tuple[list[Path], list[str]]:
    """The images of a folder or a tar archive, sorted; and the names of the other files, skipped."""
    src = Path(images_dir)
    if not images_dir or not src.exists():
        raise SpecError(f"inference.images_dir: {images_dir or '(empty)'} not found; give a folder of RGB images "
                        "or an images.tar.gz")
    if src.is_file():
        if not tarfile.is_tarfile(src):
            raise SpecError(f"inference.images_dir: {images_dir} is a file but not a tar archive")
        unpack_to.mkdir(parents=True, exist_ok=True)
        with tarfile.open(src) as tar:
            tar.extractall(unpack_to, filter="data")
        src = unpack_to
    files = sorted(p for p in src.rglob("*") if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise SpecError(f"inference.images_dir: no .png / .jpg images in {images_dir}")
    return images, [str(p.relative_to(src)) for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]


def read_photo(path: Path) -> np.ndarray:
    try:
        return fileio.load_rgb(path)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is this file's problem
        reason = (str(exc).strip().splitlines() or [""])[0][:120]
        raise DataError(f"{path}: unreadable image ({type(exc).__name__}: {reason}); re-export it or remove "
                        "it") from None


def fit_to_model(rgb: np.ndarray, model_size: tuple[int, int], model_focal: float,
                 horizontal_fov_deg: float = 0.0, stride: int = 1) -> FittedImage:
    """Scale the photo to the model's focal length, then crop or pad (grey) about the centre to model_size
    (width, height). A photo of exactly the model's size times the data layout's stride (Matterport: 2) is
    subsampled as training read it."""
    height, width = rgb.shape[:2]
    out_w, out_h = model_size
    if horizontal_fov_deg <= 0 and (width, height) == (out_w * stride, out_h * stride):
        return FittedImage(np.ascontiguousarray(rgb[::stride, ::stride]), 1 / stride, (0, 0), (width, height))
    if horizontal_fov_deg > 0:
        focal = width / 2 / math.tan(math.radians(horizontal_fov_deg) / 2)
        scale = model_focal / focal
    else:
        scale = out_w / width
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    resized = rgb if (new_w, new_h) == (width, height) else \
        np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.BICUBIC if scale > 1 else Image.LANCZOS))
    canvas = np.full((out_h, out_w, 3), 128, np.uint8)
    x0, y0 = (out_w - new_w) // 2, (out_h - new_h) // 2
    sx, sy = max(0, -x0), max(0, -y0)                     # where the photo is cropped
    dx, dy = max(0, x0), max(0, y0)                       # where it lands on the canvas
    w, h = min(new_w - sx, out_w - dx), min(new_h - sy, out_h - dy)
    canvas[dy:dy + h, dx:dx + w] = resized[sy:sy + h, sx:sx + w]
    return FittedImage(canvas, scale, (x0, y0), (width, height))
