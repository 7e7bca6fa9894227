"""PRQ of one checkpoint at several occupancy thresholds (model.frustum3d.occupancy_threshold) and smallest
segments kept (model.frustum3d.min_segment_voxels), one forward pass per frame: how the shipped defaults were
chosen.

    python bench/occupancy_threshold.py [--checkpoint PATH] [--frames 48] [--split val] [--thresholds 0.15,0.2,0.3]
        [--min-segments 0,1500] [--set model.depth_head.layout_planes=off]

Choose on the validation split (seed+1), report on the test split (seed+2).
"""
import dataclasses

import torch
from engine_common import checkpoint_parser, load_checkpoint

from nvpanoptix3d.data import collate
from nvpanoptix3d.model.postprocess import panoptic_3d


def with_threshold(cfg, threshold: float, min_segment: int):
    f3 = dataclasses.replace(cfg.model.frustum3d, occupancy_threshold=threshold, min_segment_voxels=min_segment)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, frustum3d=f3))


if __name__ == "__main__":
    p = checkpoint_parser(48)
    p.add_argument("--split", choices=("val", "test"), default="val")
    p.add_argument("--thresholds", default="0.15,0.2,0.25,0.3,0.4")
    p.add_argument("--min-segments", default=None, help="min_segment_voxels values (default: the spec's)")
    args = p.parse_args()
    thresholds = sorted(float(t) for t in args.thresholds.split(","))
    module, dataset, device = load_checkpoint(args.checkpoint, args.split, tuple(args.set))
    model = module.model.eval()
    model.stage3d.label_above = thresholds[0]  # label every voxel the lowest threshold keeps
    sizes = [int(n) for n in args.min_segments.split(",")] if args.min_segments \
        else [module.cfg.model.frustum3d.min_segment_voxels]
    configs = {(t, n): with_threshold(module.cfg, t, n) for t in thresholds for n in sizes}
    metrics = {key: module.new_metrics() for key in configs}
    with torch.no_grad():
        for i in range(args.frames):
            batch = collate([dataset[i]]).to(device)
            out = model(batch.images)
            for key, cfg in configs.items():
                p3 = panoptic_3d(out.out2d, out.out3d, 0, cfg)
                metrics[key].add_3d(batch.occupied[0], batch.semantic3d[0], batch.instance3d[0],
                                    p3.index, p3.semantic, p3.instance)
    for (t, n), m in ((key, m.summary()) for key, m in metrics.items()):
        print(f"split={args.split} frames={args.frames} {' '.join(args.set)} threshold={t} min_segment_voxels={n} "
              f"prq={m['prq']:.4f} rsq={m['rsq']:.3f} rrq={m['rrq']:.3f} things={m['prq_things']:.4f} "
              f"stuff={m['prq_stuff']:.4f} occupancy_iou={m['occupancy_iou']:.3f}")
