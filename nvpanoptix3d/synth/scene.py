"""Procedural indoor rooms with furniture of the nine 3D-FRONT thing classes, built from oriented boxes.

Every object is a parametric family (tables with legs, chairs with seat and back, beds with a headboard, ...)
sized in real-world ranges, placed on the floor or against a wall, never overlapping another object.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..geometry import look_at
from ..labels import CEILING, FLOOR, WALL

ROOM_SIZE = (3.0, 9.0)
ROOM_HEIGHT = (2.4, 3.2)


@dataclass
class Part:
    """An oriented box: centre (world, z up), half extents in its own frame, yaw about z."""
    center: np.ndarray
    half: np.ndarray
    yaw: float
    label: int
    instance: int
    color: np.ndarray   # RGB in [0, 1]
    texture: int        # 0 plain, 1 stripes, 2 checker, 3 wood grain


@dataclass
class Opening:
    """A door or window drawn on a wall: wall index 0..3, horizontal centre along it, bottom, width, height."""
    wall: int
    along: float
    bottom: float
    width: float
    height: float
    color: np.ndarray


@dataclass
class Scene:
    size: np.ndarray            # room (x, y, z) extent; the room spans [0, size]
    parts: list[Part]
    openings: list[Opening]
    stuff_colors: dict          # label -> RGB
    stuff_textures: dict        # label -> texture id
    lights: np.ndarray          # L x 3 world positions
    camera_zone: np.ndarray     # x0, y0, x1, y1 kept free of furniture so a camera always fits
    instances: dict = field(default_factory=dict)  # instance id -> label

    def footprints(self) -> list[np.ndarray]:
        return [_footprint(p) for p in self.parts]


def _footprint(p: Part) -> np.ndarray:
    c, s = abs(math.cos(p.yaw)), abs(math.sin(p.yaw))
    hx = c * p.half[0] + s * p.half[1]
    hy = s * p.half[0] + c * p.half[1]
    return np.array([p.center[0] - hx, p.center[1] - hy, p.center[0] + hx, p.center[1] + hy])


def _random_color(rng: np.random.Generator) -> np.ndarray:
    hue = rng.random()
    sat = rng.uniform(0.15, 0.8)
    val = rng.uniform(0.3, 0.95)
    i = int(hue * 6) % 6
    f = hue * 6 - int(hue * 6)
    p, q, t = val * (1 - sat), val * (1 - f * sat), val * (1 - (1 - f) * sat)
    return np.array([(val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val), (val, p, q)][i])


def _box(local_center, half, origin, yaw, label, inst, color, tex) -> Part:
    c, s = math.cos(yaw), math.sin(yaw)
    lx, ly, lz = local_center
    world = np.array([origin[0] + c * lx - s * ly, origin[1] + s * lx + c * ly, lz])
    return Part(world, np.array(half, dtype=np.float64), yaw, label, inst, color, tex)


# Each family: (label, size ranges (width x depth x height), builder). Builders return parts in an object
# frame whose origin is the footprint centre on the floor, front facing -y.
def _legs(w, d, t, h, add):
    for sx in (-1, 1):
        for sy in (-1, 1):
            add((sx * (w / 2 - t), sy * (d / 2 - t), h / 2), (t, t, h / 2))


def _table(w, d, h, add, rng):
    top = rng.uniform(0.025, 0.05)
    add((0, 0, h - top / 2), (w / 2, d / 2, top / 2))
    _legs(w, d, rng.uniform(0.02, 0.04), h - top, add)


def _chair(w, d, h, add, rng):
    seat_h = rng.uniform(0.42, 0.5)
    t = rng.uniform(0.02, 0.03)
    add((0, 0, seat_h), (w / 2, d / 2, 0.03))
    _legs(w, d, t, seat_h - 0.03, add)
    add((0, d / 2 - 0.03, (seat_h + h) / 2), (w / 2, 0.03, (h - seat_h) / 2))


def _bed(w, d, h, add, rng):
    base = rng.uniform(0.25, 0.35)
    add((0, 0, base / 2), (w / 2, d / 2, base / 2))
    add((0, -0.02, base + 0.1), (w / 2 - 0.03, d / 2 - 0.05, 0.1))
    add((0, d / 2 - 0.04, h / 2), (w / 2, 0.04, h / 2))
    add((0, d / 2 - 0.3, base + 0.25), (w / 2 - 0.15, 0.12, 0.06))  # pillow


def _sofa(w, d, h, add, rng):
    seat = rng.uniform(0.38, 0.46)
    arm = rng.uniform(0.1, 0.2)
    add((0, 0, seat / 2), (w / 2 - arm, d / 2, seat / 2))
    add((0, d / 2 - 0.1, h / 2), (w / 2, 0.1, h / 2))
    for sx in (-1, 1):
        add((sx * (w / 2 - arm / 2), 0, seat * 0.8), (arm / 2, d / 2, seat * 0.8))


def _cabinet(w, d, h, add, rng):
    add((0, 0, h / 2 + 0.05), (w / 2, d / 2, h / 2 - 0.05))
    add((0, 0.01, 0.025), (w / 2 - 0.02, d / 2 - 0.02, 0.025))  # plinth
    add((0, -d / 2 - 0.01, h * 0.6), (0.015, 0.01, 0.08))       # handle


def _desk(w, d, h, add, rng):
    top = 0.03
    add((0, 0, h - top / 2), (w / 2, d / 2, top / 2))
    for sx in (-1, 1):
        add((sx * (w / 2 - 0.02), 0, (h - top) / 2), (0.02, d / 2 - 0.01, (h - top) / 2))
    add((w / 4, 0, h - top - 0.1), (w / 4 - 0.04, d / 2 - 0.03, 0.1))  # drawer block


def _dresser(w, d, h, add, rng):
    add((0, 0, h / 2), (w / 2, d / 2, h / 2))
    add((0, 0, h + 0.012), (w / 2 + 0.01, d / 2 + 0.01, 0.012))
    for row in range(3):
        add((0, -d / 2 - 0.008, h * (0.2 + 0.3 * row)), (w / 2 - 0.05, 0.008, 0.015))


def _lamp(w, d, h, add, rng):
    add((0, 0, 0.015), (w / 2, d / 2, 0.015))
    add((0, 0, h / 2), (0.015, 0.015, h / 2))
    shade = rng.uniform(0.15, 0.25)
    add((0, 0, h - shade / 2), (w / 2 * 1.2, d / 2 * 1.2, shade / 2))


def _shelf(w, d, h, add, rng):
    t = 0.02
    for sx in (-1, 1):
        add((sx * (w / 2 - t), 0, h / 2), (t, d / 2, h / 2))
    boards = int(rng.integers(3, 6))
    for i in range(boards):
        add((0, 0, t + i * (h - 2 * t) / (boards - 1)), (w / 2 - 2 * t, d / 2, t))
    add((0, d / 2 - 0.005, h / 2), (w / 2 - 2 * t, 0.005, h / 2))  # back panel


FAMILIES = {  # label: (width, depth, height ranges in metres, builder, against a wall?)
    1: ((0.5, 1.6), (0.35, 0.6), (0.6, 2.0), _cabinet, True),
    2: ((0.9, 1.9), (1.9, 2.2), (0.8, 1.2), _bed, True),
    3: ((0.4, 0.55), (0.4, 0.55), (0.8, 1.05), _chair, False),
    4: ((1.4, 2.4), (0.8, 1.0), (0.7, 0.95), _sofa, True),
    5: ((0.6, 1.8), (0.6, 1.0), (0.45, 0.78), _table, False),
    6: ((1.0, 1.6), (0.5, 0.8), (0.72, 0.78), _desk, True),
    7: ((0.8, 1.6), (0.4, 0.55), (0.7, 1.1), _dresser, True),
    8: ((0.25, 0.45), (0.25, 0.45), (0.5, 1.7), _lamp, False),
    9: ((0.6, 1.2), (0.25, 0.4), (0.8, 2.0), _shelf, True),
}


def sample_scene(rng: np.random.Generator, max_objects: int = 12) -> Scene:
    size = np.array([rng.uniform(*ROOM_SIZE), rng.uniform(*ROOM_SIZE), rng.uniform(*ROOM_HEIGHT)])
    stuff_colors = {WALL: _random_color(rng) * 0.3 + 0.65, FLOOR: _random_color(rng),
                    CEILING: np.array([0.92, 0.92, 0.9])}
    stuff_textures = {WALL: int(rng.integers(0, 2)), FLOOR: int(rng.integers(2, 4)), CEILING: 0}
    parts: list[Part] = []
    footprints: list[np.ndarray] = []
    if rng.random() < L_SHAPED_SHARE:
        block = _corner_block(rng, size, stuff_colors[WALL], stuff_textures[WALL])
        parts.append(block)
        footprints.append(_footprint(block))
    while True:  # the camera zone lies in the free part of the floor
        cx, cy = rng.uniform(0.9, size[0] - 0.9), rng.uniform(0.9, size[1] - 0.9)
        camera_zone = np.array([cx - 0.5, cy - 0.5, cx + 0.5, cy + 0.5])
        if not any(_overlap(camera_zone, fp, 0.1) for fp in footprints):
            break
    footprints.append(camera_zone)
    instances: dict[int, int] = {}
    target = int(rng.integers(max(3, max_objects // 2), max_objects + 1))
    labels = list(FAMILIES)
    for _ in range(target * 6):
        if len(instances) >= target:
            break
        label = labels[int(rng.integers(len(labels)))] if len(instances) >= 9 else labels[len(instances) % 9]
        obj = _place(rng, label, size, footprints, len(instances) + 1)
        if obj is None:
            continue
        new_parts, fp = obj
        parts += new_parts
        footprints.append(fp)
        instances[len(instances) + 1] = label
    openings = []
    for _ in range(int(rng.integers(1, 4))):
        wall = int(rng.integers(4))
        length = size[0] if wall in (0, 2) else size[1]
        is_door = rng.random() < 0.4
        width = rng.uniform(0.8, 1.0) if is_door else rng.uniform(0.8, 1.8)
        height = rng.uniform(2.0, 2.2) if is_door else rng.uniform(0.9, 1.4)
        bottom = 0.0 if is_door else rng.uniform(0.8, 1.0)
        along = rng.uniform(width / 2 + 0.1, max(width / 2 + 0.11, length - width / 2 - 0.1))
        color = np.array([0.75, 0.85, 0.95]) if not is_door else _random_color(rng)
        openings.append(Opening(wall, along, bottom, width, min(height, size[2] - bottom - 0.1), color))
    n_lights = int(rng.integers(1, 3))
    lights = []
    while len(lights) < n_lights:  # under the ceiling of the free part of the room
        light = np.array([rng.uniform(0.2, 0.8) * size[0], rng.uniform(0.2, 0.8) * size[1], size[2] - 0.1])
        if not (parts and parts[0].label == WALL and _overlap(np.r_[light[:2], light[:2]], footprints[0], 0.2)):
            lights.append(light)
    lights = np.stack(lights)
    return Scene(size, parts, openings, stuff_colors, stuff_textures, lights, camera_zone, instances)


L_SHAPED_SHARE = 0.4


def _corner_block(rng, size, color, texture) -> Part:
    """A floor-to-ceiling block in one corner turns the rectangle into an L-shaped room. It is wall (stuff, no
    instance); the ground truth treats its inside as outside the room."""
    bx, by = rng.uniform(0.3, 0.5) * size[0], rng.uniform(0.3, 0.5) * size[1]
    corner = int(rng.integers(4))
    x = bx / 2 if corner in (0, 3) else size[0] - bx / 2
    y = by / 2 if corner in (0, 1) else size[1] - by / 2
    return Part(np.array([x, y, size[2] / 2]), np.array([bx / 2, by / 2, size[2] / 2]), 0.0, WALL, 0, color, texture)


def _overlap(a: np.ndarray, b: np.ndarray, margin: float) -> bool:
    return a[0] < b[2] + margin and b[0] < a[2] + margin and a[1] < b[3] + margin and b[1] < a[3] + margin


def _place(rng, label, room, footprints, inst):
    (w_rng, d_rng, h_rng, builder, at_wall) = FAMILIES[label]
    w, d, h = rng.uniform(*w_rng), rng.uniform(*d_rng), rng.uniform(*h_rng)
    h = min(h, room[2] - 0.3)
    if at_wall:
        wall = int(rng.integers(4))
        yaw = [0.0, -math.pi / 2, math.pi, math.pi / 2][wall]  # back (+y in object frame) toward the wall
        gap = 0.02
        if wall == 0:    # wall y = room_y (back faces +y)
            pos = (rng.uniform(w / 2, room[0] - w / 2), room[1] - d / 2 - gap)
        elif wall == 1:  # wall x = room_x
            pos = (room[0] - d / 2 - gap, rng.uniform(w / 2, room[1] - w / 2))
        elif wall == 2:  # wall y = 0
            pos = (rng.uniform(w / 2, room[0] - w / 2), d / 2 + gap)
        else:            # wall x = 0
            pos = (d / 2 + gap, rng.uniform(w / 2, room[1] - w / 2))
    else:
        yaw = rng.uniform(-math.pi, math.pi)
        r = math.hypot(w, d) / 2
        pos = (rng.uniform(r + 0.05, room[0] - r - 0.05), rng.uniform(r + 0.05, room[1] - r - 0.05))
    color = _random_color(rng)
    tex = int(rng.integers(0, 4))
    parts: list[Part] = []

    def add(center, half):
        parts.append(_box(center, half, pos, yaw, label, inst, color, tex))

    builder(w, d, h, add, rng)
    if not parts:
        return None
    fps = np.array([_footprint(p) for p in parts])
    fp = np.array([fps[:, 0].min(), fps[:, 1].min(), fps[:, 2].max(), fps[:, 3].max()])
    if fp[0] < 0 or fp[1] < 0 or fp[2] > room[0] or fp[3] > room[1]:
        return None
    if any(_overlap(fp, other, 0.05) for other in footprints):  # bounding boxes of rotated footprints
        return None
    return parts, fp


def sample_camera(rng: np.random.Generator, scene: Scene, tries: int = 200) -> np.ndarray:
    """Camera-to-world pose inside the room at 1.2-1.8 m, outside every object, looking at furniture."""
    fps = scene.footprints()
    zone = scene.camera_zone
    for attempt in range(tries):
        if attempt < tries // 2:
            xy = rng.uniform(0.4, scene.size[0] - 0.4), rng.uniform(0.4, scene.size[1] - 0.4)
        else:  # the reserved zone is free by construction
            xy = rng.uniform(zone[0] + 0.2, zone[2] - 0.2), rng.uniform(zone[1] + 0.2, zone[3] - 0.2)
        eye = np.array([xy[0], xy[1], rng.uniform(1.2, 1.8)])
        clear = all(not (fp[0] - 0.3 < eye[0] < fp[2] + 0.3 and fp[1] - 0.3 < eye[1] < fp[3] + 0.3)
                    for fp in fps)
        if not clear:
            continue
        if scene.parts and rng.random() < 0.85:
            p = scene.parts[int(rng.integers(len(scene.parts)))]
            target = p.center + rng.normal(0, 0.2, 3)
        else:
            target = np.array([rng.uniform(0, scene.size[0]), rng.uniform(0, scene.size[1]), rng.uniform(0.3, 1.2)])
        flat = np.hypot(*(target - eye)[:2])
        if flat < (1.0 if attempt < tries // 2 else 0.3):
            continue
        target[2] = min(target[2], eye[2] - 0.15 * flat)  # look slightly down as cameras in 3D-FRONT do
        return look_at(eye, target)
    raise RuntimeError("no valid camera position in this room")

