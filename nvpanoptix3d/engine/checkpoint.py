"""Reading model weights from our Lightning checkpoints or safetensors files."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import SpecError


def load_state_dict(path: str | Path, key: str = "checkpoint") -> dict:
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"{key}: {path} not found; pass a .ckpt from a train job or a .safetensors file")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(p))
    else:
        blob = torch.load(p, map_location="cpu", weights_only=False)
        state = blob.get("state_dict", blob)
    return {k[len("model."):] if k.startswith("model.") else k: v for k, v in state.items()}


def checkpoint_config(path: str | Path) -> dict | None:
    """The model section a checkpoint was trained with (stored beside safetensors, inside .ckpt)."""
    p = Path(path)
    if p.suffix == ".safetensors":
        from safetensors import safe_open
        with safe_open(str(p), "pt") as f:
            meta = f.metadata() or {}
        return json.loads(meta["model_config"]) if "model_config" in meta else None
    blob = torch.load(p, map_location="cpu", weights_only=False)
    return blob.get("hyper_parameters", {}).get("model_config")


def save_safetensors(state: dict, path: str | Path, model_config: dict) -> None:
    from safetensors.torch import save_file
    state = {k: v.contiguous() for k, v in state.items()}
    save_file(state, str(path), metadata={"model_config": json.dumps(model_config)})
