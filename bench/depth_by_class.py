"""Where the depth head's error lies: relative error per semantic class (away from depth edges), at depth edges
and inside surfaces, by distance, and after aligning each image's median scale, on held-out synthetic frames;
with each group's share of pixels within PRQ's tolerance (evaluate's depth_in_tolerance).

    python bench/depth_by_class.py [--checkpoint PATH] [--frames 24]

How the layout refiner's target was found (walls: most of the error) and how it is checked.
"""

import torch
from engine_common import frames_on_test_split
from torch.nn import functional as F

from nvpanoptix3d.data import collate
from nvpanoptix3d.engine.evaluation import MetricSet
from nvpanoptix3d.labels import NAMES

DISTANCES = ((0.4, 2.0), (2.0, 4.0), (4.0, 6.0))  # metres

if __name__ == "__main__":
    args, module, dataset, device = frames_on_test_split(__doc__)
    groups: dict[str, list[torch.Tensor]] = {}
    signed: dict[str, list[torch.Tensor]] = {}
    within: dict[str, list[torch.Tensor]] = {}
    tolerance = MetricSet.surface_tolerance
    with torch.no_grad():
        for i in range(args.frames):
            batch = collate([dataset[i]]).to(device)
            pred = F.interpolate(module.model.forward_2d(batch.images).depth[:, None], size=batch.depths.shape[-2:],
                                 mode="bilinear", align_corners=False)[0, 0]
            gt, sem = batch.depths[0], batch.semantic2d[0]
            valid = gt > 0
            rel = (pred - gt) / gt.clamp(min=1e-3)
            # a depth edge: the depth within 3 pixels spans more than 10% of this pixel's
            high, low = F.max_pool2d(gt[None, None], 7, 1, 3)[0, 0], -F.max_pool2d(-gt[None, None], 7, 1, 3)[0, 0]
            edge = (high - low) / gt.clamp(min=1e-3) > 0.1
            scale = (gt[valid] / pred[valid]).median()
            close = (pred - gt).abs() < tolerance
            aligned = (pred * scale - gt).abs()
            masks = {"all": valid, "depth edges": valid & edge, "inside surfaces": valid & ~edge}
            masks.update({f"{near:g}-{far:g} m": valid & (gt >= near) & (gt < far) for near, far in DISTANCES})
            for name, keep in masks.items():
                groups.setdefault(name, []).append(rel[keep].abs())
                within.setdefault(name, []).append(close[keep])
            groups.setdefault("median-scale aligned", []).append((aligned / gt)[valid])
            within.setdefault("median-scale aligned", []).append((aligned < tolerance)[valid])
            for c in sem[valid].unique().tolist():
                keep = valid & ~edge & (sem == c)
                groups.setdefault(NAMES[c], []).append(rel[keep].abs())
                signed.setdefault(NAMES[c], []).append(rel[keep])
                within.setdefault(NAMES[c], []).append(close[keep])
    for name, parts in groups.items():
        err = torch.cat(parts)
        bias = f" mean_signed={torch.cat(signed[name]).mean():+.4f}" if name in signed else ""
        print(f"{name:22s} pixels={err.numel():8d} abs_rel_mean={err.mean():.4f} abs_rel_median={err.median():.4f}"
              f" in_tolerance={torch.cat(within[name]).float().mean():.3f}{bias}")
