"""PRQ of one checkpoint at several occupancy thresholds (postprocess.occupancy_threshold), smallest
segments kept (postprocess.min_segment_voxels) and query scores kept (postprocess.object_mask_threshold),
one forward pass per frame: how the shipped defaults were chosen. Each setting also gets the paired bootstrap
interval of its PRQ minus the spec's setting's (bench/ab_prq.py), over the same frames (whole scenes resampled).

    python bench/occupancy_threshold.py [--checkpoint PATH] [--frames 48] [--split val] [--thresholds 0.15,0.2,0.3]
        [--min-segments 0,1500] [--object-mask-thresholds 0.3,0.5] [--set postprocess.layout_planes=off]

Choose on the validation split (seed+1), report on the test split (seed+2).
"""
import dataclasses

import numpy as np
import torch
from ab_prq import add_views_argument, paired_interval
from engine_common import checkpoint_parser, load_checkpoint

from nvpanoptix3d.data import collate
from nvpanoptix3d.labels import NUM_CLASSES
from nvpanoptix3d.metrics import class_counts
from nvpanoptix3d.model.postprocess import panoptic_3d


def with_threshold(cfg, threshold: float, min_segment: int, object_mask: float):
    return dataclasses.replace(cfg, postprocess=dataclasses.replace(
        cfg.postprocess, occupancy_threshold=threshold, min_segment_voxels=min_segment,
        object_mask_threshold=object_mask))


def values(text: str | None, default: float, kind=float) -> list:
    return sorted({kind(v) for v in text.split(",")}) if text else [default]


if __name__ == "__main__":
    p = checkpoint_parser(48)
    p.add_argument("--split", choices=("val", "test"), default="val")
    p.add_argument("--thresholds", default="0.15,0.2,0.25,0.3,0.4")
    p.add_argument("--min-segments", default=None, help="min_segment_voxels values (default: the spec's)")
    p.add_argument("--object-mask-thresholds", default=None,
                   help="postprocess.object_mask_threshold values (default: the spec's)")
    p.add_argument("--samples", type=int, default=2000, help="bootstrap resamples")
    add_views_argument(p)
    args = p.parse_args()
    module, dataset, device = load_checkpoint(args.checkpoint, args.split, tuple(args.set))
    spec = (module.cfg.postprocess.occupancy_threshold, module.cfg.postprocess.min_segment_voxels,
            module.cfg.postprocess.object_mask_threshold)
    thresholds = values(args.thresholds, spec[0])
    sizes = values(args.min_segments, spec[1], int)
    object_masks = values(args.object_mask_thresholds, spec[2])
    model = module.model.eval()
    model.stage3d.label_above = thresholds[0]  # label every voxel the lowest threshold keeps
    configs = {(t, n, m): with_threshold(module.cfg, t, n, m) for t in thresholds for n in sizes for m in object_masks}
    metrics = {key: module.new_metrics() for key in configs}
    per_frame = {key: [] for key in configs}
    with torch.no_grad():
        for i in range(args.frames):
            batch = collate([dataset[i]]).to(device)
            out = model(batch.images)
            for key, cfg in configs.items():
                p3 = panoptic_3d(out.out2d, out.out3d, 0, cfg)
                before = class_counts(metrics[key].prq.scores, NUM_CLASSES)
                metrics[key].add_3d(batch.occupied[0], batch.semantic3d[0], batch.instance3d[0],
                                    p3.index, p3.semantic, p3.instance)
                # the frame's own counts, as the accumulator sums counts per class
                per_frame[key].append(class_counts(metrics[key].prq.scores, NUM_CLASSES) - before)
    reference = np.stack(per_frame[spec]) if spec in per_frame else None
    for (t, n, o), m in ((key, m.summary()) for key, m in metrics.items()):
        paired = ""
        if reference is not None:
            diff, low, high = paired_interval(reference, np.stack(per_frame[(t, n, o)]), args.samples,
                                              views_per_scene=args.views_per_scene)
            paired = f" minus_spec={diff:+.4f} interval95=[{low:+.4f}, {high:+.4f}]"
        print(f"split={args.split} frames={args.frames} {' '.join(args.set)} threshold={t} min_segment_voxels={n} "
              f"object_mask_threshold={o} prq={m['prq']:.4f} rsq={m['rsq']:.3f} rrq={m['rrq']:.3f} "
              f"things={m['prq_things']:.4f} stuff={m['prq_stuff']:.4f} occupancy_iou={m['occupancy_iou']:.3f}{paired}")
