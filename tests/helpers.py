"""What several test files share: paths, the tiny model, and spec files over the example data."""
from __future__ import annotations

import socket
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "front3d_tiny"
SKILL = REPO / "skills" / "tao-train-nvpanoptix3d"

# the smallest model that exercises every part (CPU, seconds per step)
TINY_OVERRIDES = [
    "model.backbone_type=resnet_tiny", "model.sem_seg_head.hidden_dim=32",
    "model.mask_former.num_object_queries=12", "model.mask_former.dec_layers=2",
    "model.mask_former.hidden_dim=32", "model.mask_former.nheads=4", "model.frustum3d.feature_dim=8",
    "model.frustum3d.max_voxels=8000",
]
TINY_TRAIN = ["train.num_gpus=0", "train.precision=fp32", "train.num_epochs=1", "dataset.train.num_workers=0",
              "dataset.val.num_workers=0", "dataset.test.num_workers=0", "dataset.train.batch_size=2"]


def data_overrides(root: Path = EXAMPLE) -> list[str]:
    """The data keys of a spec over a data set root in the 3D-FRONT layout."""
    meta, data = root / "meta", root / "data"
    return [f"dataset.label_map={meta / 'colormap.json'}", f"dataset.frustum_mask_path={meta / 'frustum_mask.npz'}",
            *(f"dataset.{s}.json_path={meta / (s + '.json')}" for s in ("train", "val", "test")),
            *(f"dataset.{s}.base_dir={data}" for s in ("train", "val", "test"))]


def spec_file(tmp_path: Path, extra=(), root: Path = EXAMPLE) -> Path:
    """A spec of the tiny model over `root`, with `extra` dotted overrides, written to tmp_path/spec.yaml."""
    from nvpanoptix3d.cli import apply_overrides
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(apply_overrides({}, [*data_overrides(root), *TINY_OVERRIDES, *TINY_TRAIN,
                                                        *extra])))
    return path


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
