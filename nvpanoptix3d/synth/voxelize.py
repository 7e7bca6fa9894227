"""Exact 3D ground truth of the camera frustum: unsigned distance (voxels), semantic and instance labels.

Values live on the list of frustum voxels (about 2.7 M of the 256^3). The room's analytic distance is first
taken at the centres of 4^3-voxel blocks; only blocks that can hold a voxel within the truncation of a wall,
floor or ceiling are refined, every other voxel is free at the truncation distance. Each furniture part only
visits the voxels of its own bounding box (expanded by the truncation). So the cost follows the surfaces. Everything in the frustum is labelled, seen by the
camera or not.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..geometry import FrustumGrid
from ..labels import CEILING, FLOOR, WALL
from .render import part_corners
from .scene import Scene


@dataclass
class FrustumTruth:
    """Ground truth on the frustum voxel list `index` (N x 3); `dense()` scatters it into the grid."""
    index: torch.Tensor      # N x 3 voxel indices (shared, read-only)
    distance: torch.Tensor   # N float32: unsigned distance to the nearest surface in voxels, <= truncation
    semantic: torch.Tensor   # N int64, 0 where not occupied
    instance: torch.Tensor   # N int64
    dims: tuple
    truncation: float

    def dense(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(distance, semantic, instance, weighting) as dims-shaped volumes; outside the frustum: free."""
        i, j, k = self.index.unbind(-1)
        dev = self.distance.device
        dist = torch.full(self.dims, self.truncation, dtype=torch.float32, device=dev)
        sem = torch.zeros(self.dims, dtype=torch.int64, device=dev)
        inst = torch.zeros(self.dims, dtype=torch.int64, device=dev)
        weight = torch.zeros(self.dims, dtype=torch.float32, device=dev)
        dist[i, j, k] = self.distance
        sem[i, j, k] = self.semantic
        inst[i, j, k] = self.instance
        weight[i, j, k] = 1.0 + 4.0 * (self.distance < self.truncation).float()
        return dist, sem, inst, weight


