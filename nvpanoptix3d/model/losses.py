"""Training losses: 2D set prediction (Hungarian), depth, and the 3D completion / semantic / instance terms."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ..config import ExperimentConfig
from ..data.sample import Batch
from .matching import Segments2D, gt_segments, hungarian_match
from .network import ModelOutput


@dataclass
class Matches:
    """Per image: GT segments and which query each was matched to."""
    segments: list[Segments2D]
    queries: list[torch.Tensor]
    targets: list[torch.Tensor]


def _mask_losses(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(-1)
    prob = logits.sigmoid()
    dice = 1 - (2 * (prob * targets).sum(-1) + 1) / (prob.sum(-1) + targets.sum(-1) + 1)
    return bce.sum(), dice.sum()


def set_losses(class_logits, mask_logits, matches: Matches, cfg: ExperimentConfig) -> dict[str, torch.Tensor]:
    mf = cfg.model.mask_former
    b, n, num_classes = class_logits.shape
    target_classes = torch.zeros(b, n, dtype=torch.long, device=class_logits.device)
    weight = torch.ones(num_classes, device=class_logits.device)
    weight[0] = mf.no_object_weight
    bce_sum = dice_sum = class_logits.new_zeros(())
    count = 0
    for i in range(b):
        q, t = matches.queries[i], matches.targets[i]
        if len(q) == 0:
            continue
        target_classes[i, q] = matches.segments[i].classes[t]
        bce, dice = _mask_losses(mask_logits[i, q].flatten(1).float(), matches.segments[i].masks[t].flatten(1))
        bce_sum, dice_sum, count = bce_sum + bce, dice_sum + dice, count + len(q)
    ce = F.cross_entropy(class_logits.float().transpose(1, 2), target_classes, weight=weight)
    count = max(count, 1)
    return {"class": mf.class_weight * ce, "mask": mf.mask_weight * bce_sum / count,
            "dice": mf.dice_weight * dice_sum / count}


def match(out: ModelOutput, batch: Batch, cfg: ExperimentConfig) -> Matches:
    mf = cfg.model.mask_former
    size = out.out2d.mask_logits.shape[-2:]
    segs, queries, targets = [], [], []
    for i in range(batch.images.shape[0]):
        seg = gt_segments(batch.semantic2d[i], batch.instance2d[i], size)
        q, t = hungarian_match(out.out2d.class_logits[i], out.out2d.mask_logits[i], seg,
                               (mf.class_weight, mf.mask_weight, mf.dice_weight))
        segs.append(seg)
        queries.append(q)
        targets.append(t)
    return Matches(segs, queries, targets)


def depth_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    pred = F.interpolate(pred[:, None].float(), size=gt.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    valid = gt > 0
    if not valid.any():
        return pred.sum() * 0
    diff = torch.log(pred[valid]) - torch.log(gt[valid])
    return diff.abs().mean() + 0.5 * (diff.var(unbiased=False) if diff.numel() > 1 else 0.0)


def occupancy_grids(batch: Batch, dims: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense ground-truth occupancy at 64^3 and 128^3 (B x ...) from the sparse 256^3 truth."""
    b = len(batch.occupied)
    dev = batch.images.device
    g64 = torch.zeros(b, *(d // 4 for d in dims), dtype=torch.bool, device=dev)
    g128 = torch.zeros(b, *(d // 2 for d in dims), dtype=torch.bool, device=dev)
    for i, occ in enumerate(batch.occupied):
        a, c = occ // 4, occ // 2
        g64[i, a[:, 0], a[:, 1], a[:, 2]] = True
        g128[i, c[:, 0], c[:, 1], c[:, 2]] = True
    return g64, g128


def _keys(index: torch.Tensor, side: int) -> torch.Tensor:
    return (index[..., 0] * side + index[..., 1]) * side + index[..., 2]


def fine_truth(out3d, batch: Batch, side: int, i: int):
    """Ground truth at image i's 256^3 candidates: (occupied, semantic, instance) per candidate."""
    gt_keys = _keys(batch.occupied[i], side)
    order = gt_keys.argsort()
    gt_keys = gt_keys[order]
    cand = _keys(out3d.fine_index[i], side)
    pos = torch.searchsorted(gt_keys, cand).clamp(max=max(len(gt_keys) - 1, 0))
    found = (gt_keys[pos] == cand) if len(gt_keys) else torch.zeros_like(cand, dtype=torch.bool)
    sem = torch.where(found, batch.semantic3d[i][order][pos], 0) if len(gt_keys) else torch.zeros_like(cand)
    inst = torch.where(found, batch.instance3d[i][order][pos], 0) if len(gt_keys) else torch.zeros_like(cand)
    return found & out3d.fine_valid[i], sem, inst


def _weighted_bce(logits, target, valid, surface_weight):
    w = valid.float() * (1.0 + surface_weight * target.float())
    loss = F.binary_cross_entropy_with_logits(logits.float(), target.float(), weight=w, reduction="sum")
    return loss / w.sum().clamp(min=1.0)


def losses_3d(out: ModelOutput, batch: Batch, matches: Matches, cfg: ExperimentConfig, g64, g128) -> dict:
    f3 = cfg.model.frustum3d
    o = out.out3d
    w64, w128, w256 = f3.completion_weights
    side = f3.grid_dimensions[0]
    mask64 = o.coarse_logits > -19.0
    loss64 = _weighted_bce(o.coarse_logits, g64, mask64, f3.surface_weight)
    mid_gt = torch.stack([g128[i][o.mid_index[i, :, 0], o.mid_index[i, :, 1], o.mid_index[i, :, 2]]
                          for i in range(len(g128))])
    # candidates at 128 and 256 are children of (mostly) occupied voxels, already balanced: no extra weight
    loss128 = _weighted_bce(o.mid_logits, mid_gt, o.mid_logits > -19.0, 0.0)
    occ_terms, sem_terms, inst_terms = [], [], []
    for i in range(len(batch.occupied)):
        occ, sem, inst = fine_truth(o, batch, side, i)
        occ_terms.append(_weighted_bce(o.fine_logits[i], occ, o.fine_valid[i], 0.0))
        if occ.any():
            sem_terms.append(F.cross_entropy(o.semantic_logits[i][occ].float(), sem[occ]))
        seg = matches.segments[i]
        if len(matches.queries[i]) and occ.any():
            # voxel segment key as in gt_segments: class * 65536 + instance (0 for stuff)
            thing = (sem >= 1) & (sem <= 9)
            vkey = sem * 65536 + torch.where(thing, inst, 0)
            keys = torch.tensor([c * 65536 + k for c, k in seg.keys], device=sem.device)[matches.targets[i]]
            order = keys.argsort()
            keys, qidx = keys[order], matches.queries[i][order]
            pos = torch.searchsorted(keys, vkey).clamp(max=len(keys) - 1)
            hit = occ & (keys[pos] == vkey)
            if hit.any():
                inst_terms.append(F.cross_entropy(o.query_logits[i][hit].float(), qidx[pos[hit]]))
    mean = lambda xs: torch.stack(xs).mean() if xs else o.fine_logits.sum() * 0  # noqa: E731
    return {"occ64": w64 * loss64, "occ128": w128 * loss128, "occ256": w256 * mean(occ_terms),
            "sem3d": f3.panoptic_weight * mean(sem_terms), "inst3d": f3.panoptic_weight * mean(inst_terms)}


def compute_losses(out: ModelOutput, batch: Batch, cfg: ExperimentConfig, g64=None, g128=None) -> dict:
    matches = match(out, batch, cfg)
    losses = set_losses(out.out2d.class_logits, out.out2d.mask_logits, matches, cfg)
    for layer, (cls, masks) in enumerate(out.out2d.aux):
        aux = set_losses(cls, masks, matches, cfg)
        losses.update({f"{k}_aux{layer}": v for k, v in aux.items()})
    if batch.depths is not None:
        losses["depth"] = cfg.model.depth_head.weight * depth_loss(out.out2d.depth, batch.depths)
    if out.out3d is not None and batch.has_3d_truth:
        losses.update(losses_3d(out, batch, matches, cfg, g64, g128))
    return losses
