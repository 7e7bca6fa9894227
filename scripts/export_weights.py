"""Turn a training checkpoint into the shipped weights: fp16 safetensors with the model config as metadata.

    python scripts/export_weights.py CHECKPOINT.ckpt OUT.safetensors [--stage3d-from WEIGHTS]

--stage3d-from keeps the 3D stage of other weights when the checkpoint comes from 2D-only training
(`dataset.enable_3d=false`), so a depth-only run still ships a whole model.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nvpanoptix3d.engine.checkpoint import checkpoint_config, load_state_dict, save_safetensors  # noqa: E402

STAGE3D = "stage3d."


def main(src: str, dst: str, stage3d_from: str | None = None) -> None:
    state = load_state_dict(src)
    if stage3d_from:
        if any(k.startswith(STAGE3D) for k in state):
            sys.exit(f"error: {src} has its own 3D stage; --stage3d-from is for 2D-only checkpoints")
        stage3d = {k: v for k, v in load_state_dict(stage3d_from).items() if k.startswith(STAGE3D)}
        if not stage3d:
            sys.exit(f"error: --stage3d-from {stage3d_from} holds no {STAGE3D}* tensors")
        state.update(stage3d)
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    save_safetensors(state, dst, checkpoint_config(src))
    digest = hashlib.sha256(Path(dst).read_bytes()).hexdigest()
    print(f"wrote {dst}: {sum(v.numel() for v in state.values()) / 1e6:.2f} M parameters, "
          f"{Path(dst).stat().st_size / 2**20:.1f} MiB, sha256 {digest}")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("--stage3d-from", help="weights whose 3D stage to keep (2D-only checkpoints)")
    a = p.parse_args()
    main(a.checkpoint, a.out, a.stage3d_from)
