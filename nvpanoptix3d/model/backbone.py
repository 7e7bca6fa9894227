"""Image backbones: VGGT's aggregator (model/vggt.py) and transformers' ResNet, both returning strides 4, 8, 16, 32."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from ..config import ModelConfig, SpecError
from .vggt import VGGTBackbone


class ResNetBackbone(nn.Module):
    """transformers' ResNet (random init, or weights from pretrained_backbone_path)."""

    SIZES = {"resnet_tiny": ([32, 64, 128, 256], [1, 1, 1, 1], 32, "basic"),
             "resnet18": ([64, 128, 256, 512], [2, 2, 2, 2], 64, "basic"),
             "resnet34": ([64, 128, 256, 512], [3, 4, 6, 3], 64, "basic")}

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
        heads = math.gcd(cfg.embed_dim, max(1, cfg.embed_dim // 64))  # VGGT's 64 channels a head where they divide
        if (cfg.embed_dim // heads) % 4:
            raise SpecError(f"model.embed_dim: {cfg.embed_dim} leaves {cfg.embed_dim // heads} channels per attention "
                            "head; the vggt backbone's 2D rotary embedding needs a multiple of 4 (e.g. 128, 1024)")
        backbone = VGGTBackbone(cfg.embed_dim, cfg.depth, heads, checkpointing)
    elif cfg.backbone_type in ResNetBackbone.SIZES:
        backbone = ResNetBackbone(cfg.backbone_type, checkpointing)
    else:
        raise SpecError(f"model.backbone_type: {cfg.backbone_type!r} is not one of vggt, "
                         f"{', '.join(ResNetBackbone.SIZES)}")
    if cfg.pretrained_backbone_path:
        load_backbone_weights(backbone, cfg.pretrained_backbone_path)
    return backbone


# prefixes under which a backbone's tensors are stored: a released VGGT checkpoint (its heads are ignored) and
# our own checkpoints / exports
BACKBONE_PREFIXES = ("aggregator.", "model.backbone.", "backbone.")


def load_backbone_weights(backbone: nn.Module, path: str) -> list[str]:
    """Load the tensors that fit (safetensors or torch file); returns the backbone's names that got nothing."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"model.pretrained_backbone_path: {path} not found")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(p))
    else:
        try:  # weights only: a file that needs more could run code
            state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - refused or unreadable, this file's problem either way
            raise SpecError(f"model.pretrained_backbone_path: {path} is not a plain tensor file "
                            f"({type(exc).__name__}); pass a .safetensors file") from None
        state = state.get("state_dict", state.get("model", state))
    for prefix in BACKBONE_PREFIXES:
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            break
    own = backbone.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not fitting:
        raise SpecError(f"model.pretrained_backbone_path: no tensor of {path} fits this backbone "
                        f"({type(backbone).__name__}); check model.backbone_type / embed_dim / depth")
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