def _room_distance(world: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unsigned distance (m) to the boundary of the box [0, size] and the nearest face: 0-2 the faces at
    x, y, z = 0, 3-5 those at x, y, z = size."""
    faces = torch.cat([world, size - world], dim=-1)                 # positive inside
    d_in, face = faces.min(-1)
    inside = d_in > 0
    q = (world - size / 2).abs() - size / 2
    out_axis = q.argmax(-1)
    upper = world.gather(1, out_axis[:, None])[:, 0] > size[out_axis]
    face = torch.where(inside, face, out_axis + 3 * upper.long())
    return torch.where(inside, d_in, q.clamp(min=0).norm(dim=-1)), face


class FrustumVoxelizer:
    """Holds the frustum voxel list of a grid and its inverse lookup, reused for every frame."""

    def __init__(self, grid: FrustumGrid, truncation: float = 3.0, iso: float = 1.0, device="cpu",
                 batched: bool | None = None):
        self.grid, self.truncation, self.iso, self.device = grid, truncation, iso, device
        # all parts in one pass on a GPU (few kernel launches); part by part on the CPU (less memory traffic)
        self.batched = torch.device(device).type == "cuda" if batched is None else batched
        self.mask = grid.frustum_mask(device)
        self.index = self.mask.nonzero()                           # N x 3
        self.points_cam = grid.grid_to_camera(self.index)           # N x 3
        self.lookup = torch.full(grid.dims, -1, dtype=torch.int64, device=device)
        self.lookup[self.mask] = torch.arange(len(self.index), device=device)
        # blocks of 4^3 voxels: their centres and the frustum positions they hold (-1 padding)
        b = self.BLOCK
        block_of = self.index // b
        nb = [d // b for d in grid.dims]
        block_key = (block_of[:, 0] * nb[1] + block_of[:, 1]) * nb[2] + block_of[:, 2]
        keys, inverse = block_key.unique(return_inverse=True)
        order = inverse.argsort(stable=True)
        counts = torch.bincount(inverse, minlength=len(keys))
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(len(order), device=device) - starts[inverse[order]]
        self.block_members = torch.full((len(keys), b ** 3), -1, dtype=torch.int64, device=device)
        self.block_members[inverse[order], slot] = order
        block_index = torch.stack([keys // (nb[1] * nb[2]), (keys // nb[2]) % nb[1], keys % nb[2]], -1)
        self.block_centres = grid.grid_to_camera(block_index * b) + (b - 1) / 2 * grid.voxel_size
        self.block_reach = (self.truncation + math.sqrt(3) * b / 2) * grid.voxel_size  # centre-to-corner margin

    BLOCK = 4

    def __call__(self, scene: Scene, pose: np.ndarray) -> FrustumTruth:
        g, dev, vs = self.grid, self.device, self.grid.voxel_size
        pose_t = torch.tensor(pose, dtype=torch.float32, device=dev)
        size = torch.tensor(scene.size, dtype=torch.float32, device=dev)
        # room: distance to the boundary of the box [0, size], labelled by the nearest face; refined only in
        # blocks near a face (the distance is 1-Lipschitz, so far blocks are free everywhere)
        centre_d, _ = _room_distance(self.block_centres @ pose_t[:3, :3].T + pose_t[:3, 3], size)
        near = self.block_members[centre_d < self.block_reach].reshape(-1)
        near = near[near >= 0]
        n = len(self.index)
        dist = torch.full((n,), self.truncation, dtype=torch.float32, device=dev)
        label = torch.full((n,), WALL, dtype=torch.int64, device=dev)
        rot, eye = pose_t[:3, :3].T, pose_t[:3, 3]
        d_near, face = _room_distance(self.points_cam[near] @ rot + eye, size)
        dist[near] = (d_near / vs).clamp(max=self.truncation)
        label[near] = torch.where(face == 2, FLOOR, torch.where(face == 5, CEILING, WALL))
        instance = torch.zeros_like(label)
        if scene.parts:
            boxes = self._part_boxes(scene, pose)
            blocks = [i for i, p in enumerate(scene.parts) if p.label == WALL]  # L-shaped rooms' corner blocks
            furniture = [i for i, p in enumerate(scene.parts) if p.label != WALL]
            dist, label, instance = self._parts_one_by_one(scene.parts, blocks, boxes, dist, label, instance, rot, eye)
            step = self._parts_batched if self.batched else self._parts_one_by_one
            dist, label, instance = step(scene.parts, furniture, boxes, dist, label, instance, rot, eye)
        occupied = dist < self.iso
        return FrustumTruth(self.index, dist, label * occupied, instance * occupied, g.dims, self.truncation)

    def _part_boxes(self, scene: Scene, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per part, the voxel box [lo, hi) that holds every voxel within the truncation of it."""
        g = self.grid
        cam_from_world = np.linalg.inv(pose)
        corners = np.stack([part_corners(p) for p in scene.parts]) @ cam_from_world[:3, :3].T + cam_from_world[:3, 3]
        grid_pts = (corners - g.box_min) / g.voxel_size + g.offset
        margin = int(math.ceil(self.truncation)) + 1
        lo = np.clip(np.floor(grid_pts.min(1)).astype(np.int64) - margin, 0, None)
        hi = np.maximum(np.minimum(np.ceil(grid_pts.max(1)).astype(np.int64) + margin, np.array(g.dims)), lo)
        return lo, hi

    def _part_distance(self, pos: torch.Tensor, center, half, cos, sin, rot, eye):
        """Unsigned distance (voxels) from frustum voxels `pos` to oriented boxes, and whether they are inside;
        the box parameters are per voxel or shared."""
        rel = self.points_cam[pos] @ rot + eye - center
        local = torch.stack([cos * rel[:, 0] + sin * rel[:, 1], -sin * rel[:, 0] + cos * rel[:, 1], rel[:, 2]], -1)
        q = local.abs() - half
        inside = (q < 0).all(-1)
        d = torch.where(inside, -q.max(-1).values, q.clamp(min=0).norm(dim=-1)) / self.grid.voxel_size
        return d, inside

    def _parts_one_by_one(self, parts, which, boxes, dist, label, instance, rot, eye):
        """Part after part, each on the voxels of its own box: fastest on the CPU (no index arrays). A corner
        block of an L-shaped room also takes every voxel inside it: that space is outside the room."""
        dev = self.device
        lo, hi = boxes
        for i in which:
            part = parts[i]
            (x0, y0, z0), (x1, y1, z1) = lo[i].tolist(), hi[i].tolist()
            pos = self.lookup[x0:x1, y0:y1, z0:z1].reshape(-1)
            pos = pos[pos >= 0]
            if pos.numel() == 0:
                continue
            as_t = lambda v: torch.tensor(v, dtype=torch.float32, device=dev)  # noqa: E731
            d, inside = self._part_distance(pos, as_t(part.center), as_t(part.half), math.cos(part.yaw),
                                            math.sin(part.yaw), rot, eye)
            update = d < dist[pos]
            if part.label == WALL:
                update |= inside
            pos = pos[update]
            dist[pos] = d[update]
            label[pos] = part.label
            instance[pos] = part.instance
        return dist, label, instance

    def _parts_batched(self, parts, which, boxes, dist, label, instance, rot, eye):
        """Every part at once: the voxels of all parts' boxes (expanded by the truncation) are concatenated,
        distances taken in one pass and reduced per voxel (a few kernels per frame, whatever the number of
        parts: what the GPU needs). Ties go to what came before, then to the first part, as part after part."""
        if not which:
            return dist, label, instance
        dev = self.device
        lo, hi = boxes
        chosen = torch.tensor(which, device=dev)
        lo, size = lo[which], hi[which] - lo[which]
        counts = torch.from_numpy(size.prod(1)).to(dev)
        slot = torch.repeat_interleave(torch.arange(len(which), device=dev), counts)
        local = torch.arange(len(slot), device=dev) - (torch.cumsum(counts, 0) - counts)[slot]
        size_t, lo_t = torch.from_numpy(size).to(dev)[slot], torch.from_numpy(lo).to(dev)[slot]
        step = local // size_t[:, 2]
        index = lo_t + torch.stack([step // size_t[:, 1], step % size_t[:, 1], local % size_t[:, 2]], -1)
        pos = self.lookup[index[:, 0], index[:, 1], index[:, 2]]
        inside = pos >= 0
        pos, part_id = pos[inside], chosen[slot[inside]]
        table = lambda values, dtype=torch.float32: torch.tensor(np.array(values), dtype=dtype, device=dev)  # noqa
        center, half = table([p.center for p in parts]), table([p.half for p in parts])
        cos, sin = table([math.cos(p.yaw) for p in parts]), table([math.sin(p.yaw) for p in parts])
        d, _ = self._part_distance(pos, center[part_id], half[part_id], cos[part_id], sin[part_id], rot, eye)
        best = dist.scatter_reduce(0, pos, d, reduce="amin")
        wins = (d == best[pos]) & (d < dist[pos])
        first = torch.full_like(label, len(parts)).scatter_reduce(0, pos[wins], part_id[wins], reduce="amin")
        changed = first < len(parts)
        winner = first[changed]
        label, instance = label.clone(), instance.clone()
        label[changed] = table([p.label for p in parts], torch.int64)[winner]
        instance[changed] = table([p.instance for p in parts], torch.int64)[winner]
        return best, label, instance
