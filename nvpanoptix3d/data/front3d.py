"""3D-FRONT frames as NVPanoptix3D reads them (also what `nvpanoptix3d synth` writes).

<base_dir>/<scene_id>/rgb_<id>.png, depth_<id>.exr, segmap_<id>.mapped.npz (H x W x 2),
segmentation_<id>.mapped.npz (256^3 x 2), listed by <json_path> rows {scene_id, image_id, height, width}.

Train and evaluate read truth, so every frame is checked as it is read: each file present and readable, sizes
as the layout says, depth with valid pixels, labels in the label set. A bad frame stops the action with one line
naming its file: a metric over silently missing truth would be another metric.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .. import fileio
from ..config import DataError, DatasetConfig, SpecError, SplitConfig
from ..labels import IGNORE, NUM_CLASSES
from ..file_naming import FRONT3D, MATTERPORT
from .sample import FrameSample, sparse_truth


class Front3DDataset(Dataset):
    layout = FRONT3D

    def __init__(self, cfg: DatasetConfig, split: SplitConfig, split_name: str, train: bool = False):
        self.cfg, self.train = cfg, train
        json_path = Path(split.json_path)
        if not split.json_path or not json_path.is_file():
            raise SpecError(f"dataset.{split_name}.json_path: {split.json_path or '(empty)'} not found; point it at "
                            f"meta/{split_name}.json of the dataset")
        self.base_dir = Path(split.base_dir)
        if not self.base_dir.is_dir():
            raise SpecError(f"dataset.{split_name}.base_dir: {split.base_dir or '(empty)'} is not a folder; point "
                            "it at the dataset's data/ folder")
        self.rows = json.loads(json_path.read_text())
        self.width, self.height = cfg.target_size
        self.volume_dims = tuple(fileio.load_npz(cfg.frustum_mask_path, "mask").shape) if cfg.enable_3d else None

    def __len__(self) -> int:
        return len(self.rows)

    def _path(self, row: dict, kind: str) -> Path:
        return self.layout.path(self.base_dir, row["scene_id"], row["image_id"], kind)

    def __getitem__(self, index: int) -> FrameSample:
        row = self.rows[index]
        rgb = self._read(row, "rgb", fileio.load_rgb)
        factor = self.cfg.downsample
        size = (self.height * factor, self.width * factor)
        if rgb.shape[:2] != size:
            raise SpecError(f"dataset.downsample_factor: {self._path(row, 'rgb')} is {rgb.shape[1]}x"
                            f"{rgb.shape[0]}, not target_size x {factor}; use downsample_factor=2 for Matterport3D, "
                            "1 for Front3D / synthetic datasets")
        image = torch.from_numpy(rgb[::factor, ::factor].copy()).permute(2, 0, 1).float() / 255.0
        if self.train and self.cfg.augment:
            image = _colour_jitter(image)
        sample = FrameSample(f"{row['scene_id']}/{row['image_id']}", image)
        depth = self._read(row, "depth", self.layout.read_depth)
        self._check(row, "depth", depth.shape == size, f"is {_shape(depth)}, not {_shape(size)} as its image")
        depth = depth[::factor, ::factor]
        valid = np.isfinite(depth) & (depth >= self.cfg.depth_min) & (depth <= self.cfg.depth_max)
        self._check(row, "depth", valid.any(), f"has no valid pixel (all NaN, zero or outside dataset.depth_min "
                                               f"{self.cfg.depth_min} - depth_max {self.cfg.depth_max} m)")
        sample.depth = torch.from_numpy(np.where(valid, depth, 0.0).astype(np.float32))
        seg = self._read(row, "segmap", fileio.load_npz)
        self._check(row, "segmap", seg.shape == (*size, 2), f"is {_shape(seg)}, not {_shape((*size, 2))} "
                                                            "(semantic, instance per pixel)")
        self._check_labels(row, "segmap", seg[..., 0])
        seg = seg.astype(np.int64)[::factor, ::factor]
        sample.semantic2d = torch.from_numpy(seg[..., 0].copy())
        sample.instance2d = torch.from_numpy(seg[..., 1].copy())
        if self.cfg.enable_3d:
            vol = self._read(row, "segmentation", fileio.load_npz)
            self._check(row, "segmentation", vol.shape == (*self.volume_dims, 2),
                        f"is {_shape(vol)}, not {_shape((*self.volume_dims, 2))} as meta/frustum_mask.npz")
            self._check_labels(row, "segmentation", vol[..., 0])
            vol = torch.from_numpy(vol.astype(np.int64))
            sample.occupied, sample.semantic3d, sample.instance3d = sparse_truth(vol[..., 0], vol[..., 1])
        return sample

    def _read(self, row: dict, kind: str, reader):
        path = self._path(row, kind)
        if not path.is_file():
            raise DataError(f"{path}: missing ({kind} of frame {row['scene_id']}/{row['image_id']}); restore it "
                            "or remove the frame from the split's json")
        try:
            return reader(path)
        except Exception as exc:  # noqa: BLE001 - any reader's failure is this file's problem
            reason = (str(exc).strip().splitlines() or [""])[0][:120]
            raise DataError(f"{path}: unreadable {kind} ({type(exc).__name__}: {reason}); re-export the "
                            "file") from None

    def _check(self, row: dict, kind: str, ok: bool, problem: str) -> None:
        if not ok:
            raise DataError(f"{self._path(row, kind)}: {kind} of frame {row['scene_id']}/{row['image_id']} "
                            f"{problem}")

    def _check_labels(self, row: dict, kind: str, semantic: np.ndarray) -> None:
        if not np.issubdtype(semantic.dtype, np.integer):
            self._check(row, kind, False, f"holds {semantic.dtype} labels, not integers")
        bad = (semantic >= NUM_CLASSES) & (semantic != IGNORE) | (semantic < 0)
        if bad.any():
            self._check(row, kind, False, f"has class {int(semantic[bad].flat[0])}, outside the label set (0-"
                                          f"{NUM_CLASSES - 1}, {IGNORE} ignored)")


def _shape(shape) -> str:
    return " x ".join(str(n) for n in getattr(shape, "shape", shape))


def _colour_jitter(image: torch.Tensor) -> torch.Tensor:
    gain = 1.0 + 0.2 * (torch.rand(3, 1, 1) - 0.5)
    bias = 0.05 * (torch.rand(1, 1, 1) - 0.5)
    return (image * gain + bias).clamp(0, 1)


class MatterportDataset(Front3DDataset):
    """Matterport3D frames in NVPanoptix3D's layout (640 x 480 images read with downsample factor 2)."""
    layout = MATTERPORT
