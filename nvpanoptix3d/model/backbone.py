"""Image backbones: a VGGT-style transformer and transformers' ResNet, both returning strides 4, 8, 16, 32."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import ModelConfig, SpecError


class VGGTStyleBackbone(nn.Module):
    """Patch embedding (stride 8) + pre-norm transformer blocks over the frame's tokens, as VGGT's frame
    attention does for one view; a small conv pyramid turns the token map into four strides."""

    patch = 8

    def __init__(self, embed_dim: int, depth: int, heads: int = 4, checkpointing: bool = False):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, embed_dim, self.patch, self.patch)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, 30, 40))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(embed_dim, heads, embed_dim * 4, dropout=0.0,
                                                               batch_first=True, norm_first=True, activation="gelu")
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim)
        self.up4 = nn.Sequential(nn.ConvTranspose2d(embed_dim, embed_dim, 2, 2), nn.GELU())
        self.stem4 = nn.Sequential(nn.Conv2d(3, embed_dim // 2, 3, 2, 1), nn.GELU(),
                                   nn.Conv2d(embed_dim // 2, embed_dim, 3, 2, 1))  # fine detail for stride 4
        self.down16 = nn.Conv2d(embed_dim, embed_dim, 3, 2, 1)
        self.down32 = nn.Conv2d(embed_dim, embed_dim, 3, 2, 1)
        self.channels = [embed_dim] * 4
        self.checkpointing = checkpointing

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(image)
        b, c, h, w = x.shape
        pos = self.pos_embed if self.pos_embed.shape[-2:] == (h, w) else \
            nn.functional.interpolate(self.pos_embed, (h, w), mode="bilinear", align_corners=False)
        tokens = (x + pos).flatten(2).transpose(1, 2)
        for block in self.blocks:
            tokens = checkpoint(block, tokens, use_reentrant=False) if self.checkpointing and self.training \
                else block(tokens)
        s8 = self.norm(tokens).transpose(1, 2).reshape(b, c, h, w)
        s4 = self.up4(s8) + self.stem4(image)
        s16 = self.down16(s8)
        return [s4, s8, s16, self.down32(s16)]


class ResNetBackbone(nn.Module):
    """transformers' ResNet (random init, or weights from pretrained_backbone_path)."""

    SIZES = {"resnet_tiny": ([32, 64, 128, 256], [1, 1, 1, 1], 32, "basic"),
             "resnet18": ([64, 128, 256, 512], [2, 2, 2, 2], 64, "basic")}

    def __init__(self, kind: str, checkpointing: bool = False):
        super().__init__()
        from transformers import ResNetConfig
        from transformers.models.resnet.modeling_resnet import ResNetBackbone as HFResNet
        hidden, depths, embed, layer = self.SIZES[kind]
        config = ResNetConfig(embedding_size=embed, hidden_sizes=hidden, depths=depths, layer_type=layer,
                              out_features=["stage1", "stage2", "stage3", "stage4"])
        self.net = HFResNet(config)
        if checkpointing:
            self.net.gradient_checkpointing_enable() if self.net.supports_gradient_checkpointing else None
        self.channels = hidden
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        return list(self.net((image - self.mean) / self.std).feature_maps)


def get_backbone(cfg: ModelConfig, checkpointing: bool = False) -> nn.Module:
    if cfg.backbone_type == "vggt":
        backbone = VGGTStyleBackbone(cfg.embed_dim, cfg.depth, max(1, cfg.embed_dim // 32), checkpointing)
    elif cfg.backbone_type in ResNetBackbone.SIZES:
        backbone = ResNetBackbone(cfg.backbone_type, checkpointing)
    else:
        raise SpecError(f"model.backbone_type: {cfg.backbone_type!r} is not one of vggt, resnet_tiny, resnet18")
    if cfg.pretrained_backbone_path:
        load_backbone_weights(backbone, cfg.pretrained_backbone_path)
    return backbone


def load_backbone_weights(backbone: nn.Module, path: str) -> list[str]:
    """Load matching tensors (safetensors or torch file); returns the names that did not fit."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"model.pretrained_backbone_path: {path} not found")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(p))
    else:
        state = torch.load(p, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
    own = backbone.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    backbone.load_state_dict(fitting, strict=False)
    return sorted(set(own) - set(fitting))


def sine_position(h: int, w: int, dim: int, device) -> torch.Tensor:
    """2D sine position encoding, (h*w) x dim."""
    y, x = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                          torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    quarter = dim // 4
    freq = torch.exp(torch.arange(quarter, device=device, dtype=torch.float32) * (-math.log(10000.0) / quarter))
    parts = [torch.sin(x.flatten()[:, None] * freq), torch.cos(x.flatten()[:, None] * freq),
             torch.sin(y.flatten()[:, None] * freq), torch.cos(y.flatten()[:, None] * freq)]
    pos = torch.cat(parts, -1)
    return nn.functional.pad(pos, (0, dim - pos.shape[-1]))
