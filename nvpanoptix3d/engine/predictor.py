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
            cfg = dataclasses.replace(cfg, model=from_dict(ModelConfig, stored, "model"))
            log(f"[model] {key}: using the model configuration stored in {checkpoint}")
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


def device_for(cfg: ExperimentConfig) -> torch.device:
    """Evaluate, inference and export take the first GPU when there is one."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
