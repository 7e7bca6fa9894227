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
    at stride-4 detail, and sharing the mask features left it to segmentation's gradients (it never learned).
    With refine_layers > 0 a DepthRefiner corrects that pyramid's estimate (in the sigmoid's logit, so depth
    stays within the range); with guide_channels > 0 an ImageGuide takes it to stride 2."""

    def __init__(self, in_channels: list[int], dim: int, depth_min: float, depth_max: float,
                 refine_layers: int = 0, guide_channels: int = 0):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in in_channels)
        self.fuse = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), group_norm(dim, 8), nn.GELU(),
                                  nn.Conv2d(dim, dim, 3, padding=1), group_norm(dim, 8), nn.GELU(),
                                  nn.Conv2d(dim, 1, 1))
        self.refiner = DepthRefiner(in_channels, 2 * dim, refine_layers) if refine_layers else None
        self.guide = ImageGuide(dim, guide_channels) if guide_channels else None
        self.depth_min, self.depth_max = depth_min, depth_max

    def forward(self, feats: list[torch.Tensor], images: torch.Tensor | None = None) -> torch.Tensor:
        """feats: the backbone's strides 4..32; images (B x 3 x H x W, the backbone's input) feed the guide."""
        size = feats[0].shape[-2:]
        x = sum(F.interpolate(lat(f), size=size, mode="bilinear", align_corners=False) if i else lat(f)
                for i, (lat, f) in enumerate(zip(self.lateral, feats)))
        hidden = self.fuse[:-1](x)
        logit = self.fuse[-1](hidden)[:, 0].float()
        if self.refiner is not None:
            logit = logit + self.refiner(feats, torch.sigmoid(logit)[:, None]).float()
        if self.guide is not None:
            if images is None:
                raise ValueError("model.depth_head.guide_channels > 0: the depth head needs the images")
            logit = self.guide(images, hidden, logit)
        log_min, log_max = math.log(self.depth_min), math.log(self.depth_max)
        return torch.exp(log_min + (log_max - log_min) * torch.sigmoid(logit))


class ImageGuide(nn.Module):
    """Depth at stride 2 from the stride-4 estimate and the image itself. At stride 4 a lamp's stem or a chair's
    legs are a pixel wide or less, and the pyramid gives them their background's depth (24 test frames: lamps'
    mean signed error +43%). A small convolution stack reads the image at stride 2 beside the pyramid's last
    features and estimate, both upsampled; its last layer starts at zero, so a guide added to a trained head
    starts from that head's depth, bilinearly upsampled."""

    def __init__(self, dim: int, channels: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, stride=2, padding=1), group_norm(channels, 8), nn.GELU(),
                                  nn.Conv2d(channels, channels, 3, padding=1), group_norm(channels, 8), nn.GELU())
        self.mix = nn.Sequential(nn.Conv2d(channels + dim + 1, channels, 3, padding=1), group_norm(channels, 8),
                                 nn.GELU(), nn.Conv2d(channels, channels, 3, padding=1), group_norm(channels, 8),
                                 nn.GELU())
        self.delta = nn.Conv2d(channels, 1, 3, padding=1)
        nn.init.zeros_(self.delta.weight)
        nn.init.zeros_(self.delta.bias)

    def forward(self, images: torch.Tensor, hidden: torch.Tensor, logit: torch.Tensor) -> torch.Tensor:
        """images B x 3 x H x W, hidden B x dim x H/4 x W/4, logit B x H/4 x W/4 -> B x H/2 x W/2 logit."""
        image = self.stem(images)
        size = image.shape[-2:]
        up = F.interpolate(logit[:, None], size=size, mode="bilinear", align_corners=False)
        features = F.interpolate(hidden, size=size, mode="bilinear", align_corners=False)
        delta = self.delta(self.mix(torch.cat([image, features.to(image.dtype), up.to(image.dtype)], 1)))
        return (up + delta.float())[:, 0]


class DepthRefiner(nn.Module):
    """Corrects a depth estimate with context from the whole image. Walls are most of the depth error: planes
    whose distance the floor and the other walls pin down, which a local pyramid does not see. Self-attention
    over the stride-16 map (300 tokens at 320 x 240) relates every region to every other, then a top-down pass
    brings the correction to stride 4. Each level also sees the estimate it corrects; the last layer starts at
    zero, so a refiner added to a trained head starts from that head's depth."""

    def __init__(self, in_channels: list[int], dim: int, layers: int, heads: int = 4):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c + 1, dim, 1) for c in in_channels)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.context = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.smooth = nn.ModuleList(nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), group_norm(dim, 8), nn.GELU())
                                    for _ in in_channels[:-1])
        self.delta = nn.Conv2d(dim, 1, 3, padding=1)
        nn.init.zeros_(self.delta.weight)
        nn.init.zeros_(self.delta.bias)

    def forward(self, feats: list[torch.Tensor], estimate: torch.Tensor) -> torch.Tensor:
        """feats: the backbone's strides 4..32; estimate: B x 1 x H/4 x W/4 in [0, 1] -> B x H/4 x W/4 logit change."""
        def lateral(level: int) -> torch.Tensor:
            f = feats[level]
            at_level = adaptive_mean(estimate, f.shape[-2:]) if level else estimate
            return self.lateral[level](torch.cat([f, at_level.to(f.dtype)], 1))

        def up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
            return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)

        coarse = len(feats) - 2
        x = lateral(coarse)
        x = x + up(lateral(coarse + 1), x)
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2) + sine_position(h, w, c, x.device).to(x.dtype)
        x = self.smooth[coarse](self.context(tokens).transpose(1, 2).reshape(b, c, h, w))
        for level in range(coarse - 1, -1, -1):
            lat = lateral(level)
            x = self.smooth[level](lat + up(x, lat))
        return self.delta(x)[:, 0]


def adaptive_mean(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """F.adaptive_avg_pool2d(x, size) as two products with bin matrices: the ONNX exporter refuses adaptive pooling
    where it cannot read the input's size, and the stride-32 map's bins overlap (60 rows -> 8), so no fixed
    average pool gives the same result."""
    def bins(n_in: int, n_out: int) -> torch.Tensor:
        i = torch.arange(n_out, device=x.device)  # built where x is: no host-to-device copy per forward
        start, end = (i * n_in) // n_out, ((i + 1) * n_in + n_out - 1) // n_out
        j = torch.arange(n_in, device=x.device)
        inside = (j >= start[:, None]) & (j < end[:, None])
        return (inside / (end - start)[:, None]).to(x.dtype)

    rows, cols = bins(x.shape[-2], size[0]), bins(x.shape[-1], size[1])
    return torch.einsum("hi,bcij,wj->bchw", rows, x, cols)


class Head2D(nn.Module):
    def __init__(self, cfg: ModelConfig, in_channels: list[int], depth_range: tuple[float, float]):
        super().__init__()
        dim = cfg.sem_seg_head.hidden_dim
        self.pixel_decoder = PixelDecoder(in_channels, dim)
        self.query_decoder = QueryDecoder(cfg, dim)
        self.depth_head = DepthHead(in_channels, dim, *depth_range, cfg.depth_head.refine_layers,
                                    cfg.depth_head.guide_channels)

    def forward(self, feats: list[torch.Tensor], images: torch.Tensor | None = None) -> Output2D:
        mask_features, memories = self.pixel_decoder(feats)
        cls, masks, embed, aux = self.query_decoder(memories, mask_features)
        return Output2D(mask_features, cls, masks, embed, self.depth_head(feats, images), aux)
