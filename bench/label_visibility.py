"""Where the 3D output goes wrong, by visibility: the occupied voxels split by how far behind the lifted depth
surface they lie (visible: at most 2 voxels; near: 2-8; occluded: further). Per group: its share of the predicted
voxels, their class accuracy against the nearest true occupied voxel and share of all class errors, the share of
them within one voxel of a true occupied voxel (occupancy precision) and, grouping the true occupied voxels the same
way, how many there are and the share within one voxel of a predicted one (occupancy recall).

    python bench/label_visibility.py [--checkpoint PATH] [--frames 24] [--depth predicted|ground_truth]
        [--set KEY=VALUE]

A voxel behind a visible surface reads its occluder's pixel embedding: if the occluded voxels hold most of the
class errors, the label heads need 3D context (model.frustum3d.label_context_layers), not only their pixel. With
`--depth ground_truth` (lifted with the true depth) the groups show what the 3D stage itself completes.
"""
import numpy as np
import torch
from engine_common import checkpoint_parser, held_out
from label_oracle import nearest_truth_labels
from torch.nn import functional as F

from nvpanoptix3d.data import collate
from nvpanoptix3d.model.postprocess import panoptic_3d

GROUPS = ("visible", "near", "occluded")
BOUNDS = (2.0, 8.0)  # voxels behind the surface: visible up to 2, near up to 8, occluded beyond


def counts_by_group(behind: torch.Tensor, hit: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Voxels and voxels with hit (V bool) in each of GROUPS."""
    group = torch.bucketize(behind.cpu(), torch.tensor(BOUNDS)).numpy()
    return np.bincount(group, minlength=3), np.bincount(group, weights=hit.cpu().numpy(), minlength=3)


def near_other(index: torch.Tensor, other: torch.Tensor, dims: tuple) -> torch.Tensor:
    """V x 3 voxels, U x 3 voxels -> V bool: within one voxel (26-neighbourhood or itself) of one of other."""
    volume = torch.zeros((1, 1, *dims), device=index.device)
    volume[0, 0, other[:, 0], other[:, 1], other[:, 2]] = 1.0
    near = F.max_pool3d(volume, 3, stride=1, padding=1)[0, 0] > 0
    return near[index[:, 0], index[:, 1], index[:, 2]]


if __name__ == "__main__":
    p = checkpoint_parser(24, __doc__)
    p.add_argument("--depth", choices=("predicted", "ground_truth"), default="predicted")
    args = p.parse_args()
    module, dataset, device = held_out(args.checkpoint, tuple(args.set))
    dims = tuple(module.cfg.model.frustum3d.grid_dimensions)
    lifter = module.model.stage3d.lifter
    voxels, right, precise, true_voxels, recalled = (np.zeros(3) for _ in range(5))
    with torch.no_grad():
        for n in range(args.frames):
            batch = collate([dataset[n]]).to(device)
            out2d = module.model.forward_2d(batch.images)
            truth_depth = batch.depths if args.depth == "ground_truth" else None
            depth = module.model.lifting_depth(out2d, truth_depth, torch.ones(1, dtype=torch.bool))
            out3d = module.model.stage3d(out2d.mask_features, depth, out2d.query_embed)
            p3 = panoptic_3d(out2d, out3d, 0, module.cfg)
            truth = batch.occupied[0]
            true_semantic, _ = nearest_truth_labels(p3.index, truth, batch.semantic3d[0], batch.instance3d[0], dims)
            behind = lifter.behind_depth(p3.index[None], 1, depth)[1][0]
            frame_voxels, frame_right = counts_by_group(behind, p3.semantic.cpu() == true_semantic)
            _, frame_precise = counts_by_group(behind, near_other(p3.index, truth, dims))
            frame_true, frame_recalled = counts_by_group(lifter.behind_depth(truth[None], 1, depth)[1][0],
                                                         near_other(truth, p3.index, dims))
            voxels, right, precise = voxels + frame_voxels, right + frame_right, precise + frame_precise
            true_voxels, recalled = true_voxels + frame_true, recalled + frame_recalled
    errors = voxels - right
    for g, name in enumerate(GROUPS):
        print(f"frames={args.frames} depth={args.depth} {name} share={voxels[g] / voxels.sum():.3f} "
              f"class_accuracy={right[g] / max(voxels[g], 1):.3f} share_of_class_errors={errors[g] / errors.sum():.3f} "
              f"precision_within_1={precise[g] / max(voxels[g], 1):.3f} "
              f"predicted_per_true={voxels[g] / max(true_voxels[g], 1):.2f} "
              f"recall_within_1={recalled[g] / max(true_voxels[g], 1):.3f}")
