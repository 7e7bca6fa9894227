"""Training losses: 2D set prediction (Hungarian), depth, and the 3D completion / semantic / instance terms.

All terms are computed for the whole batch at once: per-image Python loops were most of a step's time on
the GPU (kernel launches and synchronisations).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from ..config import ExperimentConfig
from ..data.sample import Batch
from .matching import IMAGE_SHIFT, Matches, gt_segments, hungarian_match, segment_key
from .network import ModelOutput

VOXEL_SHIFT = 24  # 256^3 voxel keys fit in 24 bits; the image index goes above


def set_losses(class_logits, mask_logits, matches: Matches, cfg: ExperimentConfig) -> dict[str, torch.Tensor]:
    """Set losses of every decoder layer at once: class_logits L x B x N x C and mask_logits L x B x N x h x w
    (the layers share the final layer's matching) -> class / mask / dice terms, each a vector of L. One pass
    over the stacked layers instead of eleven: a 2D training step is bound by kernel launches on the GPU."""
    mf = cfg.model.mask_former
    layers, b, n, num_classes = class_logits.shape
    target_classes = torch.zeros(b, n, dtype=torch.long, device=class_logits.device)
    target_classes[matches.image, matches.query] = matches.segments.classes[matches.segment]
    weight = torch.ones(num_classes, device=class_logits.device)
    weight[0] = mf.no_object_weight
    # cross_entropy's weighted mean, per layer: sum of w[target] * nll over the layer / sum of w[target]
    nll = F.cross_entropy(class_logits.float().flatten(0, 2), target_classes.flatten().repeat(layers),
                          weight=weight, reduction="none").view(layers, -1)
    ce = nll.sum(1) / weight[target_classes].sum()
    if len(matches.query) == 0:
        zero = mask_logits.sum() * 0
        return {"class": mf.class_weight * ce, "mask": zero.expand(layers), "dice": zero.expand(layers)}
    logits = mask_logits[:, matches.image, matches.query].flatten(2).float()              # L x M x P
    targets = matches.segments.masks[matches.segment].flatten(1).expand_as(logits)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean((1, 2))
    prob = logits.sigmoid()
    dice = (1 - (2 * (prob * targets).sum(-1) + 1) / (prob.sum(-1) + targets.sum(-1) + 1)).mean(1)
    return {"class": mf.class_weight * ce, "mask": mf.mask_weight * bce, "dice": mf.dice_weight * dice}


def match(out: ModelOutput, batch: Batch, cfg: ExperimentConfig) -> Matches:
    mf = cfg.model.mask_former
    seg = gt_segments(batch.semantic2d, batch.instance2d, tuple(out.out2d.mask_logits.shape[-2:]))
    return hungarian_match(out.out2d.class_logits, out.out2d.mask_logits, seg,
                           (mf.class_weight, mf.mask_weight, mf.dice_weight))


def _weighted_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    return values.mean() if weight is None else (values * weight).sum() / weight.sum()


def depth_loss(pred: torch.Tensor, gt: torch.Tensor, gradient_weight: float = 0.0,
               scale_weight: float = 0.0, absolute_weight: float = 0.0,
               pixel_weight: torch.Tensor | None = None) -> torch.Tensor:
    """pred B x h x w (bilinearly upsampled) against gt B x H x W (0: no truth); pixel_weight (B x H x W) weighs
    the pixels of the log and metre L1 terms (None: alike)."""
    pred = F.interpolate(pred[:, None].float(), size=gt.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    valid = gt > 0
    if not valid.any():
        return pred.sum() * 0
    weight = None if pixel_weight is None else pixel_weight[valid].float()
    diff = torch.log(pred[valid]) - torch.log(gt[valid])
    loss = _weighted_mean(diff.abs(), weight) + 0.5 * (diff.var(unbiased=False) if diff.numel() > 1 else 0.0)
    if gradient_weight or scale_weight:
        log_ratio = torch.where(valid, torch.log(pred) - torch.log(gt.clamp(min=1e-3)), 0.0)
    if gradient_weight:
        loss = loss + gradient_weight * log_gradient_loss(log_ratio, valid)
    if scale_weight:
        loss = loss + scale_weight * image_scale_loss(log_ratio, valid)
    if absolute_weight:
        # metres, not ratios: the voxel grid (and PRQ's tolerance of about 5 cm) sees a far wall's 3% as 15 cm and
        # a near chair's as 4; the log terms weigh the two alike
        loss = loss + absolute_weight * _weighted_mean((pred[valid] - gt[valid]).abs(), weight)
    return loss


def segment_balance_weight(semantic: torch.Tensor, instance: torch.Tensor, power: float) -> torch.Tensor:
    """B x H x W labels -> each pixel's (1 / area of its 2D segment)^power; void pixels form one segment per image."""
    image = torch.arange(semantic.shape[0], device=semantic.device).view(-1, 1, 1)
    key = _image_segment_key(image, semantic, instance)
    _, inverse, counts = key.flatten().unique(return_inverse=True, return_counts=True)
    return counts[inverse].view_as(key).float().pow(-power)


def _image_segment_key(image: torch.Tensor, semantic: torch.Tensor, instance: torch.Tensor) -> torch.Tensor:
    """One key per (image, segment), void / ignore included as one segment per image."""
    return (image << IMAGE_SHIFT) + segment_key(semantic, instance) + 1


def image_scale_loss(log_ratio: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The mean over images of each image's squared mean log(pred / gt): the per-image scale error, which the
    3D stage cannot undo (a room 5% too large puts every wall voxel off) and the batch-wide variance term
    dilutes in the other images' pixels. Images without truth are left out."""
    count = valid.sum((1, 2))
    has = count > 0
    mean = log_ratio.sum((1, 2))[has] / count[has]
    return (mean ** 2).mean()


def log_gradient_loss(log_ratio: torch.Tensor, valid: torch.Tensor, scales: int = 4) -> torch.Tensor:
    """Multi-scale gradient matching of log depth (MegaDepth's): the mean absolute difference of horizontal and
    vertical neighbours of log(pred / gt) at strides 1, 2, 4, 8. Zero when the prediction is the truth times any
    constant, so it asks for the right shape (edges sharp, planes flat) and leaves the scale to the other terms."""
    total = log_ratio.new_zeros(())
    for s in range(scales):
        r, v = log_ratio[:, ::2 ** s, ::2 ** s], valid[:, ::2 ** s, ::2 ** s]
        terms = []
        for dim in (1, 2):
            n = r.shape[dim] - 1
            pair = v.narrow(dim, 1, n) & v.narrow(dim, 0, n)
            terms.append(((r.narrow(dim, 1, n) - r.narrow(dim, 0, n)).abs() * pair, pair))
        count = sum(p.sum() for _, p in terms)
        total = total + sum(t.sum() for t, _ in terms) / count.clamp(min=1)
    return total / scales


def _stacked_truth(batch: Batch):
    """Occupied voxels of the whole batch: (image index, voxel index x 3, semantic, instance)."""
    image = torch.cat([torch.full((len(o),), i, dtype=torch.long, device=o.device)
                       for i, o in enumerate(batch.occupied)])
    return image, torch.cat(batch.occupied), torch.cat(batch.semantic3d), torch.cat(batch.instance3d)


def occupancy_grids(batch: Batch, dims: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense ground-truth occupancy at 64^3 and 128^3 (B x ...) from the sparse 256^3 truth."""
    b = len(batch.occupied)
    dev = batch.images.device
    g64 = torch.zeros(b, *(d // 4 for d in dims), dtype=torch.bool, device=dev)
    g128 = torch.zeros(b, *(d // 2 for d in dims), dtype=torch.bool, device=dev)
    image, occ, _, _ = _stacked_truth(batch)
    a, c = occ // 4, occ // 2
    g64[image, a[:, 0], a[:, 1], a[:, 2]] = True
    g128[image, c[:, 0], c[:, 1], c[:, 2]] = True
    return g64, g128


def _voxel_keys(index: torch.Tensor, side: int) -> torch.Tensor:
    return (index[..., 0] * side + index[..., 1]) * side + index[..., 2]


def fine_truth(out3d, batch: Batch, side: int):
    """Ground truth at the 256^3 candidates of every image: (occupied, semantic, instance), each B x K."""
    image, occ, sem, inst = _stacked_truth(batch)
    gt_keys = (image << VOXEL_SHIFT) + _voxel_keys(occ, side)
    order = gt_keys.argsort()
    gt_keys, sem, inst = gt_keys[order], sem[order], inst[order]
    b = out3d.fine_index.shape[0]
    cand = (torch.arange(b, device=gt_keys.device)[:, None] << VOXEL_SHIFT) + _voxel_keys(out3d.fine_index, side)
    if len(gt_keys) == 0:
        zero = torch.zeros_like(cand)
        return torch.zeros_like(cand, dtype=torch.bool), zero, zero
    pos = torch.searchsorted(gt_keys, cand).clamp(max=len(gt_keys) - 1)
    found = (gt_keys[pos] == cand) & out3d.fine_valid
    return found, torch.where(found, sem[pos], 0), torch.where(found, inst[pos], 0)


def _weighted_bce(logits, target, valid, surface_weight):
    w = valid.float() * (1.0 + surface_weight * target.float())
    loss = F.binary_cross_entropy_with_logits(logits.float(), target.float(), weight=w, reduction="sum")
    return loss / w.sum().clamp(min=1.0)


def _label_losses(o, occ, sem, inst, matches: Matches, label, voxel_weight: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """3D semantic and instance losses on the truly occupied candidates (occ), the only voxels labelled (by
    label(o, occ), the 3D stage's label heads), as means weighted by voxel_weight (B x K; None: alike)."""
    zero = o.fine_logits.sum() * 0
    if not occ.any():
        return zero, zero
    weight = None if voxel_weight is None else voxel_weight[occ]
    semantic_logits, query_logits = label(o, occ)
    sem_loss = _weighted_mean(F.cross_entropy(semantic_logits.float(), sem[occ], reduction="none"), weight)
    if not len(matches.query):
        return sem_loss, zero
    # each occupied voxel's segment -> the query matched to that segment in its image
    seg = matches.segments
    table = (matches.image << IMAGE_SHIFT) + seg.keys[matches.segment]
    order = table.argsort()
    table, query = table[order], matches.query[order]
    image = torch.arange(occ.shape[0], device=occ.device)[:, None].expand_as(occ)
    vkey = (image << IMAGE_SHIFT) + segment_key(sem, inst)
    pos = torch.searchsorted(table, vkey).clamp(max=len(table) - 1)
    hit = occ & (table[pos] == vkey)
    if not hit.any():
        return sem_loss, zero
    inst_loss = F.cross_entropy(query_logits[hit[occ]].float(), query[pos[hit]], reduction="none")
    return sem_loss, _weighted_mean(inst_loss, None if weight is None else weight[hit[occ]])


def label_weights(o, f3) -> torch.Tensor | None:
    """B x K weights of the 256^3 candidates in the label losses (None: alike): occluded_label_weight behind the
    lifted depth."""
    if f3.occluded_label_weight != 1.0 and o.fine_hidden is not None:
        return torch.where(o.fine_hidden, f3.occluded_label_weight, 1.0)
    return None


def losses_3d(out: ModelOutput, batch: Batch, matches: Matches, cfg: ExperimentConfig, g64, g128, label
              ) -> dict:
    f3 = cfg.model.frustum3d
    o = out.out3d
    w64, w128, w256 = f3.completion_weights
    side = f3.grid_dimensions[0]
    loss64 = _weighted_bce(o.coarse_logits, g64, o.coarse_logits > -19.0, f3.surface_weight)
    rows = torch.arange(len(g128), device=g128.device)[:, None]
    mid_gt = g128[rows, o.mid_index[..., 0], o.mid_index[..., 1], o.mid_index[..., 2]]
    # candidates at 128 and 256 are children of (mostly) occupied voxels, already balanced: no extra weight
    loss128 = _weighted_bce(o.mid_logits, mid_gt, o.mid_logits > -19.0, 0.0)
    occ, sem, inst = fine_truth(o, batch, side)
    loss256 = _weighted_bce(o.fine_logits, occ, o.fine_valid, 0.0)
    sem_loss, inst_loss = _label_losses(o, occ, sem, inst, matches, label, label_weights(o, f3))
    return {"occ64": w64 * loss64, "occ128": w128 * loss128, "occ256": w256 * loss256,
            "sem3d": f3.panoptic_weight * sem_loss, "inst3d": f3.panoptic_weight * inst_loss}


def losses_2d(out: ModelOutput, batch: Batch, matches: Matches, cfg: ExperimentConfig) -> dict:
    o = out.out2d
    classes, masks = zip(*o.aux, (o.class_logits, o.mask_logits))  # every decoder layer, the final one last
    per_layer = set_losses(torch.stack(classes), torch.stack(masks), matches, cfg)
    losses = {k: v[-1] for k, v in per_layer.items()}
    if o.aux:  # earlier decoder layers: deep supervision, summed
        losses.update({f"{k}_aux": v[:-1].sum() for k, v in per_layer.items()})
    if batch.depths is not None:
        head = cfg.model.depth_head
        balance = None
        if head.segment_balance and batch.has_2d_truth:
            balance = segment_balance_weight(batch.semantic2d, batch.instance2d, head.segment_balance)
        losses["depth"] = head.weight * depth_loss(o.depth, batch.depths, head.gradient_weight, head.scale_weight,
                                                   head.absolute_weight, balance)
    return losses


def compute_losses(out: ModelOutput, batch: Batch, cfg: ExperimentConfig, g64=None, g128=None, label=None) -> dict:
    """label: the 3D stage's Frustum3D.label, which labels the voxels the 3D losses read (needed with out.out3d)."""
    matches = match(out, batch, cfg)  # the 3D instance loss reads the matching too
    losses = {} if cfg.train.freeze_2d else losses_2d(out, batch, matches, cfg)
    if out.out3d is not None and batch.has_3d_truth:
        losses.update(losses_3d(out, batch, matches, cfg, g64, g128, label))
    return losses
