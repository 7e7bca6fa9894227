"""Reading model weights from our Lightning checkpoints or safetensors files, and writing the shipped ones.

Shipped weights may store their large matrices as int8 with one fp32 scale per slice along the first dimension
(symmetric, absmax / 127): half the size of fp16, which is what lets a larger backbone ship under the 50 MB the
issue allows. Readers get float tensors back; the scales sit beside their tensors under `<name>` + SCALE_SUFFIX.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import SpecError

SCALE_SUFFIX = ".int8_scale"
INT8_MIN_NUMEL = 4096       # smaller tensors (biases, norms, small heads) stay fp16: nothing to gain, more to lose


def load_state_dict(path: str | Path, key: str = "checkpoint") -> dict:
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"{key}: {path} not found; pass a .ckpt from a train job or a .safetensors file")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = dequantize_int8(load_file(str(p)))
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


def quantize_int8(state: dict, min_numel: int = INT8_MIN_NUMEL) -> dict:
    """Float tensors of at least min_numel elements and 2+ dimensions -> int8 plus a per-slice scale (the rest as
    given). Each element is off by at most half its slice's scale."""
    out = {}
    for name, value in state.items():
        if not (value.is_floating_point() and value.ndim >= 2 and value.numel() >= min_numel):
            out[name] = value
            continue
        rows = value.float().flatten(1)
        scale = rows.abs().amax(1).clamp(min=1e-12) / 127
        out[name] = torch.round(rows / scale[:, None]).to(torch.int8).view(value.shape)
        out[name + SCALE_SUFFIX] = scale
    return out


def dequantize_int8(state: dict) -> dict:
    """The inverse of quantize_int8 (fp32 where a scale was stored); a state without scales comes back as is."""
    out = {k: v for k, v in state.items() if not k.endswith(SCALE_SUFFIX)}
    for name, scale in state.items():
        if name.endswith(SCALE_SUFFIX):
            weight = name[: -len(SCALE_SUFFIX)]
            q = out[weight]
            out[weight] = q.float() * scale.view(-1, *[1] * (q.ndim - 1))
    return out
