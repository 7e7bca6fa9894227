"""A VGGT-architecture image backbone: the public VGGT aggregator (a DINOv2 ViT with registers as patch
embedding, then alternating frame / global attention blocks with 2D RoPE, qk-norm and LayerScale, camera and
register tokens), with parameter names as in the released checkpoints, so `model.pretrained_backbone_path` can
load one (`aggregator.*` tensors; the heads are ignored). A small neck turns the last frame + global tokens into
the four strides the heads read.

For one image, global attention runs over that image's tokens, as VGGT does for a sequence of one frame.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from .blocks import group_norm

PATCH = 14
POS_GRID = 37            # DINOv2's position table: 518 / 14 patches a side
REGISTERS = 4
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Rope2D(nn.Module):
    """Rotary position embedding over (row, column): the first half of each head's channels rotates with the
    row, the second half with the column (rotate-half convention, base frequency 100)."""

    def __init__(self, base: float = 100.0):
        super().__init__()
        self.base = base

    def _rotate(self, x: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        d = x.shape[-1]
        inv_freq = 1.0 / self.base ** (torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
        angles = position.float()[..., None] * inv_freq                     # B x N x d/2
        angles = torch.cat([angles, angles], -1)[:, None]                   # B x 1 x N x d
        half = torch.cat([-x[..., d // 2:], x[..., :d // 2]], -1)
        return x * angles.cos().to(x.dtype) + half * angles.sin().to(x.dtype)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x: B x heads x N x head_dim, pos: B x N x 2 (row, column)."""
        rows, cols = x.chunk(2, dim=-1)
        return torch.cat([self._rotate(rows, pos[..., 0]), self._rotate(cols, pos[..., 1])], -1)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qk_norm: bool = False, rope: Rope2D | None = None):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None and pos is not None:
            q, k = self.rope(q, pos), self.rope(k, pos)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x):
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, layer_scale: float, qk_norm: bool = False, rope: Rope2D | None = None,
                 eps: float = 1e-5):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=eps), Attention(dim, heads, qk_norm, rope)
        self.ls1 = LayerScale(dim, layer_scale)
        self.norm2, self.mlp, self.ls2 = nn.LayerNorm(dim, eps=eps), Mlp(dim, 4 * dim), LayerScale(dim, layer_scale)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), pos))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchProjection(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, PATCH, PATCH)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoPatchEmbed(nn.Module):
    """DINOv2 ViT with register tokens (VGGT's patch embedding): returns the normalised patch tokens."""

    def __init__(self, dim: int, depth: int, heads: int):
        super().__init__()
        self.patch_embed = PatchProjection(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, REGISTERS, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + POS_GRID ** 2, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim), requires_grad=False)  # unused; kept for loading
        self.blocks = nn.ModuleList(Block(dim, heads, 1.0, eps=1e-6) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self._weights: dict = {}
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.normal_(self.register_tokens, std=1e-6)

    def _axis_weights(self, size: int, device) -> torch.Tensor:
        """size x 37 matrix of antialiased bicubic resampling along one axis. The 2D resize of the position
        table is separable (rows, then columns), so it is two matrix products: computed once per size, they
        are constants when exported (ONNX has no antialiased bicubic resize)."""
        key = (size, str(device))
        if key not in self._weights:
            # resampled along the width of 1-row images (along the height of 1-column ones, PyTorch's antialiased
            # bicubic is not the same linear map)
            eye = torch.eye(POS_GRID, device=device)[None, :, None, :]
            self._weights[key] = F.interpolate(eye, size=(1, size), mode="bicubic", antialias=True)[0, :, 0, :].T
        return self._weights[key]

    def _position(self, rows: int, cols: int) -> torch.Tensor:
        table = self.pos_embed.float()
        grid = table[0, 1:].reshape(POS_GRID, POS_GRID, -1)
        if (rows, cols) != (POS_GRID, POS_GRID):
            a_rows, a_cols = self._axis_weights(rows, grid.device), self._axis_weights(cols, grid.device)
            grid = torch.einsum("ri,ijd,cj->rcd", a_rows, grid, a_cols)
        return torch.cat([table[:, :1], grid.reshape(1, rows * cols, -1)], 1)

    def forward(self, image: torch.Tensor, checkpointing: bool = False) -> torch.Tensor:
        b, h, w = image.shape[0], int(image.shape[-2]), int(image.shape[-1])
        x = self.patch_embed(image)
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], 1)
        x = x + self._position(h // PATCH, w // PATCH).to(x.dtype)
        x = torch.cat([x[:, :1], self.register_tokens.expand(b, -1, -1), x[:, 1:]], 1)
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False) if checkpointing else block(x)
        return self.norm(x)[:, 1 + REGISTERS:]


