"""Posed photo folders: one reader per format behind one registry, all converted once at load to the engine's
conventions (OpenCV camera: x right, y down, z forward; camera-to-world 4x4; metres).

    nerfstudio   transforms.json (instant-ngp too): OpenGL camera-to-world, shared or per-frame fl_x fl_y cx cy
                 w h, optional k1 k2 p1 p2, per-frame depth_file_path with depth_unit_scale_factor (0.001)
    colmap       sparse/0 or the root: cameras.txt + images.txt (world-to-camera qw qx qy qz tx ty tz),
                 PINHOLE / SIMPLE_PINHOLE / OPENCV cameras; images under images/
    rgbd         color/N.jpg, depth/N.png (millimetres), pose/N.txt (camera-to-world), intrinsic/
                 intrinsic_color.txt (+ intrinsic_depth.txt when the depth has its own size)

Bad input is one line naming the file and frame.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..config import DataError
from ..geometry import OPENGL_FLIP, Intrinsics
from .images import IMAGE_SUFFIXES


@dataclass(frozen=True)
class Camera(Intrinsics):
    """A posed frame's pinhole intrinsics with optional OpenCV radial-tangential distortion."""
    distortion: tuple = (0.0, 0.0, 0.0, 0.0)   # k1 k2 p1 p2

    @property
    def distorted(self) -> bool:
        return any(abs(d) > 0 for d in self.distortion)


@dataclass
class PosedFrame:
    name: str
    image: Path
    camera_to_world: np.ndarray            # 4 x 4, OpenCV camera axes, metres
    camera: Camera
    depth: Path | None = None
    depth_scale: float = 0.001             # raw depth value -> metres
    depth_camera: Camera | None = None     # when the depth image has its own size; None: the colour camera


@dataclass
class PosedFolder:
    root: Path
    format: str
    frames: list[PosedFrame] = field(default_factory=list)

    @property
    def has_depth(self) -> bool:
        return any(f.depth is not None for f in self.frames)


# ------------------------------------------------------------------ checks shared by the readers

def check_rigid(matrix, where: str) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape == (3, 4):
        m = np.vstack([m, [0, 0, 0, 1]])
    if m.shape != (4, 4) or not np.isfinite(m).all():
        raise DataError(f"{where}: the pose is not a finite 4x4 (or 3x4) matrix")
    r = m[:3, :3]
    if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-6) or not np.allclose(r.T @ r, np.eye(3), atol=1e-3) or \
            np.linalg.det(r) < 0.99:
        raise DataError(f"{where}: the pose is not a rigid transform (its rotation is not orthonormal with "
                        "determinant 1); export camera-to-world poses without scale or shear")
    return m


def _finish(folder: PosedFolder) -> PosedFolder:
    if not folder.frames:
        raise DataError(f"{folder.root}: no frames in this {folder.format} folder")
    seen: dict[str, int] = {}
    for i, frame in enumerate(folder.frames):
        if frame.name in seen:
            raise DataError(f"{folder.root}: frames {seen[frame.name]} and {i} are both named {frame.name!r}; "
                            "frame names must be unique")
        seen[frame.name] = i
        if not frame.image.is_file():
            raise DataError(f"{frame.image}: missing (image of frame {frame.name})")
        if frame.depth is not None and not frame.depth.is_file():
            raise DataError(f"{frame.depth}: missing (depth of frame {frame.name})")
    return folder


