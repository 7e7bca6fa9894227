"""Segment-guided depth upsampling (model/segment_depth.py) on hand-built depth maps and query masks."""
import torch
from torch.nn import functional as F

from nvpanoptix3d.labels import NUM_CLASSES, WALL
from nvpanoptix3d.model.segment_depth import (SegmentDepthUpsampler, clean_outlines, segment_owners,
                                              upsample_by_segment)

CHAIR = 3


def two_segments(h=6, w=8, split=4):
    """A chair (query 0) left of column `split`, a wall (queries 1 and 2, both wall) right of it; query 3 is
    'no object'."""
    class_logits = torch.full((1, 4, NUM_CLASSES), -10.0)
    class_logits[0, 0, CHAIR] = class_logits[0, 1, WALL] = class_logits[0, 2, WALL] = 10.0
    class_logits[0, 3, 0] = 10.0
    masks = torch.full((1, 4, h, w), -10.0)
    masks[0, 0, :, :split] = 10.0
    masks[0, 1, :h // 2, split:] = 10.0
    masks[0, 2, h // 2:, split:] = 10.0
    return class_logits, masks


def test_owners_are_queries_for_things_and_classes_for_stuff():
    class_logits, masks = two_segments()
    owner = segment_owners(class_logits, masks, (6, 8))[0]
    assert (owner[:, :4] == 0).all()
    assert (owner[:, 4:] == 4 + WALL).all()          # both wall queries are one segment


def test_outline_pixels_take_their_segments_interior_depth():
    class_logits, masks = two_segments()
    owner = segment_owners(class_logits, masks, (6, 8))
    depth = torch.full((1, 6, 8), 2.0)
    depth[0, :, 4:] = 4.0
    depth[0, :, 3], depth[0, :, 4] = 2.8, 3.3         # the depth head's blur across the outline
    clean = clean_outlines(depth, owner, steps=2)[0]
    assert torch.equal(clean[:, :4], torch.full((6, 4), 2.0))
    assert torch.equal(clean[:, 4:], torch.full((6, 4), 4.0))


def test_a_segment_without_interior_keeps_its_depth():
    """A one-pixel-wide segment has no pixel whose neighbours are all its own: nothing to spread."""
    class_logits, masks = two_segments(split=1)
    owner = segment_owners(class_logits, masks, (6, 8))
    depth = torch.full((1, 6, 8), 4.0)
    depth[0, :, 0] = 2.5
    clean = clean_outlines(depth, owner, steps=3)[0]
    assert torch.equal(clean[:, 0], torch.full((6,), 2.5))


def test_inside_one_segment_it_is_bilinear_upsampling():
    class_logits = torch.full((1, 1, NUM_CLASSES), -10.0)
    class_logits[0, 0, WALL] = 10.0
    masks = torch.full((1, 1, 6, 8), 10.0)
    torch.manual_seed(0)
    depth = 2 + torch.rand(1, 6, 8)
    up = SegmentDepthUpsampler((24, 32))(depth, class_logits, masks)
    plain = F.interpolate(depth[:, None], size=(24, 32), mode="bilinear", align_corners=False)[:, 0]
    assert up.shape == (1, 24, 32)
    assert (up - plain).abs().max() < 1e-3           # only the far pixels' 1e-4 tie-break weight differs


def test_each_pixel_takes_depth_from_its_own_segment_only():
    """The outline at full resolution falls inside a depth pixel: pixels left of it get the chair's depth, right
    of it the wall's, where bilinear upsampling blends the two over two depth pixels."""
    h, w, scale = 6, 8, 4
    owner_low = torch.zeros(1, h, w, dtype=torch.long)
    owner_low[0, :, 4:] = 1
    owner_high = torch.zeros(1, h * scale, w * scale, dtype=torch.long)
    owner_high[0, :, 15:] = 1                        # the true outline, a pixel left of the depth pixels' edge
    depth = torch.full((1, h, w), 2.0)
    depth[0, :, 4:] = 4.0
    up = upsample_by_segment(depth, owner_low, owner_high)[0]
    assert torch.allclose(up[:, :15], torch.tensor(2.0), atol=1e-3)
    assert torch.allclose(up[:, 15:], torch.tensor(4.0), atol=1e-3)
    plain = F.interpolate(depth[:, None], size=(h * scale, w * scale), mode="bilinear", align_corners=False)[0, 0]
    assert 2.1 < float(plain[0, 14]) < 3.9           # what the lifting read before: a surface in free space


def test_the_depth_loss_through_segments_asks_each_segment_for_its_own_depth():
    """A chair at 2 m before a wall at 4 m, their outline between two depth pixels. A depth head that predicts
    each depth pixel exactly still pays the bilinear loss (the outline blends the two), and nothing through the
    segment-guided upsampling, whose chair pixels answer to the chair's depth pixels alone."""
    from functools import partial

    from nvpanoptix3d.model.losses import depth_loss
    class_logits, masks = two_segments()
    gt = torch.full((1, 24, 32), 2.0)
    gt[0, :, 16:] = 4.0
    pred = torch.full((1, 6, 8), 2.0)
    pred[0, :, 4:] = 4.0
    pred.requires_grad_(True)
    segments = SegmentDepthUpsampler((24, 32))
    through = partial(segments.upsample, class_logits=class_logits, mask_logits=masks)
    assert float(depth_loss(pred, gt)) > 0.01
    loss = depth_loss(pred, gt, upsample=through)
    assert float(loss) < 1e-6
    depth = pred.detach().clone().requires_grad_(True)
    through(depth)[0, :, :16].sum().backward()            # the chair's image pixels
    assert (depth.grad[0, :, :3] > 0).all()               # the chair's inner depth pixels
    assert (depth.grad[0, :, 3:] == 0).all()              # its outline pixel (replaced) and the wall's: none
    plain = pred.detach().clone().requires_grad_(True)
    F.interpolate(plain[:, None], size=(24, 32), mode="bilinear", align_corners=False)[0, 0, :, :16].sum().backward()
    assert (plain.grad[0, :, 4] > 0).all()                # bilinear: the wall's depth answers for chair pixels
