"""Shared by bench/engine_2d.py and bench/engine_3d.py: held-out evaluation and CPU timing of a checkpoint."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nvpanoptix3d.cli import load_config  # noqa: E402
from nvpanoptix3d.data import collate, get_dataset  # noqa: E402
from nvpanoptix3d.engine.predictor import load_for_action  # noqa: E402
from nvpanoptix3d.labels import NAMES  # noqa: E402

WEIGHTS = Path(__file__).resolve().parent.parent / "nvpanoptix3d" / "weights" / "nvpanoptix3d_synthetic.safetensors"


def checkpoint_parser(frames: int, description: str | None = None) -> argparse.ArgumentParser:
    """--checkpoint, --frames and --set, which every bench over held-out frames takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--checkpoint", default=str(WEIGHTS))
    p.add_argument("--frames", type=int, default=frames, help="held-out synthetic frames")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a spec override, e.g. postprocess.layout_planes=off (repeatable)")
    return p


def walkthrough_parser(scenes: int, description: str | None = None) -> argparse.ArgumentParser:
    """--scenes, --frames, --refs and --seed of the benches over held-out synthetic walk-throughs."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--scenes", type=int, default=scenes)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--refs", type=int, default=4, help="reference frames scored per walk-through")
    p.add_argument("--seed", type=int, default=7100)
    return p


def walkthroughs(root: Path, args: argparse.Namespace):
    """(index, posed folder, reference frame indices) of each held-out walk-through (seed + index), written under
    root."""
    from nvpanoptix3d.inputs.posed import read_posed_folder
    from nvpanoptix3d.synth.multiview import write_multiview
    for i in range(args.scenes):
        folder = read_posed_folder(next(write_multiview(Path(root) / str(i), 1, args.frames, args.seed + i).iterdir()))
        yield i, folder, np.linspace(1, args.frames - 2, args.refs).round().astype(int).tolist()


def parse() -> argparse.Namespace:
    p = checkpoint_parser(8)
    p.add_argument("--timing-frames", type=int, default=3, help="frames timed after the metrics (0: no timing)")
    p.add_argument("--depth", choices=("predicted", "ground_truth"), default="predicted",
                   help="lift into 3D with the predicted depth (the product) or the true depth (the 3D stage's "
                        "ceiling: what a perfect depth head would give)")
    p.add_argument("--depth-error", type=float, default=None, metavar="F",
                   help="lift with the true depth plus F times the predicted depth's error (0: the true depth, 1: "
                        "the predicted): what a depth head with a fraction of today's error would give")
    p.add_argument("--true-depth-on", default="", metavar="CLASSES",
                   help="comma-separated class names (e.g. wall,floor) lifted with the true depth, the rest with "
                        "the predicted: what fixing the depth of those classes alone would give")
    p.add_argument("--true-scale", action="store_true",
                   help="lift the predicted depth times each image's true scale (median of true / predicted over "
                        "valid pixels): what a depth head with a perfect global scale and today's shape would give")
    p.add_argument("--per-class", action="store_true", help="also print PRQ / RSQ / RRQ and counts per class")
    return p.parse_args()


def load_checkpoint(checkpoint: str, split: str, overrides: tuple = ()):
    """(module, held-out dataset, device) of a checkpoint with the GPU recipe's spec; frames render where it runs."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = load_config("scripts/specs/gpu_synthetic.yaml", ["results_dir=/tmp/bench_engine",
                                                           f"dataset.synthetic.render_device={device.type}",
                                                           *overrides])
    module = load_for_action(cfg, checkpoint, "checkpoint", log=lambda *_: None).to(device)
    return module, get_dataset(module.cfg.dataset, split), device


def frames_on_test_split(description: str):
    """(args, module, test dataset, device) for a bench over --frames held-out frames of --checkpoint."""
    args = checkpoint_parser(24, description).parse_args()
    return (args, *held_out(args.checkpoint, tuple(args.set)))


def held_out(checkpoint: str, overrides: tuple = ()):
    """The test split (seed+2) with 50 scenes, so benches can take up to 200 frames."""
    return load_checkpoint(checkpoint, "test", ("dataset.synthetic.eval_scenes=50", *overrides))


def evaluate(args) -> tuple[dict, float]:
    """Metrics on held-out synthetic frames and seconds per 320 x 240 frame of inference on this machine."""
    module, dataset, device = held_out(args.checkpoint, tuple(args.set))
    error = 0.0 if args.depth == "ground_truth" else None
    error = args.depth_error if args.depth_error is not None else error
    true_on = torch.tensor([NAMES.index(name) for name in args.true_depth_on.split(",") if name], dtype=torch.long)
    if (len(true_on) or args.true_scale) and error is None:
        error = 1.0
    module.on_validation_epoch_start()
    with torch.no_grad():
        for i in range(args.frames):
            batch = collate([dataset[i]]).to(device)
            if error is None:
                module.validation_step(batch, i)
                continue
            # lift with the true depth plus `error` times the predicted depth's error (0: the true depth)
            lifted = batch.depths
            if error:
                predicted = F.interpolate(module.model.forward_2d(batch.images).depth[:, None],
                                          size=batch.depths.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
                if args.true_scale:
                    valid = batch.depths > 0
                    predicted = predicted * (batch.depths[valid] / predicted[valid]).median()
                lifted = torch.where(batch.depths > 0, batch.depths + error * (predicted - batch.depths), 0)
                if len(true_on):
                    exact = torch.isin(batch.semantic2d, true_on.to(device))
                    lifted = torch.where(exact, batch.depths, lifted)
            given = torch.ones(1, dtype=torch.bool)
            module.accumulate(batch, module.model(batch.images, gt_depth=lifted, use_given=given))
        module.on_validation_epoch_end()
        if args.timing_frames <= 0:
            return module.last_metrics, float("nan")
        image = collate([dataset[0]]).images.to(device)
        module.model(image)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        for _ in range(args.timing_frames):
            module.model(image)
        sync()
    return module.last_metrics, (time.perf_counter() - start) / args.timing_frames
