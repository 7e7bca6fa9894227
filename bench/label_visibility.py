"""Where the 3D labels go wrong, by visibility: the occupied voxels of the 3D output split by how far behind the
lifted depth surface they lie (visible: at most 2 voxels; near: 2-8; occluded: further), each group's share of the
voxels, class accuracy against the nearest true occupied voxel, and share of all class errors.

    python bench/label_visibility.py [--checkpoint PATH] [--frames 24] [--set KEY=VALUE]

A voxel behind a visible surface reads its occluder's pixel embedding: if the occluded voxels hold most of the
class errors, the label heads need 3D context (model.frustum3d.label_context_layers), not only their pixel.
"""
import numpy as np
import torch
from engine_common import checkpoint_parser, held_out
from label_oracle import nearest_truth_labels

from nvpanoptix3d.data import collate
from nvpanoptix3d.model.postprocess import panoptic_3d

GROUPS = ("visible", "near", "occluded")
BOUNDS = (2.0, 8.0)  # voxels behind the surface: visible up to 2, near up to 8, occluded beyond


def counts_by_group(behind: torch.Tensor, predicted: torch.Tensor,
                    true: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Voxels and correctly classed voxels in each of GROUPS."""
    group = torch.bucketize(behind.cpu(), torch.tensor(BOUNDS)).numpy()
    correct = (predicted.cpu() == true.cpu()).numpy()
    return np.bincount(group, minlength=3), np.bincount(group, weights=correct, minlength=3)


if __name__ == "__main__":
    args = checkpoint_parser(24, __doc__).parse_args()
    module, dataset, device = held_out(args.checkpoint, tuple(args.set))
    dims = tuple(module.cfg.model.frustum3d.grid_dimensions)
    voxels, right = np.zeros(3), np.zeros(3)
    with torch.no_grad():
        for n in range(args.frames):
            batch = collate([dataset[n]]).to(device)
            out = module.model(batch.images)
            p3 = panoptic_3d(out.out2d, out.out3d, 0, module.cfg)
            true_semantic, _ = nearest_truth_labels(p3.index, batch.occupied[0], batch.semantic3d[0],
                                                    batch.instance3d[0], dims)
            lifter = module.model.stage3d.lifter
            behind = lifter.behind_depth(p3.index[None], 1, module.model.lifting_depth(out.out2d))[1][0]
            frame_voxels, frame_right = counts_by_group(behind, p3.semantic, true_semantic)
            voxels, right = voxels + frame_voxels, right + frame_right
    errors = voxels - right
    for g, name in enumerate(GROUPS):
        print(f"frames={args.frames} {name} share={voxels[g] / voxels.sum():.3f} "
              f"class_accuracy={right[g] / max(voxels[g], 1):.3f} share_of_class_errors={errors[g] / errors.sum():.3f}")
