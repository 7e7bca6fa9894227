"""Synthetic data generation speed: frames per second with exact 2D and 3D ground truth (in memory).

    python bench/synth.py [--device cpu|cuda] [--frames N]

Target: >= 2 frames/s on the 2-core development machine, >= 200 frames/s on one H100 (issue 3).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nvpanoptix3d.geometry import front3d_grid  # noqa: E402
from nvpanoptix3d.synth.generate import generate_frame, make_scene  # noqa: E402
from nvpanoptix3d.synth.voxelize import FrustumVoxelizer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--frames-per-scene", type=int, default=4)
    a = p.parse_args()
    vox = FrustumVoxelizer(front3d_grid(), device=a.device)
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    generate_frame(0, 0, 0, vox)  # warm-up
    sync()
    start = time.perf_counter()
    scene = None
    for n in range(a.frames):
        index, frame = divmod(n, a.frames_per_scene)
        if frame == 0:
            scene = make_scene(1, index)
        f = generate_frame(1, index, frame, vox, scene)
    sync()
    seconds = time.perf_counter() - start
    fps = a.frames / seconds
    target = 200.0 if a.device.startswith("cuda") else 2.0
    print(f"device={a.device} threads={torch.get_num_threads()} frames={a.frames} seconds={seconds:.2f} "
          f"frames_per_s={fps:.2f} target={target:.0f} ratio={fps / target:.2f} "
          f"occupied_voxels_last={int((f.truth.semantic > 0).sum())}")


if __name__ == "__main__":
    main()
