"""PRQ of one checkpoint at several occupancy thresholds (model.frustum3d.occupancy_threshold), one forward
pass per frame: how the shipped default was chosen.

    python bench/occupancy_threshold.py [--checkpoint PATH] [--frames 48] [--split val] [--thresholds 0.15,0.2,0.3]
        [--set model.depth_head.layout_planes=off]

Choose on the validation split (seed+1), report on the test split (seed+2).
"""
import dataclasses

import torch
from engine_common import checkpoint_parser, load_checkpoint

from nvpanoptix3d.data import collate
from nvpanoptix3d.model.postprocess import panoptic_3d


def with_threshold(cfg, threshold: float):
    f3 = dataclasses.replace(cfg.model.frustum3d, occupancy_threshold=threshold)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, frustum3d=f3))


if __name__ == "__main__":
    p = checkpoint_parser(48)
    p.add_argument("--split", choices=("val", "test"), default="val")
    p.add_argument("--thresholds", default="0.15,0.2,0.25,0.3,0.4")
    args = p.parse_args()
    thresholds = sorted(float(t) for t in args.thresholds.split(","))
    module, dataset, device = load_checkpoint(args.checkpoint, args.split, tuple(args.set))
    model = module.model.eval()
    model.stage3d.label_above = thresholds[0]  # label every voxel the lowest threshold keeps
    configs = {t: with_threshold(module.cfg, t) for t in thresholds}
    metrics = {t: module.new_metrics() for t in thresholds}
    with torch.no_grad():
        for i in range(args.frames):
            batch = collate([dataset[i]]).to(device)
            out = model(batch.images)
            for t in thresholds:
                p3 = panoptic_3d(out.out2d, out.out3d, 0, configs[t])
                metrics[t].add_3d(batch.occupied[0], batch.semantic3d[0], batch.instance3d[0],
                                  p3.index, p3.semantic, p3.instance)
    for t in thresholds:
        m = metrics[t].summary()
        print(f"split={args.split} frames={args.frames} {' '.join(args.set)} threshold={t} prq={m['prq']:.3f} "
              f"rsq={m['rsq']:.3f} rrq={m['rrq']:.3f} occupancy_iou={m['occupancy_iou']:.3f}")
