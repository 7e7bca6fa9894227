"""The scene page: one HTML file that draws a panoptic voxel scene in the browser (three.js, bundled in).

The data travels inline as compact arrays (int32 voxel coordinates, uint8 classes, uint32 objects, in base64),
with the objects' boxes and the cameras. The ceiling is left out (it hides the room from above); only surface
voxels are drawn (a voxel with an empty face neighbour);
scenes above `max_voxels` are drawn at twice the voxel size until they fit. The full volume stays in the .npz
and the .ply beside the page.
"""
from __future__ import annotations

import base64
import html
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import fileio
from ..fusion.scene import pack
from ..geometry import Intrinsics
from ..labels import CEILING, COLORS, NAMES, NUM_CLASSES, is_thing

SCRIPT = Path(__file__).with_name("static") / "scene.js"
_FACES = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])


@dataclass
class PageCamera:
    """A camera drawn as a frustum: camera-to-world (OpenCV axes) and its pinhole."""
    camera_to_world: np.ndarray
    intrinsics: Intrinsics


def surface(coords: np.ndarray) -> np.ndarray:
    """N bool: voxels with at least one of their six face neighbours empty."""
    keys = pack(coords)
    order = np.sort(keys)
    inner = np.ones(len(coords), bool)
    for step in _FACES:
        k = pack(coords + step)
        pos = np.searchsorted(order, k).clip(max=len(order) - 1)
        inner &= order[pos] == k
    return ~inner


def coarsen(coords: np.ndarray, semantic: np.ndarray, instance: np.ndarray):
    """Voxels twice the size: each coarse voxel takes the label of its first fine voxel."""
    coarse = np.floor_divide(coords, 2)
    _, first = np.unique(pack(coarse), return_index=True)
    return coarse[first], semantic[first], instance[first]


def scene_data(coords: np.ndarray, voxel_size: float, semantic: np.ndarray, instance: np.ndarray,
               cameras: list[PageCamera], max_voxels: int = 400_000) -> dict:
    """What the page draws, for integer voxel coordinates (N x 3, centre = (c + 0.5) x voxel_size metres)."""
    coords = np.asarray(coords, np.int64).reshape(-1, 3)
    semantic = np.asarray(semantic, np.int64).reshape(-1)
    instance = np.asarray(instance, np.int64).reshape(-1)
    objects = _objects(coords, voxel_size, semantic, instance)   # boxes from every voxel, not the drawn ones
    open_top = semantic != CEILING                                 # the ceiling would hide the room from above
    coords, semantic, instance = coords[open_top], semantic[open_top], instance[open_top]
    if len(coords):
        keep = surface(coords)
        coords, semantic, instance = coords[keep], semantic[keep], instance[keep]
    while len(coords) > max_voxels:
        coords, semantic, instance = coarsen(coords, semantic, instance)
        voxel_size *= 2
    present = set(np.unique(semantic).tolist())
    up, forward = _view_axes(cameras)
    return {
        "count": int(len(coords)), "voxel_size": float(voxel_size),
        "coords": _b64(coords.astype(np.int32)), "semantic": _b64(semantic.astype(np.uint8)),
        "instance": _b64(instance.astype(np.uint32)),
        "classes": [{"id": i, "name": NAMES[i], "color": list(COLORS[i]), "present": i in present and i != 0}
                    for i in range(NUM_CLASSES)],
        "objects": objects, "up": up, "forward": forward, "frustum_depth": 0.3,
        "cameras": [{"c2w": np.asarray(c.camera_to_world, float).round(5).tolist(), **asdict(c.intrinsics)}
                    for c in cameras],
    }


def write_scene_page(path: Path, coords: np.ndarray, voxel_size: float, semantic: np.ndarray,
                     instance: np.ndarray, cameras: list[PageCamera], title: str,
                     max_voxels: int = 400_000) -> Path:
    """The self-contained page: data and script inline."""
    data = scene_data(coords, voxel_size, semantic, instance, cameras, max_voxels)
    fileio.write_bytes(path, page_html(title, data).encode())
    return path


def write_live(path: Path, data: dict, version: int, frames: int, done: bool) -> None:
    """The scene a running job has fused so far, for the live page to poll (written whole, atomically)."""
    fileio.write_bytes(path, json.dumps({**data, "version": version, "frames": frames, "done": done},
                                        separators=(",", ":")).encode())


def page_html(title: str, data: dict) -> str:
    """data: scene_data(...), or {"live": URL} for a page that polls a live scene."""
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    script = SCRIPT.read_text().replace("</script", "<\\/script")
    return _TEMPLATE.format(title=html.escape(title), data=payload, script=script)


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode()


def _objects(coords, voxel_size, semantic, instance) -> list[dict]:
    out = []
    for obj in np.unique(instance[instance > 0]):
        sel = instance == obj
        cls = int(np.bincount(semantic[sel], minlength=NUM_CLASSES).argmax())
        if not is_thing(cls):
            continue
        c = coords[sel]
        out.append({"id": int(obj), "class_id": cls, "class_name": NAMES[cls], "voxels": int(sel.sum()),
                    "box_min": (c.min(0) * voxel_size).round(4).tolist(),
                    "box_max": ((c.max(0) + 1) * voxel_size).round(4).tolist()})
    return out


def _view_axes(cameras: list[PageCamera]) -> tuple[list, list]:
    """World up (the cameras' mean -y: OpenCV's y points down the image) and the first camera's forward."""
    if not cameras:
        return [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]
    rotations = np.stack([np.asarray(c.camera_to_world, float)[:3, :3] for c in cameras])
    up = -rotations[:, :, 1].mean(0)
    up /= max(np.linalg.norm(up), 1e-9)
    forward = rotations[0][:, 2] - up * (rotations[0][:, 2] @ up)   # level: orbiting about `up` reads naturally
    if np.linalg.norm(forward) < 1e-6:
        forward = rotations[0][:, 0]
    forward /= np.linalg.norm(forward)
    return up.round(6).tolist(), forward.round(6).tolist()


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ margin: 0; display: flex; height: 100vh; font: 14px system-ui, sans-serif; color: #222; }}
#side {{ width: 260px; overflow-y: auto; padding: 10px 12px; border-right: 1px solid #ddd; background: #fff; }}
#view {{ flex: 1; min-width: 0; height: 100%; display: block; }}
h1 {{ font-size: 16px; margin: 4px 0 8px; overflow-wrap: anywhere; }}
h2 {{ font-size: 13px; margin: 14px 0 4px; text-transform: uppercase; color: #666; }}
ul {{ list-style: none; padding: 0; margin: 0; }}
li {{ padding: 2px 4px; }}
#objects li {{ cursor: pointer; border-radius: 3px; }}
#objects li:hover {{ background: #eee; }}
#objects li.selected {{ background: #f0c8f0; font-weight: 600; }}
.swatch {{ display: inline-block; width: 12px; height: 12px; margin-right: 6px; vertical-align: -1px; }}
button {{ margin: 4px 0; }}
.note {{ color: #666; font-size: 12px; }}
</style></head>
<body>
<div id="side">
<h1>{title}</h1>
<div class="note"><span id="summary"></span>. Drag: orbit, right-drag: pan, wheel: zoom.</div>
<button id="mode">colour by object</button>
<h2>Classes</h2><ul id="legend"></ul>
<h2>Objects</h2><ul id="objects"></ul>
</div>
<canvas id="view"></canvas>
<script type="application/json" id="scene-data">{data}</script>
<script>{script}</script>
</body></html>
"""
