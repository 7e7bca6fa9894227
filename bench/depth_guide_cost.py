"""What the depth head's image guide (model.depth_head.guide_channels) costs at inference: the median time of
the 2D stage alone and of a whole frame (2D stage, mirror average, layout, 3D stage) on one 320 x 240 frame, with
and without the guide, and the head's parameters. Random weights: the guide's cost does not depend on what it
learnt, and no shipped file has one yet.

    python bench/depth_guide_cost.py [--channels 0,16] [--repeats 5] [--threads 2]
"""
import argparse
import time

import torch

from nvpanoptix3d.cli import load_config
from nvpanoptix3d.model.network import PanopticReconstruction


def median_seconds(run, repeats: int) -> float:
    run()                                       # warm-up: first calls allocate
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--channels", default="0,16")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    base = {}
    for channels in (int(c) for c in args.channels.split(",")):
        cfg = load_config("scripts/specs/gpu_synthetic.yaml", ["results_dir=/tmp/depth_guide_cost",
                                                                f"model.depth_head.guide_channels={channels}",
                                                                "dataset.synthetic.render_device=cpu"])
        torch.manual_seed(0)
        model = PanopticReconstruction(cfg).eval()
        image = torch.rand(1, 3, *reversed(cfg.dataset.target_size))
        with torch.no_grad():
            stage_2d = median_seconds(lambda: model.forward_2d(image), args.repeats)
            frame = median_seconds(lambda: model(image), args.repeats)
            depth_size = tuple(model.forward_2d(image).depth.shape[-2:])
        params = sum(p.numel() for p in model.head2d.depth_head.parameters())
        base = base or {"2d": stage_2d, "frame": frame}
        print(f"guide_channels={channels} depth={depth_size[1]}x{depth_size[0]} depth_head_params={params} "
              f"stage_2d_s={stage_2d:.3f} ({stage_2d / base['2d']:.2f}x) frame_s={frame:.3f} "
              f"({frame / base['frame']:.2f}x)")
