"""Photos of any size brought to the model's camera (nvpanoptix3d.inputs.images)."""
from __future__ import annotations

import json
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


# ------------------------------------------------------------------ posed folders

def _pose(yaw: float, eye) -> np.ndarray:
    """A camera-to-world pose (OpenCV) looking along yaw in a z-up world, tilted down a little."""
    from nvpanoptix3d.geometry import look_at
    eye = np.asarray(eye, float)
    return look_at(eye, eye + np.array([math.cos(yaw), math.sin(yaw), -0.2]))


def _image(path, size=(64, 48)):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(path)


POSES = [_pose(0.3, (1.0, 2.0, 1.5)), _pose(2.0, (2.5, 1.0, 1.2))]


def _write_nerfstudio(root):
    frames = []
    for i, pose in enumerate(POSES):
        _image(root / "images" / f"f{i}.png")
        frames.append({"file_path": f"images/f{i}.png", "transform_matrix": (pose @ np.diag([1, -1, -1, 1])).tolist()})
    (root / "transforms.json").write_text(json.dumps({"fl_x": 50.0, "fl_y": 50.0, "cx": 31.5, "cy": 23.5, "w": 64,
                                                      "h": 48, "frames": frames}))


def _write_colmap(root):
    from scipy.spatial.transform import Rotation
    lines = []
    for i, pose in enumerate(POSES):
        _image(root / "images" / f"f{i}.png")
        w2c = np.linalg.inv(pose)
        qx, qy, qz, qw = Rotation.from_matrix(w2c[:3, :3]).as_quat()
        lines += [f"{i + 1} {qw} {qx} {qy} {qz} {w2c[0, 3]} {w2c[1, 3]} {w2c[2, 3]} 1 f{i}.png", ""]
    (root / "sparse" / "0").mkdir(parents=True)
    (root / "sparse" / "0" / "cameras.txt").write_text("# a comment\n1 PINHOLE 64 48 50 50 31.5 23.5\n")
    (root / "sparse" / "0" / "images.txt").write_text("\n".join(lines) + "\n")


def _write_rgbd(root):
    for i, pose in enumerate(POSES):
        _image(root / "color" / f"{i}.jpg")
        (root / "pose").mkdir(parents=True, exist_ok=True)
        np.savetxt(root / "pose" / f"{i}.txt", pose)
    (root / "intrinsic").mkdir()
    np.savetxt(root / "intrinsic" / "intrinsic_color.txt", [[50, 0, 31.5, 0], [0, 50, 23.5, 0], [0, 0, 1, 0],
                                                            [0, 0, 0, 1]])


@pytest.mark.parametrize("kind, write", [("nerfstudio", _write_nerfstudio), ("colmap", _write_colmap),
                                         ("rgbd", _write_rgbd)])
def test_a_known_pose_round_trips_through_each_format(tmp_path, kind, write):
    from nvpanoptix3d.inputs.posed import read_posed_folder
    write(tmp_path)
    folder = read_posed_folder(tmp_path)
    assert folder.format == kind and len(folder.frames) == 2
    for frame, pose in zip(folder.frames, POSES):
        assert np.allclose(frame.camera_to_world, pose, atol=1e-9)
        assert (frame.camera.fx, frame.camera.cx, frame.camera.width) == (50.0, 31.5, 64)
    # the camera looks along its +z: the world point 1 m ahead projects onto the principal point
    ahead = folder.frames[0].camera_to_world @ np.array([0, 0, 1.0, 1])
    assert np.allclose(ahead[:3], POSES[0][:3, 3] + POSES[0][:3, 2])


def test_bad_posed_folders_are_one_line_naming_the_file_and_frame(tmp_path):
    from nvpanoptix3d.config import DataError
    from nvpanoptix3d.inputs.posed import read_posed_folder
    _write_rgbd(tmp_path)
    np.savetxt(tmp_path / "pose" / "1.txt", np.diag([2.0, 2.0, 2.0, 1.0]))
    with pytest.raises(DataError, match=r"pose/1.txt \(frame 1\): the pose is not a rigid transform"):
        read_posed_folder(tmp_path)
    np.savetxt(tmp_path / "pose" / "1.txt", POSES[1])
    _image(tmp_path / "depth" / "0.png", (32, 24))
    with pytest.raises(DataError, match=r"depth is 32x24 and colour 64x48 \(frame 0\).*intrinsic_depth.txt"):
        read_posed_folder(tmp_path)
    other = tmp_path / "ns"
    _write_nerfstudio(other)
    data = json.loads((other / "transforms.json").read_text())
    data["frames"][1]["file_path"] = data["frames"][0]["file_path"]
    (other / "transforms.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="frames 0 and 1 are both named 'f0'"):
        read_posed_folder(other)
    (other / "images" / "f0.png").unlink()
    data["frames"] = data["frames"][:1]
    (other / "transforms.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"f0.png: missing \(image of frame f0\)"):
        read_posed_folder(other)
    data["frames"] = []
    (other / "transforms.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="no frames in this nerfstudio folder"):
        read_posed_folder(other)
