"""Where the depth head's error lies: relative error per semantic class (away from depth edges), at depth edges
and inside surfaces, by distance, and after aligning each image's median scale, on held-out synthetic frames;
with each group's share of pixels within PRQ's tolerance (evaluate's depth_in_tolerance); and each image's scale
error (the median of log(predicted / true) over its pixels, of all classes, of walls and of floors) across frames: a
wall's segment matches only within 1-1.5% at 4-6 m, and the walls' error follows the image's scale.

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


def image_scale_errors(pred: torch.Tensor, gt: torch.Tensor, semantic: torch.Tensor, edge: torch.Tensor,
                       classes: tuple[str, ...] = ("wall", "floor")) -> dict[str, float]:
    """One image's scale error, predicted / true - 1 at the median log ratio, over all its valid pixels and over each
    class's pixels away from depth edges (a class the image lacks is left out)."""
    valid = gt > 0
    log_ratio = (pred.clamp(min=1e-3) / gt.clamp(min=1e-3)).log()
    groups = {"all": valid, **{c: valid & ~edge & (semantic == NAMES.index(c)) for c in classes}}
    return {name: log_ratio[keep].median().exp().item() - 1 for name, keep in groups.items() if keep.any()}


if __name__ == "__main__":
    args, module, dataset, device = frames_on_test_split(__doc__)
    groups: dict[str, list[torch.Tensor]] = {}
    signed: dict[str, list[torch.Tensor]] = {}
    within: dict[str, list[torch.Tensor]] = {}
    image_scale: dict[str, list[float]] = {}
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
            for name, error in image_scale_errors(pred, gt, sem, edge).items():
                image_scale.setdefault(name, []).append(error)
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
    for name, per_frame in image_scale.items():
        error = torch.tensor(per_frame)
        print(f"image scale ({name:5s}) frames={len(error):3d} mean={error.mean():+.4f} spread={error.std():.4f} "
              f"mean_abs={error.abs().mean():.4f} within_1.5%={(error.abs() < 0.015).float().mean():.3f}")