def _camera(data: dict, where: str, base: Camera | None = None) -> Camera:
    values = {}
    for key, name in (("fl_x", "fx"), ("fl_y", "fy"), ("cx", "cx"), ("cy", "cy"), ("w", "width"), ("h", "height")):
        if key in data:
            values[name] = data[key]
        elif base is not None:
            values[name] = getattr(base, name)
    if "fy" not in values and "fx" in values:
        values["fy"] = values["fx"]
    if "fx" not in values and "camera_angle_x" in data and "width" in values:  # instant-ngp
        values["fx"] = values["fy"] = values["width"] / 2 / math.tan(data["camera_angle_x"] / 2)
    missing = [n for n in ("fx", "cx", "cy", "width", "height") if n not in values]
    if missing:
        raise DataError(f"{where}: intrinsics lack {', '.join(missing)} (give fl_x fl_y cx cy w h)")
    dist = tuple(float(data.get(k, getattr(base, "distortion", (0,) * 4)[i] if base else 0.0))
                 for i, k in enumerate(("k1", "k2", "p1", "p2")))
    return Camera(float(values["fx"]), float(values["fy"]), float(values["cx"]), float(values["cy"]),
                  int(values["width"]), int(values["height"]), dist)


# ------------------------------------------------------------------ readers

def read_nerfstudio(root: Path) -> PosedFolder:
    path = root / "transforms.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not readable JSON ({type(exc).__name__})") from None
    shared = _camera(data, str(path)) if "fl_x" in data or "camera_angle_x" in data else None
    scale = float(data.get("depth_unit_scale_factor", 0.001))
    folder = PosedFolder(root, "nerfstudio")
    for i, item in enumerate(data.get("frames", [])):
        where = f"{path} frame {i}"
        if "file_path" not in item or "transform_matrix" not in item:
            raise DataError(f"{where}: needs file_path and transform_matrix")
        image = _with_suffix(root / item["file_path"])
        camera = _camera(item, where, shared) if any(k in item for k in ("fl_x", "w")) or shared is None else shared
        pose = check_rigid(item["transform_matrix"], where) @ OPENGL_FLIP
        depth = root / item["depth_file_path"] if item.get("depth_file_path") else None
        folder.frames.append(PosedFrame(Path(item["file_path"]).stem, image, pose, camera, depth, scale))
    return _finish(folder)


def _with_suffix(path: Path) -> Path:
    """instant-ngp's file_path may omit the image suffix."""
    if path.suffix.lower() in IMAGE_SUFFIXES or path.is_file():
        return path
    for suffix in IMAGE_SUFFIXES:
        if path.with_suffix(suffix).is_file():
            return path.with_suffix(suffix)
    return path


def _colmap_dir(root: Path) -> Path:
    for candidate in (root / "sparse" / "0", root / "sparse", root):
        if (candidate / "cameras.txt").is_file() and (candidate / "images.txt").is_file():
            return candidate
    raise DataError(f"{root}: no cameras.txt / images.txt (COLMAP text model); export with "
                    "`colmap model_converter --output_type TXT`")


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def read_colmap(root: Path) -> PosedFolder:
    model = _colmap_dir(root)
    cameras = {}
    for line in _lines(model / "cameras.txt"):
        parts = line.split()
        cam_id, kind, w, h, params = parts[0], parts[1], int(parts[2]), int(parts[3]), [float(x) for x in parts[4:]]
        if kind == "SIMPLE_PINHOLE":
            f, cx, cy = params[:3]
            cameras[cam_id] = Camera(f, f, cx, cy, w, h)
        elif kind == "PINHOLE":
            cameras[cam_id] = Camera(*params[:4], w, h)
        elif kind == "OPENCV":
            cameras[cam_id] = Camera(*params[:4], w, h, tuple(params[4:8]))
        else:
            raise DataError(f"{model / 'cameras.txt'}: camera {cam_id} is {kind}; use PINHOLE, SIMPLE_PINHOLE or "
                            "OPENCV (colmap image_undistorter gives PINHOLE)")
    images_dir = root / "images" if (root / "images").is_dir() else root
    folder = PosedFolder(root, "colmap")
    lines = [line.strip() for line in (model / "images.txt").read_text().splitlines() if not line.startswith("#")]
    rows, i = [], 0
    while i < len(lines):  # each image is two lines, its pose then its 2D points (which may be empty)
        if len(lines[i].split()) >= 10:
            rows.append(lines[i])
            i += 2
        else:
            i += 1
    for row in rows:
        parts = row.split()
        where = f"{model / 'images.txt'} image {parts[0]}"
        qw, qx, qy, qz, tx, ty, tz = (float(x) for x in parts[1:8])
        if parts[8] not in cameras:
            raise DataError(f"{where}: camera {parts[8]} is not in cameras.txt")
        norm = math.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
        if not 0.99 < norm < 1.01:
            raise DataError(f"{where}: the quaternion is not a unit quaternion (norm {norm:.3f})")
        world_to_camera = np.eye(4)
        world_to_camera[:3, :3] = _quaternion_matrix(qw / norm, qx / norm, qy / norm, qz / norm)
        world_to_camera[:3, 3] = (tx, ty, tz)
        name = " ".join(parts[9:])
        folder.frames.append(PosedFrame(Path(name).stem, images_dir / name, np.linalg.inv(world_to_camera),
                                        cameras[parts[8]]))
    return _finish(folder)


