"""File naming of the data sets NVPanoptix3D reads, shared by the loaders and the synthetic writer.

3D-FRONT: <base>/<scene>/rgb_<id>.png, depth_<id>.exr, segmap_<id>.mapped.npz, geometry_<id>.npz, ...
Matterport3D: image ids are "<name>_<angle>_<rot>" and files <name>_i<angle>_<rot>.jpg (640 x 480, read with
downsample factor 2), <name>_d<angle>_<rot>.png (uint16, metres x 4000), <name>_segmap<angle>_<rot>.mapped.npz,
<name>_geometry<angle>_<rot>.npz, <name>_segmentation<angle>_<rot>.mapped.npz, <name>_weighting<angle>_<rot>.npz.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import fileio

MATTERPORT_DEPTH_SCALE = 4000.0


@dataclass(frozen=True)
class FileNaming:
    name: str
    rgb: str
    depth: str
    segmap: str
    geometry: str
    segmentation: str
    weighting: str
    downsample: int   # stored image size / network input size
    iso: float        # occupancy threshold of the distance field, in voxels

    def path(self, base: Path, scene_id: str, image_id: str, kind: str) -> Path:
        fields = {"id": image_id}
        if self.name == "matterport":
            fields["name"], fields["angle"], fields["rot"] = image_id.split("_")
        return Path(base) / scene_id / getattr(self, kind).format(**fields)

    def read_depth(self, path: Path) -> np.ndarray:
        if path.suffix == ".exr":
            return fileio.load_exr(path)
        return fileio.load_uint16(path).astype(np.float32) / MATTERPORT_DEPTH_SCALE

    def write_depth(self, path: Path, depth: np.ndarray) -> None:
        if path.suffix == ".exr":
            fileio.save_exr(path, depth)
        else:
            fileio.save_png(path, np.clip(np.round(depth * MATTERPORT_DEPTH_SCALE), 0, 65535).astype(np.uint16))


FRONT3D = FileNaming("front3d", "rgb_{id}.png", "depth_{id}.exr", "segmap_{id}.mapped.npz", "geometry_{id}.npz",
                     "segmentation_{id}.mapped.npz", "weighting_{id}.npz", 1, 1.0)
MATTERPORT = FileNaming("matterport", "{name}_i{angle}_{rot}.jpg", "{name}_d{angle}_{rot}.png",
                        "{name}_segmap{angle}_{rot}.mapped.npz", "{name}_geometry{angle}_{rot}.npz",
                        "{name}_segmentation{angle}_{rot}.mapped.npz", "{name}_weighting{angle}_{rot}.npz", 2, 2.0)
NAMINGS = {"front3d": FRONT3D, "matterport": MATTERPORT}
