"""Shared by bench/engine_2d.py and bench/engine_3d.py: held-out evaluation and CPU timing of a checkpoint."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nvpanoptix3d.cli import load_config  # noqa: E402
from nvpanoptix3d.data import collate, get_dataset  # noqa: E402
from nvpanoptix3d.engine.predictor import load_for_action  # noqa: E402

WEIGHTS = Path(__file__).resolve().parent.parent / "nvpanoptix3d" / "weights" / "nvpanoptix3d_synthetic.safetensors"


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", default=str(WEIGHTS))
    p.add_argument("--frames", type=int, default=8, help="held-out synthetic frames (test split, seed+2)")
    p.add_argument("--timing-frames", type=int, default=3)
    p.add_argument("--depth", choices=("predicted", "ground_truth"), default="predicted",
                   help="lift into 3D with the predicted depth (the product) or the true depth (the 3D stage's "
                        "ceiling: what a perfect depth head would give)")
    p.add_argument("--depth-error", type=float, default=None, metavar="F",
                   help="lift with the true depth plus F times the predicted depth's error (0: the true depth, 1: "
                        "the predicted): what a depth head with a fraction of today's error would give")
    return p.parse_args()


def evaluate(args) -> tuple[dict, float]:
    """Metrics on held-out synthetic frames and seconds per 320 x 240 frame of inference on this machine."""
    render = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = load_config("scripts/specs/gpu_synthetic.yaml", ["results_dir=/tmp/bench_engine",
                                                           "dataset.synthetic.eval_scenes=50",
                                                           f"dataset.synthetic.render_device={render}"])
    module = load_for_action(cfg, args.checkpoint, "checkpoint", log=lambda *_: None)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    module.to(device)
    dataset = get_dataset(module.cfg.dataset, "test")
    module.on_validation_epoch_start()
    with torch.no_grad():
        for i in range(args.frames):
            batch = collate([dataset[i]]).to(device)
            if args.depth_error is not None:
                predicted = F.interpolate(module.model.forward_2d(batch.images).depth[:, None],
                                          size=batch.depths.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
                mixed = torch.where(batch.depths > 0, batch.depths + args.depth_error * (predicted - batch.depths), 0)
                teacher = torch.ones(1, dtype=torch.bool)
                module.accumulate(batch, module.model(batch.images, gt_depth=mixed, teacher=teacher))
            elif args.depth == "ground_truth":
                teacher = torch.ones(1, dtype=torch.bool)
                module.accumulate(batch, module.model(batch.images, gt_depth=batch.depths, teacher=teacher))
            else:
                module.validation_step(batch, i)
        module.on_validation_epoch_end()
        image = collate([dataset[0]]).images.to(device)
        module.model(image)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        for _ in range(args.timing_frames):
            module.model(image)
        sync()
    return module.last_metrics, (time.perf_counter() - start) / args.timing_frames
