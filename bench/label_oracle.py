"""What the 3D stage's labels cost: PRQ of its output as it is, and of the same occupied voxels with perfect labels
(each predicted voxel takes the semantic class and instance of the nearest true occupied voxel), and with perfect
grouping but predicted classes (voxels grouped by the nearest true segment, each group given the majority of its
voxels' predicted classes): product -> grouping is what instance / segment assignment costs, grouping -> perfect
what the classes cost.

    python bench/label_oracle.py [--checkpoint PATH] [--frames 48] [--depth predicted|ground_truth]

Product -> perfect labels is what better 3D semantic / instance labels could gain on today's geometry; what is
left below 1 with perfect labels is the geometry's (occupancy) share.
"""
import numpy as np
import torch
from engine_common import checkpoint_parser, held_out
from scipy import ndimage

from nvpanoptix3d.data import collate
from nvpanoptix3d.model.postprocess import majority_class, panoptic_3d


def nearest_truth_labels(pred_index, gt_index, gt_semantic, gt_instance, dims):
    """Labels of the nearest true occupied voxel (Euclidean, in voxels) at each predicted voxel."""
    empty = np.ones(dims, dtype=bool)
    i, j, k = gt_index.cpu().numpy().T
    empty[i, j, k] = False
    nearest = ndimage.distance_transform_edt(empty, return_distances=False, return_indices=True)
    semantic = np.zeros(dims, dtype=np.int64)
    instance = np.zeros(dims, dtype=np.int64)
    semantic[i, j, k] = gt_semantic.cpu().numpy()
    instance[i, j, k] = gt_instance.cpu().numpy()
    p = pred_index.cpu().numpy()
    at = tuple(nearest[:, p[:, 0], p[:, 1], p[:, 2]])
    return torch.from_numpy(semantic[at]), torch.from_numpy(instance[at])


def majority_class_per_group(true_semantic, true_instance, predicted_semantic):
    """Voxels grouped by their true segment (class, instance), each group the majority predicted class; the
    group's id is its instance (classes that are stuff ignore it)."""
    _, group = torch.unique(torch.stack([true_semantic, true_instance], -1), dim=0, return_inverse=True)
    return majority_class(group, predicted_semantic), group + 1


if __name__ == "__main__":
    p = checkpoint_parser(48, __doc__)
    p.add_argument("--depth", choices=("predicted", "ground_truth"), default="predicted")
    args = p.parse_args()
    module, dataset, device = held_out(args.checkpoint, tuple(args.set))
    dims = tuple(module.cfg.model.frustum3d.grid_dimensions)
    names = ("product_labels", "true_grouping_predicted_classes", "nearest_true_labels")
    metrics = {name: module.new_metrics() for name in names}
    with torch.no_grad():
        for n in range(args.frames):
            batch = collate([dataset[n]]).to(device)
            truth = (batch.occupied[0], batch.semantic3d[0], batch.instance3d[0])
            if args.depth == "ground_truth":
                out = module.model(batch.images, gt_depth=batch.depths, teacher=torch.ones(1, dtype=torch.bool))
            else:
                out = module.model(batch.images)
            p3 = panoptic_3d(out.out2d, out.out3d, 0, module.cfg)
            semantic, instance = nearest_truth_labels(p3.index, *truth, dims)
            semantic, instance = semantic.to(device), instance.to(device)
            labels = {"product_labels": (p3.semantic, p3.instance),
                      "true_grouping_predicted_classes": majority_class_per_group(semantic, instance, p3.semantic),
                      "nearest_true_labels": (semantic, instance)}
            for name, (sem, inst) in labels.items():
                metrics[name].add_3d(*truth, p3.index, sem, inst)
    for name, metric in metrics.items():
        m = metric.summary()
        print(f"frames={args.frames} depth={args.depth} {name} prq={m['prq']:.3f} rsq={m['rsq']:.3f} "
              f"rrq={m['rrq']:.3f} prq_things={m['prq_things']:.3f} prq_stuff={m['prq_stuff']:.3f} "
              f"occupancy_iou={m['occupancy_iou']:.3f} semantic_miou={m['semantic_miou']:.3f}")
