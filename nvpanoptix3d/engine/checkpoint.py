"""Reading model weights from our Lightning checkpoints or safetensors files, and writing the shipped ones.

No file runs code here: .ckpt / .pt files are unpickled with torch's weights-only loader (tensors, numbers,
strings and containers), so a checkpoint from a shared store or a URL cannot carry a payload. A file that needs
more is refused with one line naming it.

Shipped weights may store their large matrices as int8 with one fp32 scale per slice along the first dimension
(symmetric, absmax / 127): half the size of fp16, which is what lets a larger backbone ship under the 50 MB the
issue allows. Readers get float tensors back; the scales sit beside their tensors under `<name>` + SCALE_SUFFIX.
"""
from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import torch

from ..config import MOVED_KEYS, SpecError

SCALE_SUFFIX = ".int8_scale"
INT8_MIN_NUMEL = 4096       # smaller tensors (biases, norms, small heads) stay fp16: nothing to gain, more to lose


class TruncatedCheckpoint(SpecError):
    """A checkpoint file cut short or damaged (a kill or a full disk while it was written)."""


def read_checkpoint(path: str | Path, key: str = "checkpoint") -> dict:
    """A .ckpt / .pt file's contents through the weights-only unpickler; anything else is a one-line error."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"{key}: {path} not found; pass a .ckpt from a train job or a .safetensors file")
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else "unpickling refused"
        raise SpecError(f"{key}: {path} holds objects other than tensors and plain values, which could run code "
                        f"when loaded ({reason}); refusing it: re-save its weights as .safetensors") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise TruncatedCheckpoint(f"{key}: {path} is truncated or not a checkpoint ({type(exc).__name__}); use "
                                  "an intact copy") from None
    if not isinstance(blob, dict):
        raise SpecError(f"{key}: {path} holds a {type(blob).__name__}, not a checkpoint dict of tensors")
    return blob


def load_state_dict(path: str | Path, key: str = "checkpoint") -> dict:
    p = Path(path)
    if p.suffix == ".safetensors" and p.is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            state = dequantize_int8(load_file(str(p)))
        except (SafetensorError, OSError) as exc:
            raise SpecError(f"{key}: {path} is truncated or not a safetensors file ({exc}); use an intact "
                            "copy") from None
    else:
        blob = read_checkpoint(p, key)
        state = blob.get("state_dict", blob)
    tensors = {k[len("model."):] if k.startswith("model.") else k: v for k, v in state.items()
               if isinstance(v, torch.Tensor)}
    if not tensors:
        raise SpecError(f"{key}: {path} holds no tensors; pass a .ckpt from a train job or a .safetensors file")
    return tensors


# a checkpoint that fills less than this share of a stage's tensors is another model, not a start for this one
MIN_LOADED_SHARE = 0.5


def require_loaded(loaded: int, expected: int, path: str, key: str) -> None:
    if loaded < MIN_LOADED_SHARE * expected:
        raise SpecError(f"{key}: {path} fills {loaded} of the model's {expected} tensors (under "
                        f"{MIN_LOADED_SHARE:.0%}); it was trained for another model: pass a checkpoint of this one "
                        "or 'none' to start from random weights")


def checkpoint_config(path: str | Path) -> dict | None:
    """The model section a checkpoint was trained with (stored beside safetensors, inside .ckpt)."""
    p = Path(path)
    if p.suffix == ".safetensors":
        from safetensors import safe_open
        with safe_open(str(p), "pt") as f:
            meta = f.metadata() or {}
        return _architecture(json.loads(meta["model_config"]) if "model_config" in meta else None)
    stored = read_checkpoint(p).get("hyper_parameters", {})
    return _architecture(stored.get("model_config") if isinstance(stored, dict) else None)


def _architecture(model: dict | None) -> dict | None:
    """A stored model section less the test-time keys earlier versions kept there (the spec's postprocess wins)."""
    for dotted in MOVED_KEYS if model else ():
        _, section, key = dotted.split(".")
        model.get(section, {}).pop(key, None)
    return model


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
