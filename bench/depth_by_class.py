"""Where the depth head's error lies: relative error per semantic class (away from depth edges), at depth edges
and inside surfaces, and after aligning each image's median scale, on held-out synthetic frames.

    python bench/depth_by_class.py [--checkpoint PATH] [--frames 24]

How the layout refiner's target was found (walls: most of the error) and how it is checked.
"""

import torch
from engine_common import frames_on_test_split
from torch.nn import functional as F

from nvpanoptix3d.data import collate
from nvpanoptix3d.labels import NAMES

if __name__ == "__main__":
    args, module, dataset, device = frames_on_test_split(__doc__)
    groups: dict[str, list[torch.Tensor]] = {}
    signed: dict[str, list[torch.Tensor]] = {}
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
            groups.setdefault("all", []).append(rel[valid].abs())
            groups.setdefault("depth edges", []).append(rel[valid & edge].abs())
            groups.setdefault("inside surfaces", []).append(rel[valid & ~edge].abs())
            groups.setdefault("median-scale aligned", []).append(((pred * scale - gt).abs() / gt)[valid])
            for c in sem[valid].unique().tolist():
                keep = valid & ~edge & (sem == c)
                groups.setdefault(NAMES[c], []).append(rel[keep].abs())
                signed.setdefault(NAMES[c], []).append(rel[keep])
    for name, parts in groups.items():
        err = torch.cat(parts)
        bias = f" mean_signed={torch.cat(signed[name]).mean():+.4f}" if name in signed else ""
        print(f"{name:22s} pixels={err.numel():8d} abs_rel_mean={err.mean():.4f} abs_rel_median={err.median():.4f}"
              f"{bias}")
