"""DDP scaling of a training step: N processes (one per GPU; gloo on the CPU without one) at the same per-process
batch against one, and each process's peak GPU memory (the 3D stage at 256^3).

    python bench/ddp_scaling.py [--worlds 1,2] [--batch 8] [--steps 5] [--precision bf16] [--stage both]
                                [--set KEY=VALUE ...]

The step is bench/train_step.py's (forward, losses, backward; the gradients all-reduced by
DistributedDataParallel as in training, find_unused_parameters as the engine sets it). Prints images/s of the
whole world for each size and the ratio to one process: the target is >= 1.8 on 2 GPUs.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_step import training_step  # noqa: E402


def _worker(rank: int, world: int, a: argparse.Namespace, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(rank)
    device = torch.device(f"cuda:{rank}" if cuda else "cpu")
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)

    def wrap(network):
        return torch.nn.parallel.DistributedDataParallel(network, device_ids=[rank] if cuda else None,
                                                         find_unused_parameters=True)

    _, _, step = training_step(a.stage, a.batch, a.precision, a.set, device, wrap=wrap)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    times = []
    for _ in range(a.steps + 1):  # the first step warms up
        dist.barrier()
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    median = torch.tensor(sorted(times[1:])[len(times[1:]) // 2], device=device)
    dist.all_reduce(median, op=dist.ReduceOp.MAX)  # the world moves at its slowest process
    if rank == 0:
        results[world] = (float(median), torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0)
    dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worlds", default="1,2", help="process counts to time, comma-separated")
    p.add_argument("--batch", type=int, default=8, help="frames per process")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    p.add_argument("--stage", choices=("both", "2d", "3d"), default="both")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a spec override")
    a = p.parse_args()
    worlds = [int(w) for w in a.worlds.split(",")]
    available = torch.cuda.device_count()
    if available and max(worlds) > available:
        sys.exit(f"error: --worlds {a.worlds}: {available} GPU(s) visible here")
    results = mp.Manager().dict()
    for world in worlds:
        with __import__("socket").socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        mp.spawn(_worker, args=(world, a, port, results), nprocs=world, join=True)
    base = a.batch / results[worlds[0]][0] / worlds[0]
    device = torch.cuda.get_device_name(0) if available else "cpu (gloo)"
    for world in worlds:
        seconds, memory = results[world]
        rate = world * a.batch / seconds
        print(f"device={device} processes={world} batch_per_process={a.batch} stage={a.stage} "
              f"precision={a.precision} s_per_step={seconds:.3f} images_per_s={rate:.1f} "
              f"scaling={rate / base:.2f}x peak_gpu_memory_gb_per_process={memory:.1f}")


if __name__ == "__main__":
    main()
