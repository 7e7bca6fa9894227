"""Manhattan room layout from the 2D stage's own outputs: the floor as one plane, the walls as vertical planes at
right angles to each other. Their depth replaces the depth head's on floor and wall pixels before the 3D stage
lifts it (`postprocess.layout_planes`).

Why: walls are most of the depth head's error, and a wall that a thickened PRQ segment
can match must lie within a voxel or two (3-6 cm) of the truth, while a per-pixel depth wobbles along it and turns
walls toward the camera. A wall runs as its base on the floor plane runs (the floor is the better-measured
surface; a quarter-resolution pixel near a wall's base spans 15 cm of depth at 4 m, so planes are fitted at the
image's resolution) and stands at its own pixels' median distance (placing it at its base was worse: the floor
plane's tilt error grows with distance). No weights: the fit reads the depth,
class and mask outputs of any checkpoint.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ..geometry import Intrinsics
from ..labels import FLOOR, WALL


@dataclass(frozen=True)
class LayoutSettings:
    min_pixels: int = 600        # of a class, or of one wall (full resolution), before a plane is fitted to it
    min_contacts: int = 12       # wall-over-floor pixels before a wall is placed by the floor
    max_change: float = 0.3      # relative: a pixel further than this from every plane keeps the depth head's depth
    step: int = 8                # pixels between the two ends of a top-view step along a row (a wall's direction)
    iterations: int = 4          # of the floor's reweighted plane fit
    query_score: float = 0.05    # a query takes part in the full-resolution classes above this class probability
    wall_offset: str = "pixels"  # a wall's distance from its own pixels' median ("pixels") or from its base ("bases")
    replace: tuple = (FLOOR, WALL)  # the classes whose depth the planes replace (the floor is fitted either way)


@dataclass(frozen=True)
class Plane:
    normal: torch.Tensor         # 3, unit, camera space
    offset: torch.Tensor         # scalar: the plane is normal . X = offset
    label: int                   # FLOOR or WALL

    def depth(self, rays: torch.Tensor) -> torch.Tensor:
        """z of each ray's (h x w x 3, z = 1) hit; 0 where it does not meet the plane in front of the camera."""
        facing = rays @ self.normal
        t = self.offset / torch.where(facing.abs() > 1e-4, facing, torch.full_like(facing, 1e-4))
        return torch.where(t > 0, t, torch.zeros_like(t))


