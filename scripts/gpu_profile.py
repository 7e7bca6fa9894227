"""Where does a training step go? Data-loader throughput alone, then model step time with a profiler table.

    python scripts/gpu_profile.py [OUT_DIR]     (device tool: results under $OUT)
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nvpanoptix3d.cli import load_config  # noqa: E402
from nvpanoptix3d.engine.module import PanopticModule  # noqa: E402
from nvpanoptix3d.data.loader import make_loader  # noqa: E402
from nvpanoptix3d.model.losses import compute_losses, occupancy_grids  # noqa: E402


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config("scripts/specs/gpu_synthetic.yaml", ["results_dir=/tmp/profile"])
    loader = make_loader(cfg, "train", True)
    it = iter(loader)
    batches = [next(it) for _ in range(3)]
    start = time.perf_counter()
    n = 30
    for _ in range(n):
        next(it)
    data_rate = n * cfg.dataset.train.batch_size / (time.perf_counter() - start)
    print(f"data loader alone: {data_rate:.1f} images/s ({cfg.dataset.train.num_workers} workers)")
    dev = torch.device("cuda")
    module = PanopticModule(cfg).to(dev)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4)
    batches = [b.to(dev) for b in batches]

    def step(batch):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            g64, g128 = occupancy_grids(batch, (256, 256, 256))
            o = module.model(batch.images, g64, g128, batch.depths, 0.5)
            loss = sum(compute_losses(o, batch, cfg, g64, g128, module.model.stage3d.label).values())
        opt.zero_grad()
        loss.backward()
        opt.step()

    for i in range(3):
        step(batches[i % 3])
    torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(10):
        step(batches[i % 3])
    torch.cuda.synchronize()
    step_s = (time.perf_counter() - start) / 10
    print(f"model step alone: {step_s * 1000:.0f} ms = {cfg.dataset.train.batch_size / step_s:.1f} images/s; "
          f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for i in range(3):
            step(batches[i % 3])
        torch.cuda.synchronize()
    table_gpu = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25)
    table_cpu = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    (out / "profile.txt").write_text(f"data {data_rate:.1f} img/s; step {step_s * 1000:.0f} ms\n\n{table_gpu}\n\n"
                                     f"{table_cpu}\n")
    print(table_cpu[:6000])


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/profile_out"))
