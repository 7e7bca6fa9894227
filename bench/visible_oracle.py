"""How much of PRQ a reconstruction of only what the camera sees can get, and what the 3D stage adds to it.

    python bench/visible_oracle.py [--checkpoint PATH] [--frames 48] [--tolerances 1,2]

Scored against the whole truth (test split), with no 3D stage:
- visible_truth: the truth itself cut to its voxels visible from the camera (perfect depth, perfect labels). A
  voxel is visible when its centre lies at most `tolerance` voxels behind the true depth at its pixel.
- lift_<depth>_<labels>: each pixel's depth lifted to the voxels from its surface to `tolerance` voxels behind it,
  labelled with its 2D label; depth true or the 2D stage's (mirror average and layout, as the product lifts it),
  labels true or the 2D stage's panoptic fusion; segments under min_segment_voxels dropped as the 3D stage drops
  them (not for true labels).
Set beside `bench/engine_3d.py --depth ground_truth|predicted` (the 3D stage on the same frames) this says what
its completion of the unseen adds, or costs, over lifting the visible surface.
"""
import torch
from engine_common import checkpoint_parser, held_out
from torch.nn import functional as F

from nvpanoptix3d.data import collate
from nvpanoptix3d.model.postprocess import large_segments, panoptic_2d


def visible_voxels(index: torch.Tensor, depth: torch.Tensor, grid, tolerance: float) -> torch.Tensor:
    """index M x 3 voxels, depth H x W true depth at the grid's intrinsics -> M bool: seen from the camera."""
    k = grid.intrinsics
    p = grid.grid_to_camera(index)
    z = p[:, 2]
    u, v = (c.round().long() for c in k.project(p))
    inside = (u >= 0) & (u < k.width) & (v >= 0) & (v < k.height)
    d = depth[v.clamp(0, k.height - 1), u.clamp(0, k.width - 1)]
    return inside & (d > 0) & (z <= d + tolerance * grid.voxel_size)


def lift_pixels(depth: torch.Tensor, semantic: torch.Tensor, instance: torch.Tensor, grid, thickness: float):
    """H x W depth and labels -> (V x 3 voxels, V semantic, V instance): each pixel's ray from its depth to
    `thickness` voxels behind it, sampled every half voxel; a voxel several pixels reach takes one of their labels."""
    rays = grid.intrinsics.pixel_rays(depth.device)[depth > 0]
    d = depth[depth > 0]
    steps = torch.arange(0, thickness + 1e-6, 0.5, device=depth.device) * grid.voxel_size
    points = rays[:, None] * (d[:, None] + steps)[..., None]                                  # P x S x 3
    index = grid.camera_to_grid(points).floor().long().reshape(-1, 3)
    labels = torch.stack([semantic[depth > 0], instance[depth > 0]], -1).repeat_interleave(len(steps), 0)
    dims = torch.tensor(grid.dims, device=depth.device)
    inside = ((index >= 0) & (index < dims)).all(-1)
    index, labels = index[inside], labels[inside]
    flat = (index[:, 0] * dims[1] + index[:, 1]) * dims[2] + index[:, 2]
    unique, inverse = flat.unique(return_inverse=True)
    first = torch.full_like(unique, len(flat)).scatter_reduce(0, inverse, torch.arange(len(flat)), "amin")
    index, labels = index[first], labels[first]
    keep = (labels[:, 0] > 0) & grid.frustum_mask(depth.device)[tuple(index.T)]
    return index[keep], labels[keep, 0], labels[keep, 1]


def product_depth(module, images: torch.Tensor):
    """(2D outputs, depth at the image's size) as the product lifts it (mirror average, layout...)."""
    out = module.model.forward_2d(images)
    depth = module.model.lifting_depth(out)
    return out, F.interpolate(depth[:, None].float(), size=images.shape[-2:], mode="bilinear",
                              align_corners=False)[0, 0]


if __name__ == "__main__":
    p = checkpoint_parser(48, __doc__)
    p.add_argument("--tolerances", default="1,2", help="comma-separated, in voxels behind the true surface")
    args = p.parse_args()
    module, dataset, device = held_out(args.checkpoint, tuple(args.set))
    grid = module.model.stage3d.grid
    tolerances = [float(t) for t in args.tolerances.split(",")]
    metrics = {t: module.new_metrics() for t in tolerances}
    seen = {t: [0, 0] for t in tolerances}
    lifts = {(d, lab, t): module.new_metrics() for d in ("true", "predicted") for lab in ("true", "predicted")
             for t in tolerances}
    min_voxels = module.cfg.model.frustum3d.min_segment_voxels
    for i in range(args.frames):
        batch = collate([dataset[i]]).to(device)
        depth = batch.depths[0]
        if tuple(depth.shape) != (grid.intrinsics.height, grid.intrinsics.width):
            raise SystemExit(f"error: depth {tuple(depth.shape)} is not the grid's image size; set dataset.target_size")
        index, semantic, instance = batch.occupied[0], batch.semantic3d[0], batch.instance3d[0]
        for t in tolerances:
            keep = visible_voxels(index, depth, grid, t)
            metrics[t].add_3d(index, semantic, instance, index[keep], semantic[keep], instance[keep])
            seen[t][0] += int(keep.sum())
            seen[t][1] += len(keep)
        with torch.no_grad():
            out2d, predicted = product_depth(module, batch.images)
        pan = panoptic_2d(out2d, 0, module.cfg, tuple(depth.shape))
        for (d, lab, t), m in lifts.items():
            sem, inst = (batch.semantic2d[0], batch.instance2d[0]) if lab == "true" else (pan.semantic, pan.instance)
            v_index, v_sem, v_inst = lift_pixels(depth if d == "true" else torch.where(depth > 0, predicted, 0),
                                                 sem, inst, grid, t)
            if lab == "predicted":
                big = large_segments(v_sem, v_inst, min_voxels)
                v_index, v_sem, v_inst = v_index[big], v_sem[big], v_inst[big]
            m.add_3d(index, semantic, instance, v_index, v_sem, v_inst)
    for t in tolerances:
        m = metrics[t].summary()
        print(f"frames={args.frames} visible_truth tolerance={t:g}_voxels visible_share={seen[t][0] / seen[t][1]:.3f} "
              f"prq={m['prq']:.3f} rsq={m['rsq']:.3f} rrq={m['rrq']:.3f} prq_things={m['prq_things']:.3f} "
              f"prq_stuff={m['prq_stuff']:.3f} occupancy_iou={m['occupancy_iou']:.3f}")
    for (d, lab, t), metric in lifts.items():
        m = metric.summary()
        print(f"frames={args.frames} lift_{d}_depth_{lab}_labels tolerance={t:g}_voxels prq={m['prq']:.3f} "
              f"rsq={m['rsq']:.3f} rrq={m['rrq']:.3f} prq_things={m['prq_things']:.3f} "
              f"prq_stuff={m['prq_stuff']:.3f} occupancy_iou={m['occupancy_iou']:.3f}")
