"""Turn a training checkpoint into the shipped weights: fp16 safetensors with the model config as metadata.

    python scripts/export_weights.py CHECKPOINT.ckpt OUT.safetensors
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nvpanoptix3d.engine.checkpoint import checkpoint_config, load_state_dict, save_safetensors  # noqa: E402


def main(src: str, dst: str) -> None:
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in load_state_dict(src).items()}
    save_safetensors(state, dst, checkpoint_config(src))
    digest = hashlib.sha256(Path(dst).read_bytes()).hexdigest()
    print(f"wrote {dst}: {sum(v.numel() for v in state.values()) / 1e6:.2f} M parameters, "
          f"{Path(dst).stat().st_size / 2**20:.1f} MiB, sha256 {digest}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
