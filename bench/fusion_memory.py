"""The scene fusion alone over a long walk-through: speed and peak memory.

    python bench/fusion_memory.py --frames 200 --passes 10     # 2 000 frames fused

One synthetic room (seed 7500, never used in training) walked for --frames frames, the walk fused --passes
times over (a long capture that keeps revisiting a room: on this CPU the renderer makes about 0.4 walk-through
frames/s, so 2 000 distinct frames would take hours). Each frame's observation is its true depth and labels
voxelised at 3 cm (what a perfect network would give), so this times the fusion and association only. Prints
frames/s, the map's size and the peak RSS every 250 frames: memory should follow the surfaces seen, not the
number of frames.
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nvpanoptix3d import fileio  # noqa: E402
from nvpanoptix3d.fusion.scene import FrameObservation, SceneFusion  # noqa: E402
from nvpanoptix3d.inputs.posed import read_posed_folder  # noqa: E402
from nvpanoptix3d.synth.multiview import write_multiview  # noqa: E402


def observation(frame, root: Path, voxel: float) -> FrameObservation:
    c = frame.camera
    depth = fileio.load_uint16(frame.depth).astype(np.float32) * frame.depth_scale
    labels = fileio.load_npz(root / "panoptic" / f"{frame.name}.npz").astype(np.int64)
    v, u = np.nonzero((depth > 0) & (labels[..., 0] > 0))
    z = depth[v, u]
    points = np.stack([(u - c.cx) / c.fx * z, (v - c.cy) / c.fy * z, z], 1)
    cells, first = np.unique(np.floor(points / voxel).astype(np.int64), axis=0, return_index=True)
    return FrameObservation(frame.camera_to_world, (cells + 0.5) * voxel, labels[v, u, 0][first],
                            labels[v, u, 1][first], np.ones(len(first), np.float32), depth, c.fx, c.fy, c.cx, c.cy,
                            frame.name)


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=200, help="distinct frames of the walk-through")
    p.add_argument("--passes", type=int, default=10, help="times the walk-through is fused")
    p.add_argument("--seed", type=int, default=7500)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = next(write_multiview(Path(tmp), 1, a.frames, a.seed).iterdir())
        frames = read_posed_folder(root).frames * a.passes
        print(f"walk-through written: {a.frames} frames; fusing {len(frames)}; peak_rss_gb={peak_gb():.2f}",
              flush=True)
        fusion = SceneFusion(voxel_size=0.03)
        spent = 0.0
        for i, frame in enumerate(frames, 1):
            obs = observation(frame, root, 0.03)
            tick = time.perf_counter()
            fusion.integrate(obs)
            spent += time.perf_counter() - tick
            if i % 250 == 0 or i == len(frames):
                print(f"frames={i} fusion_fps={i / spent:.1f} map_voxels={len(fusion.keys)} "
                      f"objects={len(fusion.objects)} peak_rss_gb={peak_gb():.2f}", flush=True)
        tick = time.perf_counter()
        scene = fusion.result()
        print(f"result: {len(scene.coords)} voxels, {len(scene.objects)} objects in "
              f"{time.perf_counter() - tick:.1f} s; peak_rss_gb={peak_gb():.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
