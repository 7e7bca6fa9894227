"""Synthetic data generation speed: frames per second with exact 2D and 3D ground truth (in memory).

    python bench/synth.py [--device cpu|cuda] [--frames N] [--batch B] [--workers K]

--batch B renders and voxelises B frames per call (one set of kernel launches for all of them: what a GPU
needs; the data loader does the same, one call per training batch). With --workers K, K processes generate
at once (as the training data loader's workers do); on one GPU they are time-sliced (no MPS).
Target: >= 2 frames/s on the 2-core development machine, >= 200 frames/s on one H100 (issue 3).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nvpanoptix3d.geometry import front3d_grid  # noqa: E402
from nvpanoptix3d.synth.generate import generate_frames  # noqa: E402
from nvpanoptix3d.synth.voxelize import FrustumVoxelizer  # noqa: E402


def _generate(device: str, first: int, count: int, frames_per_scene: int, batch: int, ready, go, done):
    if ready is not None:  # one of several processes: leave the cores to the others
        torch.set_num_threads(1)
    vox = FrustumVoxelizer(front3d_grid(), device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    generate_frames(0, [(i, 0) for i in range(batch)], vox)  # warm-up
    sync()
    if ready is not None:
        ready.put(True)
        go.wait()
    jobs = [divmod(n, frames_per_scene) for n in range(first, first + count)]
    start = time.perf_counter()
    for at in range(0, count, batch):
        frames = generate_frames(1, jobs[at:at + batch], vox)
    occupied = int((frames[-1].truth.semantic > 0).sum())
    sync()
    if done is not None:
        done.put(occupied)
    return occupied, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--frames-per-scene", type=int, default=4)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--workers", type=int, default=1)
    a = p.parse_args()
    per = -(-a.frames // a.workers)
    if a.workers == 1:
        occupied, seconds = _generate(a.device, 0, a.frames, a.frames_per_scene, a.batch, None, None, None)
        frames = a.frames
    else:
        ctx = mp.get_context("spawn")
        ready, done, go = ctx.Queue(), ctx.Queue(), ctx.Event()
        procs = [ctx.Process(target=_generate,
                             args=(a.device, w * per, per, a.frames_per_scene, a.batch, ready, go, done))
                 for w in range(a.workers)]
        for proc in procs:
            proc.start()
        for _ in procs:
            ready.get()
        start = time.perf_counter()
        go.set()
        occupied = [done.get() for _ in procs][-1]
        seconds = time.perf_counter() - start
        for proc in procs:
            proc.join()
        frames = per * a.workers
    fps = frames / seconds
    target = 200.0 if a.device.startswith("cuda") else 2.0
    print(f"device={a.device} batch={a.batch} workers={a.workers} frames={frames} seconds={seconds:.2f} "
          f"frames_per_s={fps:.2f} target={target:.0f} ratio={fps / target:.2f} occupied_voxels_last={occupied}")


if __name__ == "__main__":
    main()
