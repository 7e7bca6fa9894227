"""Turn a training checkpoint into the shipped weights: safetensors with the model config as metadata, the large
matrices int8 with a scale per slice and the other tensors fp16 (half the size of all-fp16, metrics within a
thousandth; --fp16 keeps every tensor fp16).

    python scripts/export_weights.py CHECKPOINT.ckpt OUT.safetensors [--stage3d-from WEIGHTS] [--fp16]
        [--average OTHER ...]

--stage3d-from keeps the 3D stage of other weights when the checkpoint comes from 2D-only training
(`dataset.enable_3d=false`), so a depth-only run still ships a whole model. --average writes the mean of the
checkpoint and OTHER checkpoints of the same architecture (a "model soup": fine-tunes of one start, averaged
tensor by tensor, often beat each of them at no inference cost).
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nvpanoptix3d.engine.checkpoint import (SCALE_SUFFIX, checkpoint_config, load_state_dict,  # noqa: E402
                                           quantize_int8, save_safetensors)

STAGE3D = "stage3d."


def averaged(state: dict, others: list[str]) -> dict:
    """The tensor-wise mean of state and the other checkpoints' states (same names and shapes, else exit)."""
    states = [state] + [load_state_dict(path, "--average") for path in others]
    for path, other in zip(others, states[1:]):
        if other.keys() != state.keys() or any(other[k].shape != v.shape for k, v in state.items()):
            sys.exit(f"error: --average {path}: its tensors differ from the checkpoint's (another architecture)")
    return {k: (torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else v)
            for k, v in state.items()}


def main(src: str, dst: str, stage3d_from: str | None = None, fp16: bool = False,
         average: list[str] | None = None) -> None:
    state = load_state_dict(src)
    if average:
        state = averaged(state, average)
    if stage3d_from:
        if any(k.startswith(STAGE3D) for k in state):
            sys.exit(f"error: {src} has its own 3D stage; --stage3d-from is for 2D-only checkpoints")
        stage3d = {k: v for k, v in load_state_dict(stage3d_from).items() if k.startswith(STAGE3D)}
        if not stage3d:
            sys.exit(f"error: --stage3d-from {stage3d_from} holds no {STAGE3D}* tensors")
        state.update(stage3d)
    parameters = sum(v.numel() for v in state.values())
    if not fp16:
        state = quantize_int8(state)
    # the scales stay fp32: a slice's step must not round
    state = {k: (v.half() if v.is_floating_point() and not k.endswith(SCALE_SUFFIX) else v) for k, v in state.items()}
    save_safetensors(state, dst, checkpoint_config(src))
    digest = hashlib.sha256(Path(dst).read_bytes()).hexdigest()
    print(f"wrote {dst}: {parameters / 1e6:.2f} M parameters ({'fp16' if fp16 else 'int8 matrices'}), "
          f"{Path(dst).stat().st_size / 2**20:.1f} MiB, sha256 {digest}")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("--stage3d-from", help="weights whose 3D stage to keep (2D-only checkpoints)")
    p.add_argument("--fp16", action="store_true", help="every tensor fp16 (no int8 matrices)")
    p.add_argument("--average", nargs="+", metavar="OTHER", help="checkpoints to average with it (a model soup)")
    a = p.parse_args()
    main(a.checkpoint, a.out, a.stage3d_from, a.fp16, a.average)
