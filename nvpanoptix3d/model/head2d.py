"""The 2D stage's heads: an FPN pixel decoder, a Mask2Former-style query decoder and a depth head."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..config import ModelConfig
from .backbone import sine_position
from .blocks import group_norm


@dataclass
class Output2D:
    mask_features: torch.Tensor   # B x D x H/4 x W/4 per-pixel embeddings
    class_logits: torch.Tensor    # B x N x num_classes (class 0 = no object)
    mask_logits: torch.Tensor     # B x N x H/4 x W/4
    query_embed: torch.Tensor     # B x N x D mask embeddings of the queries
    depth: torch.Tensor           # B x H/4 x W/4 metres
    aux: list[tuple[torch.Tensor, torch.Tensor]]  # per earlier decoder layer (class_logits, mask_logits)


class PixelDecoder(nn.Module):
    def __init__(self, in_channels: list[int], dim: int):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in in_channels)
        self.smooth = nn.ModuleList(nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), group_norm(dim, 8), nn.GELU())
                                    for _ in in_channels)
        self.mask_proj = nn.Conv2d(dim, dim, 1)

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Returns stride-4 mask features and the stride 32, 16, 8 maps for the query decoder."""
        x = self.smooth[-1](self.lateral[-1](feats[-1]))
        outs = [x]
        for level in range(len(feats) - 2, -1, -1):
            lat = self.lateral[level](feats[level])
            x = self.smooth[level](lat + F.interpolate(x, size=lat.shape[-2:], mode="nearest"))
            outs.append(x)
        return self.mask_proj(outs[-1]), outs[:3]


class QueryDecoder(nn.Module):
    def __init__(self, cfg: ModelConfig, pixel_dim: int):
        super().__init__()
        mf = cfg.mask_former
        d = mf.hidden_dim
        self.nheads = mf.nheads
        self.queries = nn.Embedding(mf.num_object_queries, d)
        self.query_pos = nn.Embedding(mf.num_object_queries, d)
        self.level_embed = nn.Embedding(3, d)
        self.memory_proj = nn.Linear(pixel_dim, d)
        self.layers = nn.ModuleList(nn.TransformerDecoderLayer(d, mf.nheads, 4 * d, dropout=0.0, batch_first=True,
                                                               norm_first=True) for _ in range(mf.dec_layers))
        self.norm = nn.LayerNorm(d)
        self.class_head = nn.Linear(d, cfg.sem_seg_head.num_classes)
        self.mask_embed = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, pixel_dim))

    def predict(self, q: torch.Tensor, mask_features: torch.Tensor):
        q = self.norm(q)
        embed = self.mask_embed(q)
        return self.class_head(q), torch.einsum("bnd,bdhw->bnhw", embed, mask_features), embed

    def forward(self, memories: list[torch.Tensor], mask_features: torch.Tensor):
        b = mask_features.shape[0]
        mem, sizes = [], []
        for level, m in enumerate(memories):
            h, w = m.shape[-2:]
            pos = sine_position(h, w, m.shape[1], m.device)
            mem.append(self.memory_proj(m.flatten(2).transpose(1, 2) + pos) + self.level_embed.weight[level])
            sizes.append((h, w))
        q = self.queries.weight[None].expand(b, -1, -1)
        pos = self.query_pos.weight[None]
        cls, masks, embed = self.predict(q, mask_features)
        aux = []
        for i, layer in enumerate(self.layers):
            aux.append((cls, masks))
            level = i % len(mem)
            q = layer(q + pos, mem[level], memory_mask=self.attention_mask(masks, sizes[level]))
            cls, masks, embed = self.predict(q, mask_features)
        return cls, masks, embed, aux

    def attention_mask(self, mask_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Mask2Former's masked attention: a query attends only inside its current mask (everywhere when
        that mask is empty), which is what makes the query head converge in few steps."""
        small = F.interpolate(mask_logits.detach().float(), size=size, mode="bilinear", align_corners=False)
        blocked = small.flatten(2) < 0.0
        blocked = blocked & ~blocked.all(-1, keepdim=True)
        return blocked.repeat_interleave(self.nheads, 0)


class DepthHead(nn.Module):
    """Its own light pyramid over the backbone's four strides: depth needs the room's global layout (stride 32)
    at stride-4 detail, and sharing the mask features left it to segmentation's gradients (it never learned)."""

    def __init__(self, in_channels: list[int], dim: int, depth_min: float, depth_max: float):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in in_channels)
        self.fuse = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), group_norm(dim, 8), nn.GELU(),
                                  nn.Conv2d(dim, dim, 3, padding=1), group_norm(dim, 8), nn.GELU(),
                                  nn.Conv2d(dim, 1, 1))
        self.depth_min, self.depth_max = depth_min, depth_max

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        x = sum(F.interpolate(lat(f), size=size, mode="bilinear", align_corners=False) if i else lat(f)
                for i, (lat, f) in enumerate(zip(self.lateral, feats)))
        log_min, log_max = math.log(self.depth_min), math.log(self.depth_max)
        t = torch.sigmoid(self.fuse(x)[:, 0].float())
        return torch.exp(log_min + (log_max - log_min) * t)


class Head2D(nn.Module):
    def __init__(self, cfg: ModelConfig, in_channels: list[int], depth_range: tuple[float, float]):
        super().__init__()
        dim = cfg.sem_seg_head.hidden_dim
        self.pixel_decoder = PixelDecoder(in_channels, dim)
        self.query_decoder = QueryDecoder(cfg, dim)
        self.depth_head = DepthHead(in_channels, dim, *depth_range)

    def forward(self, feats: list[torch.Tensor]) -> Output2D:
        mask_features, memories = self.pixel_decoder(feats)
        cls, masks, embed, aux = self.query_decoder(memories, mask_features)
        return Output2D(mask_features, cls, masks, embed, self.depth_head(feats), aux)
