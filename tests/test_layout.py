"""The Manhattan layout on a box room rendered analytically: known floor and wall planes, a depth head's error
added on the walls, and the planes it must recover."""
import math

import numpy as np
import torch

from nvpanoptix3d.geometry import Intrinsics, look_at
from nvpanoptix3d.labels import CEILING, FLOOR, NUM_CLASSES, WALL
from nvpanoptix3d.model.layout import LayoutSettings, ManhattanLayout, fit_plane, get_layout, wall_groups

ROOM = (5.0, 4.0, 2.6)   # x, y, z (m); floor z = 0


def render_room(eye, target):
    """Exact z-depth and class of each 320 x 240 pixel of a camera inside an empty box room."""
    k = Intrinsics.front3d()
    pose = torch.tensor(look_at(np.array(eye), np.array(target)), dtype=torch.float32)
    rays = k.pixel_rays()                                           # camera, z = 1
    world = rays @ pose[:3, :3].T                                  # directions in the world
    origin = pose[:3, 3]
    hits, labels = [], []
    for axis, value, cls in ((2, 0.0, FLOOR), (2, ROOM[2], CEILING), (0, 0.0, WALL), (0, ROOM[0], WALL),
                             (1, 0.0, WALL), (1, ROOM[1], WALL)):
        t = (value - origin[axis]) / world[..., axis]
        hits.append(torch.where(t > 0, t, torch.full_like(t, math.inf)))
        labels.append(cls)
    t, which = torch.stack(hits).min(0)
    return t, torch.tensor(labels)[which], k, pose


def logits_for(label):
    """2D-stage outputs whose semantic inference gives `label`: one query per class present."""
    classes = label.unique()
    class_logits = torch.full((1, len(classes), NUM_CLASSES), -10.0)
    masks = torch.full((1, len(classes), *label.shape), -10.0)
    for q, c in enumerate(classes.tolist()):
        class_logits[0, q, c] = 10.0
        masks[0, q][label == c] = 10.0
    return class_logits, masks


def wall_error(depth, truth, label):
    wall = label == WALL
    return ((depth - truth).abs() / truth)[wall].median().item()


def test_fit_plane_ignores_outliers():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(500, 2, generator=g) * 4
    points = torch.cat([xy, torch.full((500, 1), -1.5)], 1)                  # z = -1.5
    points[:40, 2] += 0.8                                                    # another surface
    normal, offset = fit_plane(points, 6)
    assert abs(abs(normal[2].item()) - 1) < 1e-3
    assert abs(offset.item() / normal[2].item() - (-1.5)) < 5e-3


def test_wall_groups_split_parallel_walls():
    offsets = torch.cat([torch.full((300,), 2.0) + torch.randn(300) * 0.05, torch.full((200,), 3.5)])
    groups = wall_groups(offsets, 100)
    assert [len(g) for g in groups] == [300, 200]


def test_exact_depth_is_kept_and_planes_recovered():
    truth, label, k, pose = render_room([1.5, 1.2, 1.5], [4.0, 3.5, 0.8])
    layout = ManhattanLayout(k)
    planes = layout.fit(truth, label, k.pixel_rays())
    floor = [p for p in planes if p.label == FLOOR][0]
    assert abs(-floor.offset.item() - 1.5) < 0.01                            # the camera's height
    walls = [p for p in planes if p.label == WALL]
    assert 2 <= len(walls) <= 4
    class_logits, masks = logits_for(label)
    out = layout(truth[None], class_logits, masks)[0]
    assert wall_error(out, truth, label) < 1e-3
    assert ((out - truth).abs() / truth)[label == FLOOR].median() < 1e-3


def test_walls_flattened_and_placed_by_the_floor():
    truth, label, k, _ = render_room([1.5, 1.2, 1.5], [4.0, 3.5, 0.8])
    u = torch.arange(320, dtype=torch.float32)[None].expand(240, 320)
    # the depth head's walls: 8% too far, with a wobble along the row; the floor 1% off
    depth = torch.where(label == WALL, truth * (1.08 + 0.04 * torch.sin(u / 25)), truth * 1.01)
    class_logits, masks = logits_for(label)
    wall = label == WALL
    # default: each wall at its own pixels' median distance: flat and square, the head's bias kept
    layout = ManhattanLayout(k)
    walls = [p for p in layout.fit(depth, label, k.pixel_rays()) if p.label == WALL]
    true_walls = [p for p in layout.fit(truth, label, k.pixel_rays()) if p.label == WALL]
    assert len(walls) == len(true_walls) == 2
    for plane, true in zip(walls, true_walls):
        assert plane.normal @ true.normal > 0.9995                           # square to the floor's axes
        assert 1.03 < plane.offset / true.offset < 1.12                      # the head's bias, no more
    ratio = (layout(depth[None], class_logits, masks)[0] / truth)[wall]
    assert (depth / truth)[wall].std() > 0.025 and ratio.std() < 0.02    # the wobble is gone
    # walls at their bases on the floor take the floor's accuracy
    bases = ManhattanLayout(k, LayoutSettings(wall_offset="bases"))(depth[None], class_logits, masks)[0]
    assert wall_error(depth, truth, label) > 0.07
    assert wall_error(bases, truth, label) < 0.02
    assert torch.equal(bases[label == CEILING], depth[label == CEILING])   # no plane for the ceiling


def test_no_floor_no_change():
    truth, label, k, _ = render_room([1.5, 1.2, 1.5], [4.0, 3.5, 0.8])
    label = torch.where(label == FLOOR, torch.full_like(label, 3), label)   # say: a chair, not floor
    class_logits, masks = logits_for(label)
    depth = truth * 1.05
    out = ManhattanLayout(k)(depth[None], class_logits, masks)[0]
    assert torch.equal(out, depth)


def test_walls_choice_keeps_the_floor():
    truth, label, k, _ = render_room([1.5, 1.2, 1.5], [4.0, 3.5, 0.8])
    u = torch.arange(320, dtype=torch.float32)[None].expand(240, 320)
    depth = torch.where(label == WALL, truth * (1 + 0.04 * torch.sin(u / 25)), truth * 1.01)
    class_logits, masks = logits_for(label)
    assert get_layout("off", k) is None
    out = get_layout("walls", k)(depth[None], class_logits, masks)[0]
    assert torch.equal(out[label == FLOOR], depth[label == FLOOR])
    assert wall_error(out, truth, label) < 0.5 * wall_error(depth, truth, label)
    both = get_layout("walls_floor", k)(depth[None], class_logits, masks)[0]
    assert not torch.equal(both[label == FLOOR], depth[label == FLOOR])


def test_bf16_autocast_fits_in_fp32():
    """Training and GPU inference run under bf16 autocast; the fit must still run, in fp32, and agree."""
    truth, label, k, _ = render_room([1.5, 1.2, 1.5], [4.0, 3.5, 0.8])
    depth = torch.where(label == WALL, truth * 1.05, truth)
    class_logits, masks = logits_for(label)
    layout = ManhattanLayout(k)
    plain = layout(depth[None], class_logits, masks)
    with torch.autocast("cpu", torch.bfloat16):
        mixed = layout(depth[None], class_logits, masks)
    assert mixed.dtype == torch.float32
    assert torch.allclose(mixed, plain)
