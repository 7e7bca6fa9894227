"""Data sets behind one registry: dataset.name -> a Dataset class."""
from __future__ import annotations

from pathlib import Path

from ..config import DatasetConfig, SpecError
from .front3d import Front3DDataset
from .sample import Batch, FrameSample, collate  # noqa: F401
from .synthetic import SyntheticDataset


class MatterportDataset(Front3DDataset):
    """Matterport3D frames in NVPanoptix3D's layout: the same files at twice the resolution (downsample 2)."""


_REGISTRY = {"front3d": Front3DDataset, "matterport": MatterportDataset}


def get_dataset(cfg: DatasetConfig, split_name: str, train: bool = False):
    if cfg.name == "synthetic":
        return SyntheticDataset(cfg, split_name, train)
    check_frustum_mask(cfg)
    return _REGISTRY[cfg.name](cfg, getattr(cfg, split_name), split_name, train)


def check_frustum_mask(cfg: DatasetConfig) -> None:
    if not cfg.frustum_mask_path or not Path(cfg.frustum_mask_path).is_file():
        raise SpecError(f"dataset.frustum_mask_path: {cfg.frustum_mask_path or '(empty)'} not found; ensure "
                        "meta/frustum_mask.npz is present in the dataset directory")
