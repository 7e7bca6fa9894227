"""What the data loaders hand to the model: one typed sample per frame and a collated batch."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class FrameSample:
    name: str                                  # "<scene_id>/<image_id>"
    image: torch.Tensor                        # 3 x H x W float in [0, 1]
    depth: torch.Tensor | None = None          # H x W metres, 0 = invalid
    semantic2d: torch.Tensor | None = None     # H x W int64
    instance2d: torch.Tensor | None = None     # H x W int64
    occupied: torch.Tensor | None = None       # M x 3 int64 indices of occupied voxels in the 256^3 grid
    semantic3d: torch.Tensor | None = None     # M int64
    instance3d: torch.Tensor | None = None     # M int64


@dataclass
class Batch:
    names: list[str]
    images: torch.Tensor                                  # B x 3 x H x W
    depths: torch.Tensor | None = None                    # B x H x W
    semantic2d: torch.Tensor | None = None                # B x H x W
    instance2d: torch.Tensor | None = None
    occupied: list[torch.Tensor] = field(default_factory=list)
    semantic3d: list[torch.Tensor] = field(default_factory=list)
    instance3d: list[torch.Tensor] = field(default_factory=list)

    @property
    def has_2d_truth(self) -> bool:
        return self.semantic2d is not None

    @property
    def has_3d_truth(self) -> bool:
        return bool(self.occupied)

    def to(self, device) -> "Batch":
        move = lambda t: t.to(device, non_blocking=True) if isinstance(t, torch.Tensor) else t  # noqa: E731
        return Batch(self.names, move(self.images), move(self.depths), move(self.semantic2d), move(self.instance2d),
                     [move(t) for t in self.occupied], [move(t) for t in self.semantic3d],
                     [move(t) for t in self.instance3d])

    def mirrored(self, which: torch.Tensor, mirror_x: int | None = None, size_x: int = 256) -> "Batch":
        """The frames `which` (B bool) mirrored left-right with their depth and 2D labels, and their 3D truth when
        `mirror_x` says where voxel i goes (mirror_x - i along x, FrustumGrid.mirror_x_index; voxels leaving the
        size_x-wide grid are dropped)."""
        if self.has_3d_truth and mirror_x is None:
            raise ValueError("Batch.mirrored: a batch with 3D truth needs mirror_x (FrustumGrid.mirror_x_index)")
        def flip(t):  # noqa: E306
            if t is None:
                return None
            chosen = which.to(t.device).view(-1, *([1] * (t.dim() - 1)))
            return torch.where(chosen, t.flip(-1), t)
        occupied, semantic3d, instance3d = list(self.occupied), list(self.semantic3d), list(self.instance3d)
        for i in which.nonzero().flatten().tolist() if self.has_3d_truth else ():
            x = mirror_x - occupied[i][:, 0]
            keep = (x >= 0) & (x < size_x)
            occupied[i] = torch.cat([x[:, None], occupied[i][:, 1:]], 1)[keep]
            semantic3d[i], instance3d[i] = semantic3d[i][keep], instance3d[i][keep]
        return Batch(self.names, flip(self.images), flip(self.depths), flip(self.semantic2d), flip(self.instance2d),
                     occupied, semantic3d, instance3d)


def collate(samples: list[FrameSample]) -> Batch:
    stack = lambda key: torch.stack([getattr(s, key) for s in samples]) \
        if getattr(samples[0], key) is not None else None  # noqa: E731
    listed = lambda key: [getattr(s, key) for s in samples] if samples[0].occupied is not None else []  # noqa: E731
    return Batch([s.name for s in samples], stack("image"), stack("depth"), stack("semantic2d"), stack("instance2d"),
                 listed("occupied"), listed("semantic3d"), listed("instance3d"))


def sparse_truth(semantic: torch.Tensor, instance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dense 256^3 label volumes -> (occupied indices M x 3, semantic M, instance M)."""
    occupied = (semantic > 0).nonzero()
    i, j, k = occupied.unbind(-1)
    return occupied, semantic[i, j, k].long(), instance[i, j, k].long()
