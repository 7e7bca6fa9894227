"""Training step of the shipped recipe (both stages, 256^3 grid): seconds per step, images/s, peak GPU memory.

    python bench/train_step.py [--batch 2] [--steps 3] [--precision fp32|bf16] [--stage both|2d|3d] [--profile]
                               [--loader-batches N] [--workers K] [--set KEY=VALUE ...]

Forward, losses and backward on synthetic frames generated once (the data loader is not timed); no optimiser
step, so every step sees the same weights. A GPU is used when there is one. --stage 2d is the depth / 2D-only
recipe (dataset.enable_3d=false), --stage 3d the 3D stage alone on the shipped, frozen 2D stage
(train.freeze_2d). --profile prints the ops that take the most device time and the number of kernel launches
and host synchronisations per step. --loader-batches N also times the training data loader
alone (the spec's workers), whose rate bounds training's images/s.
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
from nvpanoptix3d.engine.status import StatusWriter  # noqa: E402
from nvpanoptix3d.engine.train import stage_init  # noqa: E402
from nvpanoptix3d.model.losses import compute_losses, occupancy_grids  # noqa: E402

from engine_common import WEIGHTS  # noqa: E402  (bench/ is the script's own folder on sys.path)

def training_step(stage: str, batch_size: int, precision: str, overrides: list[str], device: torch.device,
                  wrap=None):
    """(module, config, step): one training step of the shipped recipe on frames generated once; `wrap` (e.g.
    DistributedDataParallel) wraps the module that computes the losses."""
    torch.manual_seed(0)
    cfg = load_config("scripts/specs/gpu_synthetic.yaml", ["results_dir=/tmp/bench_train_step",
                                                           f"dataset.synthetic.render_device={device.type}",
                                                           f"dataset.enable_3d={str(stage != '2d').lower()}",
                                                           f"dataset.train.batch_size={batch_size}"]
                      + (["train.freeze_2d=true", f"train.checkpoint_2d={WEIGHTS}"] if stage == "3d" else [])
                      + list(overrides))
    module = PanopticModule(cfg)
    stage_init(module, cfg, StatusWriter(cfg.results_dir, enabled=False))  # --stage 3d: the shipped 2D stage
    module = module.to(device).train()
    module.on_train_batch_start(None, 0)  # a frozen 2D stage runs in eval mode, as in training
    batch = collate(get_dataset(cfg.dataset, "train", True).__getitems__(list(range(batch_size)))).to(device)
    g64, g128 = occupancy_grids(batch, tuple(cfg.model.frustum3d.grid_dimensions)) if cfg.dataset.enable_3d \
        else (None, None)
    class Losses(torch.nn.Module):  # forward and losses in one call, as Lightning's training step runs under DDP
        def __init__(self):
            super().__init__()
            self.model = module.model

        def forward(self, images):  # DDP wants an input to move to the device
            label = self.model.stage3d.label if self.model.stage3d is not None else None
            return compute_losses(self.model(images, g64, g128), batch, cfg, g64, g128, label)

    losses = wrap(Losses()) if wrap else Losses()

    def step():
        with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
            total = sum(losses(batch.images).values())
        total.backward()
        module.zero_grad(set_to_none=True)

    return module, cfg, step


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--stage", choices=("both", "2d", "3d"), default="both")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--loader-batches", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="data loader workers (default: the spec's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a spec override, e.g. postprocess.layout_planes=off (repeatable)")
    a = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    module, cfg, step = training_step(a.stage, a.batch, a.precision, a.set, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    times = []
    for _ in range(a.steps + 1):  # the first step warms up
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    median = sorted(times[1:])[len(times[1:]) // 2]
    peak = f" peak_gpu_memory_gb={torch.cuda.max_memory_allocated() / 2**30:.1f}" if device.type == "cuda" else ""
    print(f"device={device.type} stage={a.stage} batch={a.batch} precision={a.precision} s_per_step={median:.3f} "
          f"images_per_s={a.batch / median:.1f}{peak}")
    if a.profile:
        from torch.profiler import ProfilerActivity, profile
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            step()
            sync()
        events = prof.key_averages()
        count = lambda name: sum(e.count for e in events if e.key == name)  # noqa: E731
        print(f"per step: kernel launches={count('cudaLaunchKernel')} "
              f"host syncs={count('cudaStreamSynchronize') + count('cudaDeviceSynchronize')} "
              f"ops={sum(e.count for e in events if e.key.startswith('aten::'))}")
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(events.table(sort_by=sort, row_limit=20, max_name_column_width=60))
    if a.loader_batches:
        import dataclasses

        from nvpanoptix3d.data.loader import make_loader
        if a.workers is not None:
            train_split = dataclasses.replace(cfg.dataset.train, num_workers=a.workers)
            cfg = dataclasses.replace(cfg, dataset=dataclasses.replace(cfg.dataset, train=train_split))
        loader = iter(make_loader(cfg, "train", True))
        next(loader)  # workers start and render their first batches
        start = time.perf_counter()
        for _ in range(a.loader_batches):
            next(loader)
        seconds = time.perf_counter() - start
        print(f"data loader alone: workers={cfg.dataset.train.num_workers} batch={a.batch} "
              f"images_per_s={a.loader_batches * a.batch / seconds:.1f}")
