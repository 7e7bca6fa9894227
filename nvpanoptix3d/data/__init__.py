"""Data sets behind one registry: dataset.name -> a Dataset class."""
from __future__ import annotations

from pathlib import Path

from ..config import DatasetConfig, SpecError
from ..labels import default_categories, read_colormap
from .front3d import Front3DDataset, MatterportDataset
from .sample import Batch, FrameSample, collate  # noqa: F401
from .synthetic import SyntheticDataset


_REGISTRY = {"front3d": Front3DDataset, "matterport": MatterportDataset}


def get_dataset(cfg: DatasetConfig, split_name: str, train: bool = False):
    if cfg.name == "synthetic":
        return SyntheticDataset(cfg, split_name, train)
    check_frustum_mask(cfg)
    check_label_map(cfg)
    return _REGISTRY[cfg.name](cfg, getattr(cfg, split_name), split_name, train)


def check_label_map(cfg: DatasetConfig) -> None:
    """The engine uses the 3D-FRONT label set; a colormap that disagrees would silently mislabel everything."""
    try:
        categories = read_colormap(cfg.label_map)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise SpecError(f"dataset.label_map: {exc}") from None
    ours = {c.id: (c.name, c.isthing) for c in default_categories()}
    theirs = {c.id: (c.name, c.isthing) for c in categories}
    if theirs != ours:
        raise SpecError(f"dataset.label_map: {cfg.label_map} differs from the 3D-FRONT label set (ids 0-12: void, "
                        "9 things, wall, floor, ceiling); remap the data set's labels to it")


def check_frustum_mask(cfg: DatasetConfig) -> None:
    if not cfg.frustum_mask_path or not Path(cfg.frustum_mask_path).is_file():
        raise SpecError(f"dataset.frustum_mask_path: {cfg.frustum_mask_path or '(empty)'} not found; ensure "
                        "meta/frustum_mask.npz is present in the dataset directory")
