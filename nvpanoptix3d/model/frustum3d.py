"""The 3D stage: lift 2D features and depth into the camera frustum, complete occupancy coarse-to-fine
(64^3 dense, then 128^3 and 256^3 only on children of occupied voxels) and label voxels through the 2D queries.

Every level has a static number of candidate voxels (top-k by occupancy), so the same code runs in training,
inference and ONNX export; `max_voxels` bounds the 256^3 level.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..config import ModelConfig
from ..geometry import FrustumGrid
from .blocks import group_norm

CHILD_OFFSETS = torch.tensor([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)])


@dataclass
class Output3D:
    coarse_logits: torch.Tensor      # B x 64 x 64 x 64 occupancy logits
    mid_index: torch.Tensor          # B x K1 x 3 candidate voxels at 128^3
    mid_logits: torch.Tensor         # B x K1
    fine_index: torch.Tensor         # B x K2 x 3 candidate voxels at 256^3
    fine_valid: torch.Tensor         # B x K2 bool (inside the frustum)
    fine_logits: torch.Tensor        # B x K2 occupancy logits
    # B x K2 x num_classes and B x K2 x N voxel-to-query affinities: out of training only where the occupancy
    # probability exceeds label_above (zero elsewhere); None in training, whose losses label the voxels they
    # read with Frustum3D.label
    semantic_logits: torch.Tensor | None
    query_logits: torch.Tensor | None
    label_above: float
    # what labelling a voxel reads: its features (B x K2 x F), the pixel features it projects onto (detached) and
    # the query embeddings
    fine_features: torch.Tensor
    pixels: torch.Tensor
    query_embed: torch.Tensor
    fine_hidden: torch.Tensor | None = None  # B x K2 bool: at least 4 voxels behind the lifted depth (training)


class Lifter(nn.Module):
    """Samples 2D features at a voxel's projection and adds depth cues (signed distance to the predicted
    surface along the ray, in voxels of that level, and whether the voxel projects into the image)."""

    def __init__(self, grid: FrustumGrid):
        super().__init__()
        self.grid = grid
        k = grid.intrinsics
        self.register_buffer("box_min", torch.tensor(grid.box_min, dtype=torch.float32), persistent=False)
        self.register_buffer("offset", torch.tensor(grid.offset, dtype=torch.float32), persistent=False)
        self.intr = (k.fx, k.fy, k.cx, k.cy, k.width, k.height)

    def centres(self, index: torch.Tensor, factor: int) -> torch.Tensor:
        """Camera-space centres of voxels of the level whose voxels are `factor` fine voxels wide."""
        return ((index.float() + 0.5) * factor - self.offset) * self.grid.voxel_size + self.box_min

    def project(self, index: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
        """index B x V x 3 -> grid_sample positions B x V x 1 x 2 and camera depths B x V."""
        fx, fy, cx, cy, w, h = self.intr
        p = self.centres(index, factor)
        z = p[..., 2].clamp(min=1e-3)
        u = p[..., 0] / z * fx + cx
        v = p[..., 1] / z * fy + cy
        # sampling positions stay in float32: bf16 would move them by about a pixel
        return torch.stack([(u + 0.5) / w * 2 - 1, (v + 0.5) / h * 2 - 1], -1)[:, :, None], z

    @staticmethod
    def _sample(features: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """features B x C x h x w at grid B x V x 1 x 2 -> B x V x C (zero outside the image)."""
        return F.grid_sample(features.float(), grid, align_corners=False)[..., 0].transpose(1, 2)

    def features_at(self, index: torch.Tensor, factor: int, features: torch.Tensor) -> torch.Tensor:
        """index B x V x 3, features B x C x h x w -> B x V x C."""
        return self._sample(features, self.project(index, factor)[0])

    def behind_depth(self, index: torch.Tensor, factor: int, depth: torch.Tensor):
        """index B x V x 3, depth B x h x w -> grid_sample positions and how many of the level's voxels each lies
        behind the depth at its projection (B x V; negative: in front of it)."""
        grid, z = self.project(index, factor)
        d = self._sample(depth[:, None], grid)[..., 0]
        return grid, (z - d) / (self.grid.voxel_size * factor)

    def forward(self, index: torch.Tensor, factor: int, features: torch.Tensor, depth: torch.Tensor):
        """index B x V x 3, features B x C x h x w, depth B x h x w -> B x V x (C + 3)."""
        grid, behind = self.behind_depth(index, factor, depth)
        inside = (grid.abs() <= 1).all(-1)[..., 0].float()
        sdf = behind.clamp(-4, 4) / 4
        cues = torch.stack([sdf * inside, sdf.abs() * inside, inside], -1)
        return torch.cat([self._sample(features, grid), cues], -1)


class ResBlock3d(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv3d(ch, ch, 3, padding=1), group_norm(ch, 4), nn.GELU(),
                                  nn.Conv3d(ch, ch, 3, padding=1), group_norm(ch, 4))

    def forward(self, x):
        return F.gelu(x + self.body(x))


class CoarseNet(nn.Module):
    """Dense completion at 64^3; most work happens at 32^3 after a strided convolution."""

    def __init__(self, cin: int, ch: int, blocks: int = 3):
        super().__init__()
        self.inp = nn.Sequential(nn.Conv3d(cin, ch, 1), nn.GELU())
        self.down = nn.Sequential(nn.Conv3d(ch, ch * 2, 2, stride=2), group_norm(ch * 2, 4), nn.GELU())
        self.blocks = nn.Sequential(*[ResBlock3d(ch * 2) for _ in range(blocks)])
        self.up = nn.ConvTranspose3d(ch * 2, ch, 2, stride=2)
        self.refine = nn.Sequential(nn.Conv3d(ch, ch, 3, padding=1), group_norm(ch, 4), nn.GELU())
        self.occ = nn.Conv3d(ch, 1, 1)

    def forward(self, x):
        skip = self.inp(x)
        feat = self.refine(skip + self.up(self.blocks(self.down(skip))))
        return self.occ(feat)[:, 0], feat


def mlp(cin: int, hidden: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cin, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                         nn.Linear(hidden, cout))


class Frustum3D(nn.Module):
    def __init__(self, cfg: ModelConfig, grid: FrustumGrid, max_voxels: int = 700000, label_above: float = 0.2):
        """label_above: out of training, voxels of this occupancy probability or less get no labels (the
        postprocess threshold: they are never read)."""
        super().__init__()
        f3 = cfg.frustum3d
        c = f3.feature_dim
        pixel_dim = cfg.sem_seg_head.hidden_dim
        self.grid, self.max_voxels = grid, max_voxels
        self.label_above = label_above
        self.lifter = Lifter(grid)
        self.reduce = nn.Linear(pixel_dim, c)
        self.coarse = CoarseNet(c + 3, 2 * c)
        self.mid = mlp(2 * c + c + 3 + 3, 4 * c, 1 + 2 * c)
        self.fine = mlp(2 * c + c + 3 + 3, 4 * c, 1 + 2 * c)
        # label heads read [voxel features, pixel embedding at the voxel's projection]
        label_in = 2 * c + pixel_dim
        self.semantic = mlp(label_in, 4 * c, cfg.sem_seg_head.num_classes)
        self.embed = mlp(label_in, 4 * c, pixel_dim)
        nn.init.zeros_(self.embed[-1].weight)  # start as the 2D embedding at the voxel's projection
        nn.init.zeros_(self.embed[-1].bias)
        d = grid.dims
        mask = grid.frustum_mask()
        self.register_buffer("mask64", F.max_pool3d(mask[None, None].float(), 4)[0, 0] > 0, persistent=False)
        self.register_buffer("mask128", F.max_pool3d(mask[None, None].float(), 2)[0, 0] > 0, persistent=False)
        self.register_buffer("mask256", mask, persistent=False)
        idx64 = torch.stack(torch.meshgrid(*[torch.arange(s // 4) for s in d], indexing="ij"), -1)
        self.register_buffer("index64", idx64, persistent=False)

    def budgets(self) -> tuple[int, int]:
        k2 = max(8, self.max_voxels // 8)  # parents at 128 whose 8 children form the 256 level
        k1 = max(8, k2 // 4)               # parents at 64 whose children form the 128 level
        return k1, k2

    @staticmethod
    def _children(parents: torch.Tensor) -> torch.Tensor:
        """B x K x 3 -> B x 8K x 3 indices one level finer."""
        off = CHILD_OFFSETS.to(parents.device)
        return (parents[:, :, None] * 2 + off).reshape(parents.shape[0], -1, 3)

    @staticmethod
    def _child_position(children: torch.Tensor) -> torch.Tensor:
        """Where each child sits in its parent (+-0.5 per axis): the parent's features are shared by all 8."""
        return (children % 2).float() - 0.5

    def forward(self, mask_features: torch.Tensor, depth: torch.Tensor, query_embed: torch.Tensor,
                forced64: torch.Tensor | None = None, forced128: torch.Tensor | None = None,
                label_all: bool = False) -> Output3D:
        """forced64 / forced128: B x 64^3 / B x 128^3 bool voxels kept as candidates (training: ground truth).
        Out of training, only voxels above the occupancy threshold get labels (the rest are never read) unless
        label_all (ONNX export keeps static shapes); training's losses label the voxels they read."""
        # the 3D losses train the 3D stage and the query embeddings, not the pixel features: sampling them
        # without gradient avoids grid_sample's scatter backward over millions of voxels
        pixels = mask_features.detach()
        geometry, fine_feat, fine_lifted = self._occupancy(pixels, depth, forced64, forced128)
        fine_index, fine_valid, fine_logits = geometry[3:]
        reads = (fine_feat, pixels, query_embed)
        if label_all:  # static shapes for ONNX export
            semantic, query_logits = self._heads(fine_feat, self.lifter.features_at(fine_index, 1, pixels),
                                                 query_embed)
            return Output3D(*geometry, semantic, query_logits, 0.0, *reads)
        if self.training:  # the losses label only the occupied voxels they read
            # the lifting cue sdf * inside is clamped at 4 voxels behind the depth: 1 there
            return Output3D(*geometry, None, None, 0.0, *reads, fine_hidden=fine_lifted[..., -3] >= 1.0)
        # the label heads over every candidate would cost more than the rest of the stage; most are free space
        occupied = fine_valid & (fine_logits.float().sigmoid() > self.label_above)
        out = Output3D(*geometry, None, None, self.label_above, *reads)
        rows_semantic, rows_query = self.label(out, occupied)
        out.semantic_logits = rows_semantic.new_zeros(*occupied.shape, rows_semantic.shape[-1])
        out.query_logits = rows_query.new_zeros(*occupied.shape, rows_query.shape[-1])
        out.semantic_logits[occupied], out.query_logits[occupied] = rows_semantic, rows_query
        return out

    def _occupancy(self, pixels: torch.Tensor, depth: torch.Tensor, forced64: torch.Tensor | None,
                   forced128: torch.Tensor | None) -> tuple[tuple, torch.Tensor, torch.Tensor]:
        """Occupancy coarse to fine: 64^3 dense, then the children of the top candidates at 128^3 and 256^3.
        Returns the geometry fields of Output3D, the fine voxels' features and their lifted inputs."""
        b = pixels.shape[0]
        # reduce, then sample: sampling is linear, so this is reduce(sample(pixels)) at a fraction of the channels
        reduced = F.conv2d(pixels, self.reduce.weight[:, :, None, None])

        def lift(index, factor):
            sampled = self.lifter(index, factor, reduced, depth)
            return torch.cat([sampled[..., :-3] + self.reduce.bias, sampled[..., -3:]], -1)

        idx64 = self.index64.reshape(1, -1, 3).expand(b, -1, -1)
        lifted = lift(idx64, 4)                                               # B x 64^3 x (C+3)
        side = self.index64.shape[0]
        vol = lifted.transpose(1, 2).reshape(b, -1, side, side, side)
        coarse_logits, coarse_feat = self.coarse(vol)
        coarse_logits = coarse_logits.masked_fill(~self.mask64, -20.0)
        k1, k2 = self.budgets()
        # 128 level: children of the top-k1 coarse voxels
        score = coarse_logits.flatten(1).detach().float()
        if forced64 is not None:
            score = score + 100.0 * forced64.flatten(1).float()
        top1 = score.topk(min(k1, score.shape[1]), dim=1).indices                  # B x K1
        parents64 = self.index64.reshape(-1, 3)[top1]                             # B x K1 x 3
        feat64 = coarse_feat.flatten(2).transpose(1, 2)                           # B x 64^3 x F
        parent_feat = torch.gather(feat64, 1, top1[..., None].expand(-1, -1, feat64.shape[-1]))
        mid_index = self._children(parents64)
        mid_valid = self.mask128[mid_index[..., 0], mid_index[..., 1], mid_index[..., 2]]
        mid_in = torch.cat([parent_feat.repeat_interleave(8, 1), lift(mid_index, 2),
                            self._child_position(mid_index)], -1)
        mid_out = self.mid(mid_in)
        mid_logits = mid_out[..., 0].masked_fill(~mid_valid, -20.0)
        mid_feat = mid_out[..., 1:]
        # 256 level: children of the top-k2 candidates at 128
        score = mid_logits.detach().float()
        if forced128 is not None:
            side128 = side * 2
            flat = (mid_index[..., 0] * side128 + mid_index[..., 1]) * side128 + mid_index[..., 2]
            score = score + 100.0 * torch.gather(forced128.flatten(1), 1, flat).float()
        top2 = score.topk(min(k2, score.shape[1]), dim=1).indices
        parents128 = torch.gather(mid_index, 1, top2[..., None].expand(-1, -1, 3))
        parent_feat = torch.gather(mid_feat, 1, top2[..., None].expand(-1, -1, mid_feat.shape[-1]))
        fine_index = self._children(parents128)
        fine_valid = self.mask256[fine_index[..., 0], fine_index[..., 1], fine_index[..., 2]]
        fine_lifted = lift(fine_index, 1)
        fine_in = torch.cat([parent_feat.repeat_interleave(8, 1), fine_lifted, self._child_position(fine_index)], -1)
        fine_out = self.fine(fine_in)
        fine_logits = fine_out[..., 0].masked_fill(~fine_valid, -20.0)
        geometry = (coarse_logits, mid_index, mid_logits, fine_index, fine_valid, fine_logits)
        return geometry, fine_out[..., 1:], fine_lifted

    def _heads(self, feat: torch.Tensor, pixel: torch.Tensor, query_embed: torch.Tensor):
        """Semantic logits and query affinities of voxels (... x V) from their 3D features and 2D embeddings."""
        head_in = torch.cat([feat, pixel], -1)
        embed = pixel + self.embed(head_in)
        return self.semantic(head_in), embed @ query_embed.transpose(-1, -2)

    def label(self, out: Output3D, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Semantic logits and query affinities of the voxels `rows` (B x K2 bool) picks: R x num_classes and
        R x N, in rows.nonzero() order."""
        semantic, query = [], []
        for i in range(rows.shape[0]):
            r = rows[i].nonzero()[:, 0]
            pixel = self.lifter.features_at(out.fine_index[i:i + 1, r], 1, out.pixels[i:i + 1])[0]
            sem, aff = self._heads(out.fine_features[i, r], pixel, out.query_embed[i])
            semantic.append(sem)
            query.append(aff)
        return torch.cat(semantic), torch.cat(query)
