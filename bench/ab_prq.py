"""Paired A/B of 3D PRQ: two checkpoints or two spec settings on the same held-out frames, with a bootstrap
interval for the difference (scenes resampled with replacement, each with all its views; counts summed per
class as PRQ sums them).

    python bench/ab_prq.py [--checkpoint A] [--set KEY=VALUE] [--checkpoint-b B] [--set-b KEY=VALUE]
        [--frames 96] [--first 0] [--split val] [--samples 2000] [--views-per-scene 4]
        [--counts-out F.npz] [--pool F.npz ...]

Why: PRQ over 96 frames moves by a few thousandths between halves of a split,
as much as most changes tried; a choice is worth making when the interval excludes zero. The
synthetic splits hold 4 consecutive views of each room, which share its layout and its scale error: resampling
frames one by one would count them as independent and narrow the interval.
"""
import numpy as np
import torch
from engine_common import checkpoint_parser, load_checkpoint

from nvpanoptix3d.data import collate
from nvpanoptix3d.labels import NUM_CLASSES
from nvpanoptix3d.metrics import class_counts, quality_of_counts
from nvpanoptix3d.metrics.paired import paired_interval  # noqa: F401  (occupancy_threshold.py imports it here)
from nvpanoptix3d.model.postprocess import panoptic_3d


def frame_counts(module, batch) -> np.ndarray:
    """classes x 4 PRQ counts of one frame."""
    out = module.model(batch.images)
    p3 = panoptic_3d(out.out2d, out.out3d, 0, module.cfg)
    metrics = module.new_metrics()
    metrics.add_3d(batch.occupied[0], batch.semantic3d[0], batch.instance3d[0], p3.index, p3.semantic, p3.instance)
    return class_counts(metrics.prq.scores, NUM_CLASSES)


def add_views_argument(parser) -> None:
    parser.add_argument("--views-per-scene", type=int, default=4, help="consecutive frames resampled together as "
                        "one scene (dataset.synthetic.frames_per_scene; the views of a room are not independent); "
                        "1: frames one by one")


if __name__ == "__main__":
    p = checkpoint_parser(96)
    p.add_argument("--checkpoint-b", default=None, help="B's checkpoint (default: A's)")
    p.add_argument("--set-b", action="append", default=[], metavar="KEY=VALUE", help="B's spec overrides")
    p.add_argument("--split", choices=("val", "test"), default="val")
    p.add_argument("--samples", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--first", type=int, default=0, help="index of the first held-out frame (a fresh sample of "
                   "frames after an earlier run's)")
    add_views_argument(p)
    p.add_argument("--counts-out", default=None, help="save the per-frame counts (.npz) for --pool")
    p.add_argument("--pool", nargs="+", default=None, help="no model: the interval over the frames of earlier "
                   "runs' --counts-out files together")
    args = p.parse_args()
    if args.pool:
        runs = [np.load(path) for path in args.pool]
        a, b = np.concatenate([r["a"] for r in runs]), np.concatenate([r["b"] for r in runs])
        diff, low, high = paired_interval(a, b, args.samples, views_per_scene=args.views_per_scene)
        print(f"pooled {len(args.pool)} runs frames={len(a)} prq_a={quality_of_counts(a.sum(0)):.4f} "
              f"prq_b={quality_of_counts(b.sum(0)):.4f} b_minus_a={diff:+.4f} interval95=[{low:+.4f}, {high:+.4f}]")
        raise SystemExit(0)
    if args.first % args.views_per_scene or args.frames % args.views_per_scene:
        raise SystemExit(f"error: --first {args.first} --frames {args.frames} cut a scene; use multiples of "
                         f"--views-per-scene {args.views_per_scene}")
    module_a, dataset, device = load_checkpoint(args.checkpoint, args.split, tuple(args.set))
    module_b, _, _ = load_checkpoint(args.checkpoint_b or args.checkpoint, args.split, tuple(args.set_b))
    counts = {"a": [], "b": []}
    with torch.no_grad():
        for i in range(args.first, args.first + args.frames):
            batch = collate([dataset[i]]).to(device)
            counts["a"].append(frame_counts(module_a, batch))
            counts["b"].append(frame_counts(module_b, batch))
    a, b = np.stack(counts["a"]), np.stack(counts["b"])
    if args.counts_out:
        np.savez(args.counts_out, a=a, b=b)
    diff, low, high = paired_interval(a, b, args.samples, views_per_scene=args.views_per_scene)
    frames = f"split={args.split} frames={args.first}..{args.first + args.frames - 1}"
    print(f"{frames} A: {args.checkpoint} {' '.join(args.set)}")
    print(f"{frames} B: {args.checkpoint_b or args.checkpoint} {' '.join(args.set_b)}")
    print(f"prq_a={quality_of_counts(a.sum(0)):.4f} prq_b={quality_of_counts(b.sum(0)):.4f} "
          f"b_minus_a={diff:+.4f} interval95=[{low:+.4f}, {high:+.4f}]")
