"""Segment-guided depth upsampling before lifting (`model.depth_head.segment_upsample`).

Why: the depth head predicts at a quarter of the image (80 x 60 for 320 x 240; half with the image guide,
`model.depth_head.guide_channels`), so one depth pixel spans about 6 cm at 4 m (3 cm at half) and a depth pixel on
an object's outline mixes the object with what lies behind it. Lifted, such pixels put surfaces in the free space
between the two, and thin parts (legs, backs) take the background's depth. The query masks have sharper outlines
than the depth map, so each full-resolution pixel takes its depth only from depth pixels of its own segment: first
every outline pixel's depth is replaced by its segment's interior depth (spread outward a few pixels), then each
full-resolution pixel averages its bilinear neighbours that belong to its segment. No weights: it reads the depth,
class and mask outputs of any checkpoint.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from .postprocess import THING_TABLE, kept_queries


def segment_owners(class_logits: torch.Tensor, mask_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """B x h x w segment id of each pixel at `size`: the query of highest score x mask probability (Mask2Former's
    panoptic fusion, without thresholds), things by query, stuff by class (several queries may share a wall)."""
    _, label, score = kept_queries(class_logits, 0.0)
    n = class_logits.shape[1]
    query = torch.arange(n, device=label.device).expand_as(label)
    key = torch.where(THING_TABLE.to(label.device)[label], query, n + label)            # B x N
    masks = F.interpolate(mask_logits.float(), size=size, mode="bilinear", align_corners=False).sigmoid()
    winner = (score[..., None, None] * masks).argmax(1)                                  # B x h x w
    return key.gather(1, winner.flatten(1)).view_as(winner)


def _neighbours(x: torch.Tensor, fill: float | None) -> torch.Tensor:
    """B x h x w -> B x 9 x h x w: the 3 x 3 neighbourhood of each pixel (past the border: `fill`, or the border
    pixel itself when None)."""
    b, h, w = x.shape
    x = x[:, None].float()
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate") if fill is None else F.pad(x, (1, 1, 1, 1), value=fill)
    return F.unfold(padded, 3).view(b, 9, h, w)


def clean_outlines(depth: torch.Tensor, owner: torch.Tensor, steps: int) -> torch.Tensor:
    """Outline pixels (a neighbour of another segment; the image's border is none) take the mean depth of their
    segment's pixels one step further in, spread outward `steps` times; pixels no interior reaches keep theirs."""
    own_nb = _neighbours(owner, None)
    known = (own_nb == owner[:, None]).all(1)
    out = torch.where(known, depth.float(), torch.zeros_like(depth, dtype=torch.float32))
    for _ in range(steps):
        same = (_neighbours(known, 0) > 0.5) & (own_nb == owner[:, None])
        count = same.sum(1)
        mean = (_neighbours(out, 0) * same).sum(1) / count.clamp(min=1)
        grow = ~known & (count > 0)
        out = torch.where(grow, mean, out)
        known = known | grow
    return torch.where(known, out, depth.float())


def upsample_by_segment(depth: torch.Tensor, owner_low: torch.Tensor, owner_high: torch.Tensor) -> torch.Tensor:
    """B x h x w depth -> B x H x W: each pixel's bilinear weights over the 3 x 3 low-resolution pixels around it
    (zero beyond the nearest 2 x 2), kept only where the low-resolution pixel is of the pixel's own segment; a
    pixel whose 2 x 2 holds none of its segment takes those of the 3 x 3 that are, weighted by closeness; one
    with none of them takes plain bilinear."""
    b, h, w = depth.shape
    big_h, big_w = owner_high.shape[-2:]
    dev = depth.device
    ys = (torch.arange(big_h, device=dev, dtype=torch.float32) + 0.5) * h / big_h - 0.5
    xs = (torch.arange(big_w, device=dev, dtype=torch.float32) + 0.5) * w / big_w - 0.5
    cy, cx = ys.round().long(), xs.round().long()
    weights, values = [], []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            qy, qx = (cy + dy).clamp(0, h - 1), (cx + dx).clamp(0, w - 1)
            ty = (1 - (ys - (cy + dy)).abs()).clamp(min=0)
            tx = (1 - (xs - (cx + dx)).abs()).clamp(min=0)
            dist2 = (ys - (cy + dy))[:, None] ** 2 + (xs - (cx + dx))[None] ** 2
            # bilinear weight, plus a small distance-ranked one so that further pixels of the segment count
            # only when the nearest 2 x 2 holds none of it
            weight = ty[:, None] * tx[None] + 1e-4 * torch.exp(-dist2)
            match = owner_low[:, qy][:, :, qx] == owner_high
            weights.append(weight * match)
            values.append(depth[:, qy][:, :, qx].float())
    weights, values = torch.stack(weights, 1), torch.stack(values, 1)
    total = weights.sum(1)
    plain = F.interpolate(depth[:, None].float(), size=(big_h, big_w), mode="bilinear", align_corners=False)[:, 0]
    return torch.where(total > 0, (weights * values).sum(1) / total.clamp(min=1e-12), plain)


class SegmentDepthUpsampler:
    """Depth B x h x w at the depth head's resolution -> B x H x W at `size` (the image's), outlines by segment."""

    # steps: how far outline depth is replaced; 2 of 0-4 on 96 validation frames (bench_segment_upsample_cpu.txt)
    def __init__(self, size: tuple[int, int], steps: int = 2):
        self.size, self.steps = size, steps

    @torch.no_grad()
    def __call__(self, depth: torch.Tensor, class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
        return self.upsample(depth, class_logits, mask_logits)

    def upsample(self, depth: torch.Tensor, class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
        """As a call, with gradients to the depth (the depth loss compares this with the truth): each segment's
        depth pixels answer for its own image pixels, and outline depth pixels, which it replaces, for none."""
        with torch.autocast(depth.device.type, enabled=False):
            with torch.no_grad():
                owner_low = segment_owners(class_logits, mask_logits, depth.shape[-2:])
                owner_high = segment_owners(class_logits, mask_logits, self.size)
            clean = clean_outlines(depth, owner_low, self.steps)
            return upsample_by_segment(clean, owner_low, owner_high).to(depth.dtype)


def get_segment_upsampler(enabled: bool, size: tuple[int, int]) -> SegmentDepthUpsampler | None:
    return SegmentDepthUpsampler(size) if enabled else None
