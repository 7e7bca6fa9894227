"""3D-FRONT frames as NVPanoptix3D reads them (also what `nvpanoptix3d synth` writes).

<base_dir>/<scene_id>/rgb_<id>.png, depth_<id>.exr, segmap_<id>.mapped.npz (H x W x 2),
segmentation_<id>.mapped.npz (256^3 x 2), listed by <json_path> rows {scene_id, image_id, height, width}.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .. import fileio
from ..config import DatasetConfig, SpecError, SplitConfig
from ..layouts import FRONT3D, MATTERPORT
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

    def __len__(self) -> int:
        return len(self.rows)

    def _path(self, row: dict, kind: str) -> Path:
        return self.layout.path(self.base_dir, row["scene_id"], row["image_id"], kind)

    def __getitem__(self, index: int) -> FrameSample:
        row = self.rows[index]
        rgb = fileio.load_rgb(self._path(row, "rgb"))
        factor = self.cfg.downsample_factor
        if rgb.shape[1] != self.width * factor or rgb.shape[0] != self.height * factor:
            raise SpecError(f"dataset.downsample_factor: {self._path(row, 'rgb')} is {rgb.shape[1]}x"
                            f"{rgb.shape[0]}, not target_size x {factor}; use downsample_factor=2 for Matterport3D, "
                            "1 for Front3D / synthetic datasets")
        image = torch.from_numpy(rgb[::factor, ::factor].copy()).permute(2, 0, 1).float() / 255.0
        if self.train and self.cfg.augment:
            image = _colour_jitter(image)
        sample = FrameSample(f"{row['scene_id']}/{row['image_id']}", image)
        depth_path = self._path(row, "depth")
        if depth_path.is_file():
            depth = self.layout.read_depth(depth_path)[::factor, ::factor]
            depth = np.where((depth >= self.cfg.depth_min) & (depth <= self.cfg.depth_max), depth, 0.0)
            sample.depth = torch.from_numpy(depth.astype(np.float32))
        seg_path = self._path(row, "segmap")
        if seg_path.is_file():
            seg = fileio.load_npz(seg_path).astype(np.int64)[::factor, ::factor]
            sample.semantic2d, sample.instance2d = torch.from_numpy(seg[..., 0].copy()), torch.from_numpy(seg[..., 1].copy())
        vol_path = self._path(row, "segmentation")
        if self.cfg.enable_3d and vol_path.is_file():
            vol = torch.from_numpy(fileio.load_npz(vol_path).astype(np.int64))
            sample.occupied, sample.semantic3d, sample.instance3d = sparse_truth(vol[..., 0], vol[..., 1])
        return sample


def _colour_jitter(image: torch.Tensor) -> torch.Tensor:
    gain = 1.0 + 0.2 * (torch.rand(3, 1, 1) - 0.5)
    bias = 0.05 * (torch.rand(1, 1, 1) - 0.5)
    return (image * gain + bias).clamp(0, 1)


class MatterportDataset(Front3DDataset):
    """Matterport3D frames in NVPanoptix3D's layout (640 x 480 images read with downsample factor 2)."""
    layout = MATTERPORT
