"""The whole model: image -> 2D stage -> 3D stage. Each part is built from the config by its factory."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn import functional as F

from ..config import ExperimentConfig
from ..geometry import FrustumGrid, Intrinsics
from .backbone import get_backbone
from .frustum3d import Frustum3D, Output3D
from .head2d import Head2D, Output2D
from .layout import get_layout


@dataclass
class ModelOutput:
    out2d: Output2D
    out3d: Output3D | None
    lifted_depth: torch.Tensor | None = None   # B x h x w: the depth the 3D stage lifted (None without it)


@dataclass
class StageLoad:
    """Names of a checkpoint's stage tensors: copied, or left out (shape or name mismatch)."""
    loaded: list[str]
    skipped: list[str]


def get_grid(cfg: ExperimentConfig) -> FrustumGrid:
    f3 = cfg.model.frustum3d
    width, height = cfg.dataset.target_size
    k = Intrinsics.front3d().scaled(width, height)
    return FrustumGrid(k, f3.voxel_size, cfg.dataset.depth_min, cfg.dataset.depth_max, tuple(f3.grid_dimensions))


def aligned_to(depth: torch.Tensor, given: torch.Tensor, min_pixels: int = 200,
               inlier_band: float = 0.15) -> torch.Tensor:
    """B x H x W predicted depth with each image's scale and shift fitted (least squares) to the pixels where
    `given` > 0 and that agree with the prediction's median scale within inlier_band (a multi-view depth's
    outliers do not pull the fit); images with fewer such pixels keep the prediction."""
    out = depth.clone()
    for i in range(depth.shape[0]):
        valid = (given[i] > 0) & (depth[i] > 0)
        if int(valid.sum()) < min_pixels:
            continue
        x, y = depth[i][valid].double(), given[i][valid].double()
        ratio = (y / x).median()
        inlier = ((y / (x * ratio)) - 1).abs() < inlier_band
        if int(inlier.sum()) < min_pixels:
            continue
        x, y = x[inlier], y[inlier]
        scale, shift = torch.linalg.lstsq(torch.stack([x, torch.ones_like(x)], 1), y[:, None]).solution[:, 0].tolist()
        if scale > 0:
            out[i] = (depth[i] * scale + shift).clamp(min=0.05)
    return out


class PanopticReconstruction(nn.Module):
    def __init__(self, cfg: ExperimentConfig, max_voxels: int | None = None):
        super().__init__()
        self.cfg = cfg
        checkpointing = cfg.train.activation_checkpoint
        self.backbone = get_backbone(cfg.model, checkpointing)
        self.head2d = Head2D(cfg.model, self.backbone.channels, (cfg.dataset.depth_min, cfg.dataset.depth_max))
        self.enable_3d = cfg.dataset.enable_3d
        self.stage3d = Frustum3D(cfg.model, get_grid(cfg), max_voxels or cfg.model.frustum3d.max_voxels,
                                 cfg.postprocess.occupancy_threshold) if self.enable_3d else None
        self.layout = get_layout(cfg.postprocess.layout_planes, get_grid(cfg).intrinsics)
        self.flip_average = cfg.postprocess.flip_average

    def forward_2d(self, images: torch.Tensor) -> Output2D:
        out = self.head2d(self.backbone(images), images)
        if self.flip_average and not self.training:
            # the depth head is not mirror-equivariant: its estimate of the mirrored image is a second opinion
            # whose errors only partly agree with the first, so the mean is closer to the truth
            flipped = images.flip(-1)
            mirrored = self.head2d.depth_head(self.backbone(flipped), flipped).flip(-1)
            out = replace(out, depth=0.5 * (out.depth + mirrored))
        return out

    def lifting_depth(self, out2d: Output2D, gt_depth: torch.Tensor | None = None,
                      use_given: torch.Tensor | None = None, align_fill: bool = False) -> torch.Tensor:
        """The depth the 3D stage lifts with: the 2D stage's, through the layout out of training; in the frames
        `use_given` (B bool) picks, the given depth (gt_depth, B x H x W: ground truth, a sensor's or multi-view)
        wherever it has a value. align_fill: the prediction that fills the rest is first fitted (scale and
        shift) to the given depth's pixels, so a multi-view depth's scale carries to the whole frame."""
        depth = out2d.depth.detach()
        if self.layout is not None and not self.training:
            depth = self.layout(depth, out2d.class_logits.detach(), out2d.mask_logits.detach())
        if gt_depth is not None and use_given is not None:
            gt = F.interpolate(gt_depth[:, None], size=depth.shape[-2:], mode="nearest")[:, 0].to(depth.dtype)
            if align_fill:
                depth = aligned_to(depth, gt)
                # given pixels far from the fitted prediction are a matcher's outliers: the prediction holds there
                gt = torch.where((gt - depth).abs() > 0.25 * depth, torch.zeros_like(gt), gt)
            pick = use_given.to(depth.device).view(-1, 1, 1)
            depth = torch.where(pick & (gt > 0), gt, depth)
        return depth

    def forward(self, images: torch.Tensor, forced64=None, forced128=None, gt_depth=None,
                use_given: torch.Tensor | None = None, align_fill: bool = False) -> ModelOutput:
        """Training may lift some frames (`use_given`, B bool) with ground-truth depth (gt_depth), so the 3D stage
        learns to use a precise depth cue before the depth head can give one."""
        out2d = self.forward_2d(images)
        out3d = depth = None
        if self.stage3d is not None:
            depth = self.lifting_depth(out2d, gt_depth, use_given, align_fill)
            # the 3D losses train the 3D stage only: with the seed's weights (completion 50/25/10, panoptic 25)
            # they would otherwise drown the 2D losses in the shared query embeddings
            out3d = self.stage3d(out2d.mask_features, depth, out2d.query_embed.detach(), forced64, forced128)
        return ModelOutput(out2d, out3d, depth)

    # staged initialisation: the 2D stage is backbone + head2d, the 3D stage is stage3d
    STAGE_PREFIXES = {"2d": ("backbone.", "head2d."), "3d": ("stage3d.",)}

    def stage_modules(self, stage: str) -> list[nn.Module]:
        return [getattr(self, prefix.rstrip(".")) for prefix in self.STAGE_PREFIXES[stage]]

    def load_stage(self, state: dict, stage: str) -> StageLoad:
        """Copy a stage's tensors whose names and shapes fit; parts the checkpoint lacks keep their own start."""
        own = self.state_dict()
        prefixes = self.STAGE_PREFIXES[stage]
        result = StageLoad([], [])
        for name, value in state.items():
            name = name[len("model."):] if name.startswith("model.") else name
            if not name.startswith(prefixes):
                continue
            if name in own and own[name].shape == value.shape:
                own[name] = value
                result.loaded.append(name)
            else:
                result.skipped.append(name)
        self.load_state_dict(own)
        return result
