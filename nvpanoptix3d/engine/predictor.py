"""A trained model ready for evaluate / inference / export: weights plus the model config they need."""
from __future__ import annotations

import dataclasses

import torch

from ..config import ExperimentConfig, ModelConfig, from_dict
from .checkpoint import checkpoint_config, load_state_dict
from .module import PanopticModule


def load_for_action(cfg: ExperimentConfig, checkpoint: str, key: str, max_voxels: int | None = None,
                    log=print) -> PanopticModule:
    """The checkpoint's own model section wins over the spec's, so a checkpoint always loads."""
    if checkpoint:
        state = load_state_dict(checkpoint, key)
        stored = checkpoint_config(checkpoint)
        if stored and stored != dataclasses.asdict(cfg.model):
            cfg = dataclasses.replace(cfg, model=_architecture_from(stored, cfg.model))
            log(f"[model] {key}: using the architecture stored in {checkpoint}")
    else:
        state = None
        log(f"[model] {key} is empty: running randomly initialised weights")
    module = PanopticModule(cfg, max_voxels)
    if state is not None:
        missing, unexpected = module.model.load_state_dict(state, strict=False)
        if missing:
            raise ValueError(f"{key}: {checkpoint} lacks {len(missing)} tensors (e.g. {missing[0]}); it was not "
                             "trained with this model")
    module.eval()
    return module


# model keys the spec keeps even when the checkpoint brings its own architecture (postprocess is the spec's anyway)
RUNTIME_KEYS = ("mode", "frustum3d.max_voxels")


# architecture keys added after checkpoints were first stored: the value that a stored model section without the key
# was trained with (the spec's default would build parts the checkpoint has no tensors for)
ADDED_KEYS = {"depth_head.refine_layers": 0, "depth_head.guide_channels": 0}


def _architecture_from(stored: dict, spec_model: ModelConfig) -> ModelConfig:
    merged = dataclasses.asdict(spec_model)
    for dotted, before in ADDED_KEYS.items():
        section, leaf = dotted.split(".")
        if leaf not in stored.get(section, {}):
            merged[section][leaf] = before
    for section, value in stored.items():
        if isinstance(value, dict):
            merged[section].update(value)
        else:
            merged[section] = value
    spec = dataclasses.asdict(spec_model)
    for dotted in RUNTIME_KEYS:
        *parents, leaf = dotted.split(".")
        src, dst = spec, merged
        for part in parents:
            src, dst = src[part], dst[part]
        dst[leaf] = src[leaf]
    return from_dict(ModelConfig, merged, "model")


def device_for(cfg: ExperimentConfig) -> torch.device:
    """Evaluate, inference and export take the first GPU when there is one."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