def _quaternion_matrix(w: float, x: float, y: float, z: float) -> np.ndarray:
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _intrinsic_file(path: Path, size: tuple[int, int]) -> Camera:
    try:
        k = np.loadtxt(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable 3x3 or 4x4 matrix ({type(exc).__name__})") from None
    if k.shape not in ((3, 3), (4, 4)):
        raise DataError(f"{path}: a {k.shape} matrix; give the 3x3 or 4x4 intrinsic matrix")
    return Camera(float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]), *size)


def read_rgbd(root: Path) -> PosedFolder:
    from PIL import Image
    colors = sorted((p for p in (root / "color").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                    key=lambda p: (len(p.stem), p.stem))
    folder = PosedFolder(root, "rgbd")
    if not colors:
        return _finish(folder)
    with Image.open(colors[0]) as im:
        color_size = im.size
    camera = _intrinsic_file(root / "intrinsic" / "intrinsic_color.txt", color_size)
    depth_camera = None
    for image in colors:
        name = image.stem
        pose_path = root / "pose" / f"{name}.txt"
        if not pose_path.is_file():
            raise DataError(f"{pose_path}: missing (pose of frame {name})")
        try:
            pose = np.loadtxt(pose_path)
        except ValueError:
            raise DataError(f"{pose_path}: not a 4x4 matrix of numbers (pose of frame {name})") from None
        depth = root / "depth" / f"{name}.png"
        depth = depth if depth.is_file() else None
        if depth is not None and depth_camera is None:
            with Image.open(depth) as im:
                depth_size = im.size
            if depth_size != color_size:
                own = root / "intrinsic" / "intrinsic_depth.txt"
                if not own.is_file():
                    raise DataError(f"{depth}: depth is {depth_size[0]}x{depth_size[1]} and colour "
                                    f"{color_size[0]}x{color_size[1]} (frame {name}), and "
                                    "intrinsic/intrinsic_depth.txt is missing; add it")
                depth_camera = _intrinsic_file(own, depth_size)
        folder.frames.append(PosedFrame(name, image, check_rigid(pose, f"{pose_path} (frame {name})"), camera,
                                        depth, 0.001, depth_camera))
    return _finish(folder)


READERS: dict[str, Callable[[Path], PosedFolder]] = {"nerfstudio": read_nerfstudio, "colmap": read_colmap,
                                                     "rgbd": read_rgbd}


def detect_format(root: Path) -> str | None:
    if (root / "transforms.json").is_file():
        return "nerfstudio"
    if (root / "color").is_dir() and (root / "pose").is_dir():
        return "rgbd"
    if any((d / "cameras.txt").is_file() and (d / "images.txt").is_file()
           for d in (root / "sparse" / "0", root / "sparse", root)):
        return "colmap"
    return None


def read_posed_folder(root: str | Path) -> PosedFolder:
    root = Path(root)
    kind = detect_format(root)
    if kind is None:
        raise DataError(f"{root}: not a posed folder (no transforms.json, color/ + pose/, or COLMAP "
                        "cameras.txt + images.txt)")
    return READERS[kind](root)
