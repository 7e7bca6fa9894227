"""Photos of any size brought to the model's camera (nvpanoptix3d.inputs.images)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from nvpanoptix3d.geometry import FRONT3D_FOCAL
from nvpanoptix3d.inputs.images import fit_to_model, list_images

MODEL = (320, 240)


def _photo(width: int, height: int) -> np.ndarray:
    rgb = np.zeros((height, width, 3), np.uint8)
    r = max(2, width // 80)
    rgb[height // 2 - r:height // 2 + r, width // 2 - r:width // 2 + r] = 255   # a mark on the optical axis
    return rgb


def _mark(rgb: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(rgb[..., 0] > 100)
    return xs.mean(), ys.mean()


@pytest.mark.parametrize("size, fov, scale", [
    ((1280, 960), 60.0, 0.25),                                      # the model's field of view: a plain resize
    ((640, 480), 90.0, FRONT3D_FOCAL / 320),                        # wider: scaled to the model's focal, cropped
    ((1920, 1080), 0.0, 320 / 1920),                                # unknown: the model's view, 16:9 padded
])
def test_a_photo_takes_the_models_focal_length_and_keeps_its_optical_axis(size, fov, scale):
    fitted = fit_to_model(_photo(*size), MODEL, FRONT3D_FOCAL, fov)
    assert fitted.rgb.shape == (240, 320, 3) and fitted.scale == pytest.approx(scale, rel=1e-3)
    x, y = _mark(fitted.rgb)
    assert abs(x - 159.5) <= 1.0 and abs(y - 119.5) <= 1.0
    if fov:  # the focal length in model pixels is the model's
        focal = size[0] / 2 / math.tan(math.radians(fov) / 2)
        assert focal * fitted.scale == pytest.approx(FRONT3D_FOCAL, rel=1e-2)


def test_a_photo_at_the_layouts_size_is_read_as_training_read_it():
    rgb = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    fitted = fit_to_model(rgb, MODEL, FRONT3D_FOCAL, 0.0, stride=2)
    assert np.array_equal(fitted.rgb, rgb[::2, ::2])


def test_a_folder_lists_its_images_and_names_the_rest(tmp_path):
    from PIL import Image
    Image.fromarray(_photo(64, 48)).save(tmp_path / "b.jpg")
    Image.fromarray(_photo(64, 48)).save(tmp_path / "a.PNG")
    (tmp_path / "notes.txt").write_text("x")
    images, skipped = list_images(str(tmp_path), tmp_path / "unpacked")
    assert [p.name for p in images] == ["a.PNG", "b.jpg"] and skipped == ["notes.txt"]
