"""Walk-through sequences for multi-view work, in nerfstudio's layout:

    <out>/<scene_id>/transforms.json   intrinsics + frames[{file_path, transform_matrix (camera-to-world,
                                      OpenGL: x right, y up, z backward), depth_file_path, panoptic_file_path}]
    <out>/<scene_id>/images/frame_NNNN.png, depth/frame_NNNN.png (uint16 millimetres), panoptic/frame_NNNN.npz
    (key data: H x W x 2 semantic, instance; instance ids are the scene's, the same in every frame)
    <out>/<scene_id>/scene_truth.npz   the whole scene's surfaces in world metres: points, semantic, instance
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import fileio
from ..geometry import OPENGL_FLIP, Intrinsics, look_at
from .generate import make_scene, scene_id
from .frames import FrameBatch, Shot
from .render import shade
from .scene import Scene, sample_camera
from .scene_truth import surface_points

STEP_M = 0.12  # camera travel between frames


def walk_through(scene: Scene, rng: np.random.Generator, frames: int) -> list[np.ndarray]:
    """Camera-to-world poses (OpenCV) moving smoothly between free viewpoints, never inside furniture."""
    fps = scene.footprints()

    def free(eye) -> bool:
        inside_room = (eye[:2] > 0.3).all() and (eye[:2] < scene.size[:2] - 0.3).all()
        return inside_room and all(not (f[0] - 0.3 < eye[0] < f[2] + 0.3 and f[1] - 0.3 < eye[1] < f[3] + 0.3)
                                   for f in fps)

    poses: list[np.ndarray] = []
    current = sample_camera(rng, scene)
    while len(poses) < frames:
        goal = sample_camera(rng, scene)
        a, b = current[:3, 3], goal[:3, 3]
        look_a, look_b = a + current[:3, 2], b + goal[:3, 2]
        steps = max(1, int(np.linalg.norm(b - a) / STEP_M))
        for i in range(steps):
            t = i / steps
            eye = (1 - t) * a + t * b
            if not free(eye):
                break  # blocked: head for a new viewpoint from here
            poses.append(look_at(eye, (1 - t) * look_a + t * look_b))
            if len(poses) == frames:
                break
        current = poses[-1] if poses else goal
    return poses


def write_multiview(out: str | Path, scenes: int, frames: int, seed: int = 0) -> Path:
    out = Path(out)
    k = Intrinsics.front3d()
    for index in range(scenes):
        scene = make_scene(seed, index)
        rng = np.random.default_rng([seed, index, 10_000])
        folder = out / scene_id(seed, index)
        records = []
        for f, pose in enumerate(walk_through(scene, rng, frames)):
            frame = shade(FrameBatch.build([scene], [pose]), k, [Shot.draw(rng)])[0]
            name = f"frame_{f:04d}"
            fileio.save_png(folder / "images" / f"{name}.png", frame.rgb.numpy())
            depth_mm = np.clip(np.round(frame.depth.numpy() * 1000), 0, 65535).astype(np.uint16)
            fileio.save_png(folder / "depth" / f"{name}.png", depth_mm)
            panoptic = np.stack([frame.semantic.numpy(), frame.instance.numpy()], -1).astype(np.uint16)
            fileio.save_npz(folder / "panoptic" / f"{name}.npz", data=panoptic)
            records.append({"file_path": f"images/{name}.png", "depth_file_path": f"depth/{name}.png",
                            "panoptic_file_path": f"panoptic/{name}.npz",
                            "transform_matrix": (pose @ OPENGL_FLIP).tolist()})
        transforms = {"camera_model": "OPENCV", "fl_x": k.fx, "fl_y": k.fy, "cx": k.cx, "cy": k.cy, "w": k.width,
                      "h": k.height, "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0, "depth_unit_scale_factor": 0.001,
                      "frames": records}
        fileio.write_bytes(folder / "transforms.json", (json.dumps(transforms, indent=1) + "\n").encode())
        points, semantic, instance = surface_points(scene)
        fileio.save_npz(folder / "scene_truth.npz", points=points, semantic=semantic.astype(np.uint8),
                        instance=instance.astype(np.int32))
    return out
