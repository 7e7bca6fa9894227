"""Training step of the shipped recipe (both stages, 256^3 grid): seconds per step, images/s, peak GPU memory.

    python bench/train_step.py [--batch 2] [--steps 3] [--precision fp32|bf16]

Forward, losses and backward on synthetic frames generated once (the data loader is not timed); no optimiser
step, so every step sees the same weights. A GPU is used when there is one.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nvpanoptix3d.cli import load_config  # noqa: E402
from nvpanoptix3d.data import collate, get_dataset  # noqa: E402
from nvpanoptix3d.engine.module import PanopticModule  # noqa: E402
from nvpanoptix3d.model.losses import compute_losses, occupancy_grids  # noqa: E402

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    a = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    cfg = load_config("scripts/specs/gpu_synthetic.yaml", ["results_dir=/tmp/bench_train_step",
                                                           f"dataset.synthetic.render_device={device.type}"])
    module = PanopticModule(cfg).to(device).train()
    batch = collate(get_dataset(cfg.dataset, "train", True).__getitems__(list(range(a.batch)))).to(device)
    g64, g128 = occupancy_grids(batch, tuple(cfg.model.frustum3d.grid_dimensions))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for _ in range(a.steps + 1):  # the first step warms up
        sync()
        start = time.perf_counter()
        with torch.autocast(device.type, torch.bfloat16, enabled=a.precision == "bf16"):
            out = module.model(batch.images, g64, g128)
            losses = compute_losses(out, batch, cfg, g64, g128)
        sum(losses.values()).backward()
        module.zero_grad(set_to_none=True)
        sync()
        times.append(time.perf_counter() - start)
    step = sorted(times[1:])[len(times[1:]) // 2]
    peak = f" peak_gpu_memory_gb={torch.cuda.max_memory_allocated() / 2**30:.1f}" if device.type == "cuda" else ""
    print(f"device={device.type} batch={a.batch} precision={a.precision} s_per_step={step:.3f} "
          f"images_per_s={a.batch / step:.1f}{peak}")
