"""Exact 3D ground truth of the camera frustum: unsigned distance (voxels), semantic and instance labels.

Values live on the list of frustum voxels (about 2.7 M of the 256^3). The room's analytic distance is first
taken at the centres of 4^3-voxel blocks; only blocks that can hold a voxel within the truncation of a wall,
floor or ceiling are refined, every other voxel is free at the truncation distance. Each furniture part only
visits the voxels of its own bounding box (expanded by the truncation). So the cost follows the surfaces.
Everything in the frustum is labelled, seen by the camera or not.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..geometry import FrustumGrid
from ..labels import CEILING, FLOOR, WALL
from .frames import FrameBatch, rotate, yaw_rotation
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
    size = size.expand_as(world)
    faces = torch.cat([world, size - world], dim=-1)                 # positive inside
    d_in, face = faces.min(-1)
    inside = d_in > 0
    q = (world - size / 2).abs() - size / 2
    out_axis = q.argmax(-1, keepdim=True)
    upper = world.gather(-1, out_axis)[..., 0] > size.gather(-1, out_axis)[..., 0]
    out_axis = out_axis[..., 0]
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
        return self.frames(FrameBatch.build([scene], [pose], self.device))[0]

    def frames(self, fb: FrameBatch) -> list[FrustumTruth]:
        """Ground truth of every frame of a batch (one pass for all of them)."""
        dev, vs, n, b = self.device, self.grid.voxel_size, len(self.index), fb.count
        # room: distance to the boundary of the box [0, size], labelled by the nearest face; refined only in
        # blocks near a face (the distance is 1-Lipschitz, so far blocks are free everywhere)
        centre_d, _ = _room_distance(rotate(fb.rot[:, None], self.block_centres[None]) + fb.eye[:, None],
                                     fb.size[:, None])
        frame, block = (centre_d < self.block_reach).nonzero(as_tuple=True)
        member = self.block_members[block]
        frame = frame[:, None].expand_as(member)[member >= 0]
        member = member[member >= 0]
        dist = torch.full((b * n,), self.truncation, dtype=torch.float32, device=dev)
        label = torch.full((b * n,), WALL, dtype=torch.int64, device=dev)
        d_near, face = _room_distance(rotate(fb.rot[frame], self.points_cam[member]) + fb.eye[frame], fb.size[frame])
        near = frame * n + member
        dist[near] = (d_near / vs).clamp(max=self.truncation)
        label[near] = torch.where(face == 2, FLOOR, torch.where(face == 5, CEILING, WALL))
        instance = torch.zeros_like(label)
        if len(fb.part_frame_np):
            boxes = self._part_boxes(fb)
            step = self._parts_batched if self.batched else self._parts_one_by_one
            # L-shaped rooms' corner blocks first: their inside is outside the room, whatever the distance
            dist, label, instance = step(fb, np.flatnonzero(fb.part_is_wall), boxes, dist, label, instance)
            dist, label, instance = step(fb, np.flatnonzero(~fb.part_is_wall), boxes, dist, label, instance)
        occupied = dist < self.iso
        label, instance = (label * occupied).view(b, n), (instance * occupied).view(b, n)
        dist = dist.view(b, n)
        return [FrustumTruth(self.index, dist[i], label[i], instance[i], self.grid.dims, self.truncation)
                for i in range(b)]

    def _part_boxes(self, fb: FrameBatch) -> tuple[np.ndarray, np.ndarray]:
        """Per part, the voxel box [lo, hi) that holds every voxel within the truncation of it."""
        g = self.grid
        grid_pts = (fb.corners_camera - g.box_min) / g.voxel_size + g.offset
        margin = int(math.ceil(self.truncation)) + 1
        lo = np.clip(np.floor(grid_pts.min(1)).astype(np.int64) - margin, 0, None)
        hi = np.maximum(np.minimum(np.ceil(grid_pts.max(1)).astype(np.int64) + margin, np.array(g.dims)), lo)
        return lo, hi

    def _part_distance(self, member, part, fb: FrameBatch):
        """Unsigned distance (voxels) from frustum voxels `member` to parts `part` (same length or one part),
        and whether they are inside."""
        frame = fb.part_frame[part]
        world = rotate(fb.rot[frame], self.points_cam[member]) + fb.eye[frame]
        local = yaw_rotation(fb.cos[part], fb.sin[part], world - fb.center[part])
        q = local.abs() - fb.half[part]
        inside = (q < 0).all(-1)
        d = torch.where(inside, -q.max(-1).values, q.clamp(min=0).norm(dim=-1)) / self.grid.voxel_size
        return d, inside

    def _parts_one_by_one(self, fb, which, boxes, dist, label, instance):
        """Part after part, each on the voxels of its own box: fastest on the CPU (no index arrays). A corner
        block of an L-shaped room also takes every voxel inside it: that space is outside the room."""
        lo, hi = boxes
        n = len(self.index)
        for i in which.tolist():
            (x0, y0, z0), (x1, y1, z1) = lo[i].tolist(), hi[i].tolist()
            member = self.lookup[x0:x1, y0:y1, z0:z1].reshape(-1)
            member = member[member >= 0]
            if member.numel() == 0:
                continue
            pos = int(fb.part_frame_np[i]) * n + member
            d, inside = self._part_distance(member, torch.tensor(i, device=dist.device), fb)
            update = d < dist[pos]
            if fb.part_is_wall[i]:
                update |= inside
            pos = pos[update]
            dist[pos] = d[update]
            label[pos] = fb.label[i]
            instance[pos] = fb.instance[i]
        return dist, label, instance

    def _parts_batched(self, fb, which, boxes, dist, label, instance):
        """Every part of every frame at once: the voxels of all parts' boxes (expanded by the truncation) are
        concatenated, distances taken in one pass and reduced per voxel (a few kernels per batch, whatever the
        number of parts: what the GPU needs). Ties go to what came before, then to the first part, as part after
        part. A wall block's inside is taken whatever came before (one block per room: no block ties)."""
        if not len(which):
            return dist, label, instance
        dev, n = self.device, len(self.index)
        lo, hi = boxes
        chosen = torch.from_numpy(which).to(dev)
        lo, size = lo[which], hi[which] - lo[which]
        counts = torch.from_numpy(size.prod(1)).to(dev)
        slot = torch.repeat_interleave(torch.arange(len(which), device=dev), counts)
        local = torch.arange(len(slot), device=dev) - (torch.cumsum(counts, 0) - counts)[slot]
        size_t, lo_t = torch.from_numpy(size).to(dev)[slot], torch.from_numpy(lo).to(dev)[slot]
        step = local // size_t[:, 2]
        index = lo_t + torch.stack([step // size_t[:, 1], step % size_t[:, 1], local % size_t[:, 2]], -1)
        member = self.lookup[index[:, 0], index[:, 1], index[:, 2]]
        in_frustum = member >= 0
        member, part = member[in_frustum], chosen[slot[in_frustum]]
        d, inside = self._part_distance(member, part, fb)
        pos = fb.part_frame[part] * n + member
        before = dist.clone()
        if fb.part_is_wall[which].any():
            before[pos[inside & (fb.label[part] == WALL)]] = float("inf")
        best = before.scatter_reduce(0, pos, d, reduce="amin")
        wins = (d == best[pos]) & (d < before[pos])
        n_parts = len(fb.part_frame_np)
        first = torch.full_like(label, n_parts).scatter_reduce(0, pos[wins], part[wins], reduce="amin")
        changed = first < n_parts
        winner = first[changed]
        label, instance = label.clone(), instance.clone()
        label[changed] = fb.label[winner]
        instance[changed] = fb.instance[winner]
        return best, label, instance