def class_probabilities(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Mask2Former's semantic inference: B x (C - 1) x h x w from B x N x C class and B x N x h x w mask logits;
    class 0 ('no object') takes no part, so channel c is class c + 1."""
    return torch.einsum("bnc,bnhw->bchw", class_logits.float().softmax(-1)[..., 1:], mask_logits.float().sigmoid())


def pixel_classes(probs: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """B x h x w class of each pixel (0 where no class reaches the threshold)."""
    score, label = probs.max(1)
    return torch.where(score > threshold, label + 1, torch.zeros_like(label))


def erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """h x w bool: pixels whose (2 radius + 1)^2 neighbourhood is all in the mask (class edges mix depths)."""
    return (-F.max_pool2d(-mask[None, None].float(), 2 * radius + 1, 1, radius) > 0.5)[0, 0]


def fit_plane(points: torch.Tensor, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(normal, offset) of the plane normal . X = offset through N x 3 points, by reweighted least squares (a
    Cauchy weight on each residual, scaled by their median): robust to the pixels of another surface."""
    weight = torch.ones(len(points), device=points.device)
    for _ in range(iterations):
        centre = (weight[:, None] * points).sum(0) / weight.sum()
        spread = points - centre
        normal = torch.linalg.eigh((weight[:, None] * spread).T @ spread)[1][:, 0]
        residual = spread @ normal
        scale = (1.4826 * residual.abs().median()).clamp(min=0.005)
        weight = 1 / (1 + (residual / (2 * scale)) ** 2)
    return normal, normal @ centre


def same_wall_tolerance(offset: torch.Tensor) -> torch.Tensor:
    """How far (m) from a wall at this offset a point or another estimate still belongs to it: 15%, at least 30 cm
    (parallel walls of one room stand a metre or more apart)."""
    return torch.clamp(0.15 * offset.abs(), min=0.3)


def wall_groups(offsets: torch.Tensor, min_count: int, bin_size: float = 0.05, most: int = 3) -> list[torch.Tensor]:
    """Index tensors, one per wall, among the offsets (> 0) of parallel walls on one side of the camera: the
    densest neighbourhood first, then the densest of what is left."""
    groups, left = [], torch.arange(len(offsets), device=offsets.device)
    while len(groups) < most and len(left) >= min_count:
        v = offsets[left]
        bins = torch.floor(v / bin_size).long()
        counts = torch.bincount(bins - bins.min()).float()
        smooth = F.conv1d(counts[None, None], torch.ones(1, 1, 5, device=v.device), padding=2)[0, 0]
        centre = (smooth.argmax() + bins.min() + 0.5) * bin_size
        near = (v - centre).abs() < same_wall_tolerance(centre)
        if near.sum() < min_count:
            break
        groups.append(left[near])
        left = left[~near]
    return groups


def get_layout(choice: str, intrinsics: Intrinsics) -> "ManhattanLayout | None":
    """The layout fit `postprocess.layout_planes` asks for (None: off)."""
    replace = {"off": (), "walls": (WALL,), "walls_floor": (FLOOR, WALL)}[choice]
    return ManhattanLayout(intrinsics, LayoutSettings(replace=replace)) if replace else None


class ManhattanLayout:
    """Fits the room's planes to the full-resolution depth and classes, then replaces the depth of floor and wall
    pixels of the depth map that lie near one of their class's planes."""

    def __init__(self, intrinsics: Intrinsics, settings: LayoutSettings = LayoutSettings()):
        self.intrinsics = intrinsics
        self.settings = settings

    @torch.no_grad()
    def __call__(self, depth: torch.Tensor, class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
        """depth B x h x w (z, metres) with the 2D stage's B x N x C class and B x N x h' x w' mask logits."""
        # fp32 throughout, also under bf16 autocast: the plane fits' eigh has no bf16 kernel, and metres need it
        with torch.autocast(depth.device.type, enabled=False):
            return self._replace_planes(depth, class_logits, mask_logits)

    def _replace_planes(self, depth, class_logits, mask_logits):
        size = (self.intrinsics.height, self.intrinsics.width)
        full_depth = F.interpolate(depth[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
        if mask_logits.shape[-2:] != depth.shape[-2:]:
            mask_logits = F.interpolate(mask_logits.float(), size=depth.shape[-2:], mode="bilinear",
                                        align_corners=False)
        label = pixel_classes(class_probabilities(class_logits, mask_logits))
        rays = self.intrinsics.pixel_rays(depth.device)
        small_rays = self.intrinsics.scaled(depth.shape[-1], depth.shape[-2]).pixel_rays(depth.device)
        # at the image's resolution only the queries that name a class are upsampled (about 1 in 6: the cost)
        named = class_logits.float().softmax(-1)[..., 1:].amax(-1) > self.settings.query_score
        out = []
        for b in range(len(depth)):
            masks = F.interpolate(mask_logits[b, named[b]][None].float(), size=size, mode="bilinear",
                                  align_corners=False)
            full_label = pixel_classes(class_probabilities(class_logits[b, named[b]][None], masks))[0]
            planes = self.fit(full_depth[b], full_label, rays)
            out.append(self.apply(depth[b].float(), label[b], small_rays, planes))
        return torch.stack(out).to(depth.dtype)

    def apply(self, depth: torch.Tensor, label: torch.Tensor, rays: torch.Tensor, planes: list[Plane]):
        """Each floor / wall pixel takes the depth of its class's plane nearest its own depth, within max_change."""
        out = depth
        for cls in self.settings.replace:
            mine = [p for p in planes if p.label == cls]
            if not mine:
                continue
            candidates = torch.stack([p.depth(rays) for p in mine])                     # P x h x w
            gap = torch.where(candidates > 0, (candidates - depth).abs(), torch.full_like(candidates, math.inf))
            best_gap, best = gap.min(0)
            planar = candidates.gather(0, best[None])[0]
            take = (label == cls) & (best_gap < self.settings.max_change * depth)
            out = torch.where(take, planar, out)
        return out

    def fit(self, depth: torch.Tensor, label: torch.Tensor, rays: torch.Tensor) -> list[Plane]:
        """The floor plane and up to 3 walls per side and axis, from one image (h x w depth and class, h x w x 3
        rays at the image's resolution); [] where the floor is not seen well enough to anchor the layout."""
        s = self.settings
        points = depth[..., None] * rays
        floor, wall = erode(label == FLOOR, 2), erode(label == WALL, 2)
        if floor.sum() < s.min_pixels:
            return []
        up, offset = fit_plane(points[floor], s.iterations)
        if offset > 0:                       # orient the normal from the floor toward the camera (at the origin)
            up, offset = -up, -offset
        # a camera 0.5-3 m above the floor, pitched less than 60 degrees (y points down in the camera)
        if not (0.5 < -offset < 3.0 and -up[1] > 0.5):
            return []
        planes = [Plane(up, offset, FLOOR)]
        if wall.sum() < s.min_pixels:
            return planes
        basis = self._top_view_basis(up)
        bases = self._wall_bases(label, rays, planes[0], basis)
        rows = self._row_steps(points, depth, wall, basis)
        # the walls' direction comes from their bases on the floor where enough of them is seen: a depth head
        # turns walls toward the camera (by up to 40 degrees), while it places the floor well
        source = bases if bases is not None else rows
        if source is None:
            return planes
        direction = self._direction(source[1])
        axes = torch.stack([torch.cos(direction) * basis[0] + torch.sin(direction) * basis[1],
                            -torch.sin(direction) * basis[0] + torch.cos(direction) * basis[1]])  # 2 x 3
        placed = self._planes(*bases, axes, basis, s.min_contacts) if bases is not None else []
        if rows is not None and s.wall_offset == "pixels":
            placed = [self._from_pixels(plane, rows[0]) for plane in placed]
        own = self._planes(*rows, axes, basis, s.min_pixels) if rows is not None else []
        for plane in own:      # a wall whose base is hidden (furniture along it) is placed by its own pixels
            if not any(self._same(plane, other) for other in placed):
                placed.append(plane)
        return planes + placed

    @staticmethod
    def _top_view_basis(up: torch.Tensor) -> torch.Tensor:
        """Two horizontal unit vectors (2 x 3), the first along the camera's forward direction."""
        forward = torch.tensor([0.0, 0.0, 1.0], device=up.device)
        e1 = F.normalize(forward - (forward @ up) * up, dim=0)
        return torch.stack([e1, torch.linalg.cross(up, e1)])

    def _row_steps(self, points, depth, wall, basis):
        """(points N x 3, top-view steps N x 2) of wall pixels `step` apart in a row on one surface."""
        n = self.settings.step
        pair = wall[:, n:] & wall[:, :-n] & ((depth[:, n:] - depth[:, :-n]).abs() < 0.15 * depth[:, n:])
        if pair.sum() < self.settings.min_pixels:
            return None
        return points[:, :-n][pair], (points[:, n:][pair] - points[:, :-n][pair]) @ basis.T

    def _wall_bases(self, label, rays, floor_plane: Plane, basis):
        """Where walls meet the floor: per image column, the lowest wall pixel right above a floor pixel, placed on
        the floor plane at the boundary between the two; (points C x 3, top-view steps C x 2 to the base `step`
        columns on) where both are seen on one run of the boundary."""
        s = self.settings
        touch = (label[:-1] == WALL) & (label[1:] == FLOOR)                              # (h - 1) x w
        rows = torch.arange(touch.shape[0], device=label.device)[:, None]
        row = torch.where(touch, rows, -1).max(0).values                                 # w
        u = torch.arange(touch.shape[1], device=label.device)
        boundary = (rays[row.clamp(min=0), u] + rays[row.clamp(min=0) + 1, u]) / 2       # w x 3
        point = floor_plane.depth(boundary)[:, None] * boundary
        seen = (row >= 0) & (point[:, 2] > 0)
        n = s.step
        pair = seen[n:] & seen[:-n] & ((row[n:] - row[:-n]).abs() <= n)
        if pair.sum() < s.min_contacts:
            return None
        return point[:-n][pair], (point[n:][pair] - point[:-n][pair]) @ basis.T

    @staticmethod
    def _direction(step: torch.Tensor) -> torch.Tensor:
        """The walls' top-view direction modulo 90 degrees: the length-weighted mean of 4x the steps' angles."""
        angle = torch.atan2(step[:, 1], step[:, 0])
        length = step.norm(dim=-1)
        return torch.atan2((length * torch.sin(4 * angle)).sum(), (length * torch.cos(4 * angle)).sum()) / 4

    def _planes(self, points, steps, axes, basis, min_count) -> list[Plane]:
        """Walls among N x 3 points with their top-view steps: each runs along the axis nearer its step, and the
        walls along one axis on one side of the camera are told apart by their offsets."""
        along = (F.normalize(steps, dim=-1) @ (axes @ basis.T).T).abs().argmax(-1)
        planes = []
        for k in (0, 1):
            normal = axes[1 - k]                                      # a wall along axis k faces the other
            offsets = points[along == k] @ normal
            for sign in (-1.0, 1.0):  # the camera stands inside the room: walls on its two sides are distinct
                side = offsets[offsets * sign > 0] * sign
                for group in wall_groups(side, min_count):
                    planes.append(Plane(normal, side[group].median() * sign, WALL))
        return planes

    def _from_pixels(self, plane: Plane, points: torch.Tensor) -> Plane:
        """The wall moved to the median offset of the wall points near it."""
        offsets = points @ plane.normal
        near = (offsets - plane.offset).abs() < same_wall_tolerance(plane.offset)
        if near.sum() < self.settings.min_contacts:
            return plane
        return Plane(plane.normal, offsets[near].median(), WALL)

    @staticmethod
    def _same(a: Plane, b: Plane) -> bool:
        return bool((a.normal @ b.normal > 0.99) and (a.offset - b.offset).abs() < same_wall_tolerance(b.offset))
