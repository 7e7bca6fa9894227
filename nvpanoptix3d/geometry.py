"""Camera and camera-frustum grid conventions shared by the synthetic data, the data loaders and the 3D stage.

Camera: OpenCV (x right, y down, z forward), metres. The 256^3 grid follows Dahnert et al.'s frustum code:
the axis-aligned camera-space box of the image corners back-projected at depth_min and depth_max, in voxels,
centred in the grid. Grid axes are (x, y, z) of the camera: voxel [i, j, k] holds the camera point
((i + 0.5 - offset_x) * voxel + box_min_x, ...). At 320 x 240 the extent is 231 x 174 x 187 voxels and the
offsets are (12, 41, 34).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

FRONT3D_FOCAL = 277.1281435  # 60 degree horizontal field of view at 320 px
FRONT3D_SIZE = (320, 240)
# OpenGL camera axes (y up, z backward) <-> OpenCV's (y down, z forward): its own inverse
OPENGL_FLIP = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Intrinsics:
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def front3d(cls) -> "Intrinsics":
        return cls(FRONT3D_FOCAL, FRONT3D_FOCAL, 159.5, 119.5, *FRONT3D_SIZE)

    def scaled(self, width: int, height: int) -> "Intrinsics":
        """K for the image resized to width x height (pixel centres stay aligned)."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5,
                          width, height)

    def matrix4(self) -> np.ndarray:
        k = np.eye(4, dtype=np.float32)
        k[0, 0], k[1, 1], k[0, 2], k[1, 2] = self.fx, self.fy, self.cx, self.cy
        return k

    def project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Continuous pixel coordinates (u, v) of camera-space points (..., 3) in front of the camera."""
        z = points[..., 2].clamp(min=1e-6)
        return points[..., 0] / z * self.fx + self.cx, points[..., 1] / z * self.fy + self.cy

    def pixel_rays(self, device=None) -> torch.Tensor:
        """H x W x 3 camera-space directions with z = 1, so a ray's parameter t is the depth."""
        v, u = torch.meshgrid(torch.arange(self.height, device=device, dtype=torch.float32),
                              torch.arange(self.width, device=device, dtype=torch.float32), indexing="ij")
        return torch.stack([(u - self.cx) / self.fx, (v - self.cy) / self.fy, torch.ones_like(u)], dim=-1)


@dataclass(frozen=True)
class FrustumGrid:
    intrinsics: Intrinsics
    voxel_size: float = 0.03
    depth_min: float = 0.4
    depth_max: float = 6.0
    dims: tuple[int, int, int] = (256, 256, 256)

    @property
    def box_min(self) -> np.ndarray:
        return self._box()[0]

    def _box(self) -> tuple[np.ndarray, np.ndarray]:
        k = self.intrinsics
        corners = []
        for u in (0.0, float(k.width)):
            for v in (0.0, float(k.height)):
                for z in (self.depth_min, self.depth_max):
                    corners.append(((u - k.cx) / k.fx * z, (v - k.cy) / k.fy * z, z))
        c = np.array(corners, dtype=np.float64)
        return c.min(0), c.max(0)

    @property
    def extent(self) -> np.ndarray:
        lo, hi = self._box()
        return np.ceil((hi - lo) / self.voxel_size - 1e-6).astype(np.int64)

    @property
    def offset(self) -> np.ndarray:
        return np.floor((np.array(self.dims) - self.extent) / 2).astype(np.int64)

    def camera_to_grid(self, points: torch.Tensor) -> torch.Tensor:
        """Continuous grid coordinates (voxel [i,j,k] spans [i, i+1)) of camera-space points (..., 3)."""
        lo = torch.as_tensor(self.box_min, dtype=points.dtype, device=points.device)
        off = torch.as_tensor(self.offset, dtype=points.dtype, device=points.device)
        return (points - lo) / self.voxel_size + off

    def grid_to_camera(self, index: torch.Tensor) -> torch.Tensor:
        """Camera-space centres of voxels given by integer indices (..., 3)."""
        lo = torch.as_tensor(self.box_min, dtype=torch.float32, device=index.device)
        off = torch.as_tensor(self.offset, dtype=torch.float32, device=index.device)
        return (index.float() + 0.5 - off) * self.voxel_size + lo

    @property
    def mirror_x_index(self) -> int:
        """Under the camera's left-right mirror (x -> -x) voxel i along x goes to mirror_x_index - i; the grid is
        not centred on the optical axis, so that is exact only up to a fraction of a voxel (0.22 on 3D-FRONT's)."""
        centre = self.offset[0] - self.box_min[0] / self.voxel_size
        return int(round(2 * centre - 1))

    def frustum_mask(self, device=None) -> torch.Tensor:
        """dims bool: voxels whose centre projects into the image at a depth in [depth_min, depth_max]."""
        idx = torch.stack(torch.meshgrid(*[torch.arange(d, device=device) for d in self.dims], indexing="ij"), -1)
        p = self.grid_to_camera(idx)
        k = self.intrinsics
        z = p[..., 2]
        u, v = k.project(p)
        return (z >= self.depth_min) & (z <= self.depth_max) & (u >= -0.5) & (u < k.width - 0.5) & \
            (v >= -0.5) & (v < k.height - 0.5)


def front3d_grid() -> FrustumGrid:
    return FrustumGrid(Intrinsics.front3d())


def yaw_matrix(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """4x4 camera-to-world (OpenCV camera) for a world with z up."""
    forward = target - eye
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, np.array([0.0, 0.0, 1.0]))
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, forward, eye
    return pose
