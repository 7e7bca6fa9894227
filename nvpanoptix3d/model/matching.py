"""Ground-truth 2D segments of a whole batch and the Hungarian matching of queries to them.

Everything is computed for the batch at once (segments carry their image index); only the assignment itself
runs per image on the CPU, after one transfer.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment
from torch.nn import functional as F

from ..labels import NUM_CLASSES, THING_CLASSES

IMAGE_SHIFT = 20          # segment key = image << 20 | class * 65536 + instance
CLASS_STRIDE = 65536


def segment_key(semantic: torch.Tensor, instance: torch.Tensor) -> torch.Tensor:
    """class * 65536 + instance for things, class * 65536 for stuff, -1 for void / ignore."""
    sem = semantic.long()
    thing = (sem >= 1) & (sem <= len(THING_CLASSES))
    return torch.where((sem > 0) & (sem < NUM_CLASSES), sem * CLASS_STRIDE + torch.where(thing, instance.long(), 0), -1)


@dataclass
class Segments:
    image: torch.Tensor     # M image index per segment
    classes: torch.Tensor   # M class ids
    keys: torch.Tensor      # M segment keys (without the image)
    masks: torch.Tensor     # M x h x w soft masks at the prediction's resolution
    counts: list[int]       # segments per image


def gt_segments(semantic: torch.Tensor, instance: torch.Tensor, size: tuple[int, int]) -> Segments:
    """B x H x W labels -> every segment of the batch; masks area-pooled to `size`."""
    b = semantic.shape[0]
    key = segment_key(semantic, instance)
    image = torch.arange(b, device=key.device).view(b, 1, 1)
    bkey = torch.where(key >= 0, (image << IMAGE_SHIFT) + key, -1)
    ids = bkey[bkey >= 0].unique()
    seg_image = ids >> IMAGE_SHIFT
    local = ids & ((1 << IMAGE_SHIFT) - 1)
    full = (bkey[seg_image] == ids[:, None, None]).float()
    masks = F.adaptive_avg_pool2d(full[None], size)[0] if len(ids) else full.new_zeros(0, *size)
    counts = torch.bincount(seg_image, minlength=b).tolist()
    return Segments(seg_image, local // CLASS_STRIDE, local, masks, counts)


@dataclass
class Matches:
    """Matched pairs over the whole batch: query (image, index) <-> segment index into Segments."""
    segments: Segments
    image: torch.Tensor
    query: torch.Tensor
    segment: torch.Tensor


@torch.no_grad()
def hungarian_match(class_logits: torch.Tensor, mask_logits: torch.Tensor, seg: Segments,
                    weights: tuple[float, float, float]) -> Matches:
    dev = class_logits.device
    b, n, _ = class_logits.shape
    empty = torch.zeros(0, dtype=torch.long, device=dev)
    if len(seg.classes) == 0:
        return Matches(seg, empty, empty, empty)
    m_max = max(seg.counts)
    # pad segments per image so one batched product gives every image's cost matrix
    starts = torch.tensor([0] + seg.counts[:-1], device=dev).cumsum(0)
    slot = torch.arange(len(seg.classes), device=dev) - starts[seg.image]
    p = seg.masks[0].numel()
    targets = torch.zeros(b, m_max, p, device=dev)
    targets[seg.image, slot] = seg.masks.flatten(1)
    classes = torch.zeros(b, m_max, dtype=torch.long, device=dev)
    classes[seg.image, slot] = seg.classes
    logits = mask_logits.float().flatten(2)                                   # B x N x P
    prob = class_logits.float().softmax(-1).gather(2, classes[:, None, :].expand(b, n, m_max))
    pos, neg = F.softplus(-logits), F.softplus(logits)
    bce = (pos @ targets.transpose(1, 2) + neg @ (1 - targets).transpose(1, 2)) / p
    sig = logits.sigmoid()
    dice = 1 - (2 * sig @ targets.transpose(1, 2) + 1) / (sig.sum(-1)[..., None] + targets.sum(-1)[:, None] + 1)
    cost = (-weights[0] * prob + weights[1] * bce + weights[2] * dice).cpu().numpy()
    images, queries, segments = [], [], []
    for i, count in enumerate(seg.counts):
        if count == 0:
            continue
        rows, cols = linear_sum_assignment(cost[i, :, :count])
        images += [i] * len(rows)
        queries += rows.tolist()
        segments += (cols + int(starts[i])).tolist()
    as_tensor = lambda xs: torch.tensor(xs, dtype=torch.long, device=dev)  # noqa: E731
    return Matches(seg, as_tensor(images), as_tensor(queries), as_tensor(segments))
