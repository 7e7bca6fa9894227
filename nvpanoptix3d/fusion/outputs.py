"""A fused scene on disk: sparse volume (.npz), mesh with per-vertex class and object (.ply), objects JSON and a
top-down picture with the camera path and a 3D scene page (HTML), all in the posed folder's world frame, metres."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .. import fileio
from ..engine.outputs import instance_colors, voxel_faces, write_ply
from ..labels import CEILING, COLORS, NAMES
from ..viewer.page import PageCamera, page_html, scene_data, write_live
from .scene import FusedScene

PIXELS_PER_METRE = 50


MAX_FRUSTA = 200   # cameras drawn on the page: every n-th frame of a long walk-through


def write_scene(out_dir: Path, scene: FusedScene, cameras: list[PageCamera]) -> dict:
    """cameras: the frames' cameras (model intrinsics, world poses), drawn as frusta on the scene page."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"volume": "scene.npz", "mesh": "scene.ply", "objects": "scene_objects.json",
               "top_down": "scene_top_down.png", "page": "scene.html"}
    fileio.save_npz(out_dir / written["volume"], coords=scene.coords.astype(np.int32),
                    origin=np.zeros(3, np.float32), voxel_size=np.float32(scene.voxel_size),
                    occupancy=scene.occupancy.astype(np.float32), semantic=scene.semantic.astype(np.uint8),
                    instance=scene.instance.astype(np.int32))
    corners, faces, owners = voxel_faces(scene.coords)
    palette = np.array(COLORS, np.uint8)
    write_ply(out_dir / written["mesh"], (corners * scene.voxel_size).astype(np.float32), faces,
              palette[scene.semantic[owners]], scene.semantic[owners], scene.instance[owners],
              frame="world frame of the posed folder")
    fileio.write_bytes(out_dir / written["objects"], (json.dumps(scene_objects(scene), indent=1) + "\n").encode())
    fileio.save_png(out_dir / written["top_down"], top_down(scene))
    data = _page_data(scene, cameras)
    fileio.write_bytes(out_dir / written["page"],
                       page_html(f"fused scene: {len(cameras)} frames, {len(scene.objects)} objects", data).encode())
    write_live(out_dir / "live.json", data, version=len(cameras), frames=len(cameras), done=True)
    return written


def write_live_scene(out_dir: Path, scene: FusedScene, cameras: list[PageCamera]) -> None:
    """The scene fused so far, for `nvpanoptix3d view` to follow while the job runs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_live(out_dir / "live.json", _page_data(scene, cameras), version=len(cameras), frames=len(cameras),
               done=False)


def _page_data(scene: FusedScene, cameras: list[PageCamera]) -> dict:
    step = max(1, -(-len(cameras) // MAX_FRUSTA))
    return scene_data(scene.coords, scene.voxel_size, scene.semantic, scene.instance, cameras[::step])


def scene_objects(scene: FusedScene) -> list[dict]:
    out = []
    for obj in scene.objects:
        sel = scene.instance == obj.object_id
        metres = (scene.coords[sel] + 0.5) * scene.voxel_size
        cls = int(np.bincount(scene.semantic[sel]).argmax())
        out.append({"instance_id": obj.object_id, "class_id": cls, "class": NAMES[cls], "voxel_count": int(sel.sum()),
                    "box_m": [metres.min(0).round(4).tolist(), metres.max(0).round(4).tolist()],
                    "centroid_m": metres.mean(0).round(4).tolist(), "frames": sorted(set(obj.frames)),
                    "confidence": round(float(scene.occupancy[sel].mean()), 4)})
    return out


def up_axis(scene: FusedScene) -> int:
    """The world axis the voxels spread least along (a room is wider than it is tall): the picture's depth."""
    if len(scene.coords) == 0:
        return 2
    return int(np.argmin(np.ptp(scene.coords, axis=0)))


def top_down(scene: FusedScene) -> np.ndarray:
    """Each column's highest voxel below the ceiling coloured by class, objects outlined in their colour, the
    camera path in red."""
    up = up_axis(scene)
    below = scene.semantic != CEILING
    scene = FusedScene(scene.coords[below], scene.voxel_size, scene.occupancy[below], scene.semantic[below],
                       scene.instance[below], scene.objects, scene.trajectory)
    plane = [a for a in range(3) if a != up]
    if len(scene.coords) == 0:
        return np.zeros((8, 8, 3), np.uint8)
    xy = scene.coords[:, plane]
    lo = xy.min(0)
    cells = max(1, round(PIXELS_PER_METRE * scene.voxel_size))
    size = (xy.max(0) - lo + 1) * cells
    image = np.full((int(size[1]), int(size[0]), 3), 255, np.uint8)
    order = np.argsort(scene.coords[:, up])                            # later writes (higher voxels) win
    palette = np.array(COLORS, np.uint8)
    px = (xy[order] - lo) * cells
    for dy in range(cells):
        for dx in range(cells):
            image[px[:, 1] + dy, px[:, 0] + dx] = palette[scene.semantic[order]]
    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    for obj_id, colour in zip(np.unique(scene.instance[scene.instance > 0]),
                              instance_colors(np.unique(scene.instance[scene.instance > 0]))):
        cell = (xy[scene.instance == obj_id] - lo) * cells
        draw.rectangle([*cell.min(0).tolist(), *(cell.max(0) + cells).tolist()], outline=tuple(colour.tolist()),
                       width=2)
    if len(scene.trajectory) > 1:
        path = (scene.trajectory[:, plane] / scene.voxel_size - lo) * cells
        draw.line([tuple(p) for p in path.tolist()], fill=(220, 0, 0), width=2)
    return np.asarray(picture)
