"""What the Manhattan layout (nvpanoptix3d/model/layout.py) does to the depth of floors and walls: relative error on
true floor / wall / other pixels, by the depth head alone, by planes turned and placed by their own pixels, by walls
placed where they meet the floor, and by walls turned as their bases run and placed by their pixels (the default),
on held-out synthetic frames; and the fit's time per frame.

    python bench/layout_depth.py [--checkpoint PATH] [--frames 24]
"""
import dataclasses
import time

import torch
from engine_common import frames_on_test_split
from torch.nn import functional as F

from nvpanoptix3d.data import collate
from nvpanoptix3d.labels import FLOOR, WALL
from nvpanoptix3d.model.layout import LayoutSettings, ManhattanLayout
from nvpanoptix3d.model.network import get_grid

if __name__ == "__main__":
    args, module, dataset, device = frames_on_test_split(__doc__)
    intrinsics = get_grid(module.cfg).intrinsics
    variants = {"depth head": None,
                "planes (own pixels)": ManhattanLayout(intrinsics, dataclasses.replace(LayoutSettings(),
                                                                                      min_contacts=10 ** 9)),
                "walls at their bases": ManhattanLayout(intrinsics, dataclasses.replace(LayoutSettings(),
                                                                                       wall_offset="bases")),
                "walls at their pixels": ManhattanLayout(intrinsics)}
    errors = {name: {"floor": [], "wall": [], "other": []} for name in variants}
    seconds = 0.0
    with torch.no_grad():
        for i in range(args.frames):
            batch = collate([dataset[i]]).to(device)
            out = module.model.forward_2d(batch.images)
            gt, sem = batch.depths[0], batch.semantic2d[0]
            valid = gt > 0
            for name, layout in variants.items():
                depth = out.depth
                if layout is not None:
                    start = time.perf_counter()
                    depth = layout(out.depth, out.class_logits, out.mask_logits)
                    seconds += time.perf_counter() - start if name == "walls at their pixels" else 0.0
                full = F.interpolate(depth[:, None], size=gt.shape, mode="bilinear", align_corners=False)[0, 0]
                rel = (full - gt).abs() / gt.clamp(min=1e-3)
                for part, where in (("floor", sem == FLOOR), ("wall", sem == WALL),
                                    ("other", (sem != FLOOR) & (sem != WALL))):
                    errors[name][part].append(rel[valid & where])
    for name, parts in errors.items():
        cells = []
        for part, values in parts.items():
            err = torch.cat(values)
            cells.append(f"{part}: mean={err.mean():.4f} median={err.median():.4f}")
        print(f"{name:24s} " + "  ".join(cells))
    print(f"layout fit: {seconds / args.frames * 1000:.1f} ms per frame on {device.type}")