class VGGTBackbone(nn.Module):
    """`embed_dim` / `depth` / `heads` of the released VGGT-1B: 1024 / 24 / 16 (its DINOv2 ViT-L has the same)."""

    def __init__(self, embed_dim: int, depth: int, heads: int, checkpointing: bool = False):
        super().__init__()
        self.patch_embed = DinoPatchEmbed(embed_dim, depth, heads)
        rope = Rope2D()
        self.frame_blocks = nn.ModuleList(Block(embed_dim, heads, 0.01, True, rope) for _ in range(depth))
        self.global_blocks = nn.ModuleList(Block(embed_dim, heads, 0.01, True, rope) for _ in range(depth))
        # one token variant for the first frame of a sequence and one for the others; a single view is a first frame
        self.camera_token = nn.Parameter(torch.randn(1, 2, 1, embed_dim) * 1e-6)
        self.register_token = nn.Parameter(torch.randn(1, 2, REGISTERS, embed_dim) * 1e-6)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        # neck (ours): last frame + global tokens -> strides 4, 8, 16, 32; a conv stem keeps stride-4 detail
        self.neck = nn.Sequential(nn.Conv2d(2 * embed_dim, embed_dim, 1), group_norm(embed_dim, 8), nn.GELU())
        self.levels = nn.ModuleList(nn.Conv2d(embed_dim, embed_dim, 3, padding=1) for _ in range(4))
        self.stem4 = nn.Sequential(nn.Conv2d(3, embed_dim // 2, 3, 2, 1), nn.GELU(),
                                   nn.Conv2d(embed_dim // 2, embed_dim, 3, 2, 1))
        self.channels = [embed_dim] * 4
        self.checkpointing = checkpointing

    def _run(self, block, x, pos):
        return checkpoint(block, x, pos, use_reentrant=False) if self.checkpointing and self.training else block(x, pos)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        b = image.shape[0]
        h, w = int(image.shape[-2]), int(image.shape[-1])  # plain ints: the token grid is static when exported
        rows, cols = max(1, round(h / PATCH)), max(1, round(w / PATCH))
        x = (image - self.mean) / self.std
        x = F.interpolate(x, size=(rows * PATCH, cols * PATCH), mode="bilinear", align_corners=False)
        patches = self.patch_embed(x, self.checkpointing and self.training)
        special = torch.cat([self.camera_token[:, 0], self.register_token[:, 0]], 1).expand(b, -1, -1)
        tokens = torch.cat([special.to(patches.dtype), patches], 1)
        grid = torch.stack(torch.meshgrid(torch.arange(rows, device=image.device),
                                          torch.arange(cols, device=image.device), indexing="ij"), -1)
        # special tokens sit at position 0; patches count from 1
        pos = torch.cat([torch.zeros(1 + REGISTERS, 2, dtype=torch.long, device=image.device),
                         grid.reshape(-1, 2) + 1])[None].expand(b, -1, -1)
        for frame_block, global_block in zip(self.frame_blocks, self.global_blocks):
            frame_out = self._run(frame_block, tokens, pos)
            tokens = self._run(global_block, frame_out, pos)
        start = 1 + REGISTERS
        last = torch.cat([frame_out[:, start:], tokens[:, start:]], -1)          # as VGGT's heads read it
        fmap = self.neck(last.transpose(1, 2).reshape(b, -1, rows, cols))
        sizes = [(math.ceil(h / s), math.ceil(w / s)) for s in (4, 8, 16, 32)]
        feats = [conv(F.interpolate(fmap, size=size, mode="bilinear", align_corners=False))
                 for conv, size in zip(self.levels, sizes)]
        feats[0] = feats[0] + self.stem4(image)
        return feats
