"""Ground-truth 2D segments and the Hungarian matching of queries to them."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment
from torch.nn import functional as F

from ..labels import NUM_CLASSES


@dataclass
class Segments2D:
    classes: torch.Tensor   # M class ids
    masks: torch.Tensor     # M x h x w soft masks at the prediction's resolution
    keys: list[tuple[int, int]]  # (class, instance) per segment; instance 0 for stuff


def gt_segments(semantic: torch.Tensor, instance: torch.Tensor, size: tuple[int, int]) -> Segments2D:
    """Things by instance, stuff by class; masks area-pooled to `size`."""
    sem, inst = semantic.long(), instance.long()
    thing = (sem >= 1) & (sem <= 9)
    key = torch.where((sem > 0) & (sem < NUM_CLASSES), sem * 65536 + torch.where(thing, inst, 0), -1)
    ids = key[key >= 0].unique()
    if len(ids) == 0:
        return Segments2D(torch.zeros(0, dtype=torch.long, device=sem.device),
                          torch.zeros(0, *size, device=sem.device), [])
    full = (key[None] == ids[:, None, None]).float()
    masks = F.adaptive_avg_pool2d(full[None], size)[0]
    classes = ids // 65536
    keys = [(int(c), int(i % 65536)) for c, i in zip(classes.tolist(), ids.tolist())]
    return Segments2D(classes, masks, keys)


def _pairwise_mask_costs(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """N x M sigmoid-BCE and dice costs between flattened mask logits and soft targets."""
    p = logits.shape[1]
    pos, neg = F.softplus(-logits), F.softplus(logits)
    bce = (pos @ targets.T + neg @ (1 - targets).T) / p
    prob = logits.sigmoid()
    dice = 1 - (2 * prob @ targets.T + 1) / (prob.sum(-1)[:, None] + targets.sum(-1)[None] + 1)
    return bce, dice


@torch.no_grad()
def hungarian_match(class_logits: torch.Tensor, mask_logits: torch.Tensor, seg: Segments2D,
                    weights: tuple[float, float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(query indices, segment indices) of the optimal assignment for one image."""
    if len(seg.classes) == 0:
        empty = torch.zeros(0, dtype=torch.long, device=class_logits.device)
        return empty, empty
    prob = class_logits.float().softmax(-1)[:, seg.classes]
    bce, dice = _pairwise_mask_costs(mask_logits.float().flatten(1), seg.masks.flatten(1))
    cost = -weights[0] * prob + weights[1] * bce + weights[2] * dice
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    dev = class_logits.device
    return torch.as_tensor(rows, dtype=torch.long, device=dev), torch.as_tensor(cols, dtype=torch.long, device=dev)

