"""Multi-view depth (plane sweep) against the true depth on held-out synthetic walk-throughs, per matching cost.

    python bench/multiview_depth.py --scenes 3 --frames 16 --refs 4

For each cost: the share of pixels kept at the default confidence and their AbsRel, and the AbsRel of the
30% / 50% / 70% most confident pixels (a cost that ranks its own errors well is better at any threshold),
with the median seconds per reference frame (after a warm-up call) at 320 x 240, 4 sources, 64 planes.
Walk-throughs use seeds 7100 + i, never used in training.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nvpanoptix3d import fileio  # noqa: E402
from nvpanoptix3d.depth.multiview import COSTS, plane_sweep  # noqa: E402
from nvpanoptix3d.geometry import Intrinsics  # noqa: E402

from engine_common import walkthrough_parser, walkthroughs  # noqa: E402  (bench/ is on sys.path)

SHARES = (0.3, 0.5, 0.7)


def main() -> int:
    a = walkthrough_parser(3, __doc__.splitlines()[0]).parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    k = Intrinsics.front3d()
    stats = {c: {"kept": [], "kept_absrel": [], "seconds": [], **{s: [] for s in SHARES}} for c in COSTS}
    with tempfile.TemporaryDirectory() as tmp:
        for i, folder, refs in walkthroughs(tmp, a):
            images = [torch.from_numpy(np.array(fileio.load_rgb(f.image))).permute(2, 0, 1).float().to(device) / 255
                      for f in folder.frames]
            poses = [f.camera_to_world for f in folder.frames]
            if i == 0:  # kernels, caches and allocator warmed before anything is timed
                for cost in COSTS:
                    plane_sweep(images, poses, 1, k, cost_kind=cost)
            for ref in refs:
                truth = fileio.load_uint16(folder.frames[ref].depth).astype(np.float32) / 1000
                for cost in COSTS:
                    tick = time.perf_counter()
                    result = plane_sweep(images, poses, ref, k, cost_kind=cost, min_confidence=0.0)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    stats[cost]["seconds"].append(time.perf_counter() - tick)
                    conf = result.confidence.cpu().numpy()
                    depth = result.depth.cpu().numpy()
                    valid = (truth > 0) & (depth > 0)
                    rel = np.abs(depth - truth) / np.maximum(truth, 1e-6)
                    kept = valid & (conf >= 0.5)
                    stats[cost]["kept"].append(kept.mean())
                    stats[cost]["kept_absrel"].append(rel[kept].mean() if kept.any() else np.nan)
                    order = np.argsort(-conf[valid])
                    for share in SHARES:
                        top = order[: max(1, int(share * len(order)))]
                        stats[cost][share].append(rel[valid][top].mean())
    for cost, s in stats.items():
        print(f"cost={cost} device={device.type} frames={len(s['seconds'])} kept={np.mean(s['kept']):.3f} "
              f"kept_absrel={np.nanmean(s['kept_absrel']):.4f} "
              + " ".join(f"absrel_top{int(share * 100)}={np.mean(s[share]):.4f}" for share in SHARES)
              + f" s_per_frame={np.median(s['seconds']):.4f} frames_per_s={1 / np.median(s['seconds']):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
