"""Inference outputs per image: the 3D volume (.npz), voxel meshes (.ply), an objects JSON and PNG previews."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .. import fileio
from ..geometry import FrustumGrid
from ..labels import COLORS, NAMES, NUM_CLASSES
from ..model.postprocess import Panoptic2D, Panoptic3D
from ..viewer.page import PageCamera, write_scene_page

_FACES = [  # direction, the 4 corners (as 0/1 offsets) of the face on that side, counter-clockwise seen from outside
    ((-1, 0, 0), [(0, 0, 0), (0, 0, 1), (0, 1, 1), (0, 1, 0)]),
    ((1, 0, 0), [(1, 0, 0), (1, 1, 0), (1, 1, 1), (1, 0, 1)]),
    ((0, -1, 0), [(0, 0, 0), (1, 0, 0), (1, 0, 1), (0, 0, 1)]),
    ((0, 1, 0), [(0, 1, 0), (0, 1, 1), (1, 1, 1), (1, 1, 0)]),
    ((0, 0, -1), [(0, 0, 0), (0, 1, 0), (1, 1, 0), (1, 0, 0)]),
    ((0, 0, 1), [(0, 0, 1), (1, 0, 1), (1, 1, 1), (0, 1, 1)]),
]


def instance_colors(ids: np.ndarray) -> np.ndarray:
    """Stable distinct colours from instance ids (golden-ratio hues); 0 is grey."""
    hue = (ids * 0.618033988749895) % 1.0
    k = (np.arange(3)[None] * 2.0 / 3.0 + hue[:, None]) % 1.0
    rgb = (0.5 + 0.45 * np.cos(2 * np.pi * k)) * 255
    rgb[ids == 0] = 160
    return rgb.astype(np.uint8)


def voxel_faces(index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exposed faces of a set of integer voxels (any sign): (corners V x 3 in voxel units, faces F x 4 of corner
    rows, the voxel of each corner V)."""
    if len(index) == 0:
        return np.zeros((0, 3), np.int64), np.zeros((0, 4), np.int32), np.zeros(0, np.int64)
    shifted = index - index.min(0) + 1
    side = int(shifted.max()) + 2
    sorted_keys = np.sort((shifted[:, 0] * side + shifted[:, 1]) * side + shifted[:, 2])
    vert_blocks, face_blocks, owner_blocks, offset = [], [], [], 0
    for direction, corners in _FACES:
        nb = shifted + np.array(direction)
        nk = (nb[:, 0] * side + nb[:, 1]) * side + nb[:, 2]
        pos = np.searchsorted(sorted_keys, nk).clip(max=len(sorted_keys) - 1)
        exposed = np.nonzero(sorted_keys[pos] != nk)[0]
        n = len(exposed)
        vert_blocks.append((index[exposed][:, None, :] + np.array(corners)[None]).reshape(-1, 3))
        face_blocks.append(offset + np.arange(n * 4).reshape(n, 4))
        owner_blocks.append(np.repeat(exposed, 4))
        offset += n * 4
    return np.concatenate(vert_blocks), np.concatenate(face_blocks).astype(np.int32), np.concatenate(owner_blocks)


def voxel_mesh(index: np.ndarray, grid: FrustumGrid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exposed faces of occupied frustum voxels: (vertices V x 3 camera metres, faces F x 4, voxel of each vertex)."""
    corners, faces, owners = voxel_faces(index)
    lo, off = np.asarray(grid.box_min), np.asarray(grid.offset)
    return ((corners - off) * grid.voxel_size + lo).astype(np.float32), faces, owners


def write_ply(path: Path, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray, semantic: np.ndarray,
              instance: np.ndarray, frame: str = "camera frame (OpenCV)") -> None:
    """Binary little-endian PLY with per-vertex colour, semantic and instance (Open3D / trimesh / MeshLab)."""
    vtype = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1"),
                      ("semantic", "<i4"), ("instance", "<i4")])
    v = np.empty(len(vertices), vtype)
    v["x"], v["y"], v["z"] = vertices.T
    v["red"], v["green"], v["blue"] = colors.T
    v["semantic"], v["instance"] = semantic, instance
    ftype = np.dtype([("n", "u1"), ("idx", "<i4", (4,))])
    f = np.empty(len(faces), ftype)
    f["n"], f["idx"] = 4, faces
    header = (f"ply\nformat binary_little_endian 1.0\ncomment nvpanoptix3d voxel reconstruction, {frame}, "
              f"metres\nelement vertex {len(v)}\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nproperty int semantic\n"
              f"property int instance\nelement face {len(f)}\nproperty list uchar int vertex_indices\nend_header\n")
    fileio.write_bytes(path, header.encode() + v.tobytes() + f.tobytes())


def objects(pan: Panoptic3D, grid: FrustumGrid) -> list[dict]:
    index = pan.index.cpu().numpy()
    sem, inst = pan.semantic.cpu().numpy(), pan.instance.cpu().numpy()
    out = []
    for iid in np.unique(inst[inst > 0]):
        sel = inst == iid
        vox = index[sel]
        cls = int(np.bincount(sem[sel]).argmax())
        metres = (vox + 0.5 - grid.offset) * grid.voxel_size + grid.box_min
        out.append({"instance_id": int(iid), "class_id": cls, "class": NAMES[cls], "voxel_count": int(sel.sum()),
                    "box_voxels": [vox.min(0).tolist(), vox.max(0).tolist()],
                    "box_m": [metres.min(0).round(4).tolist(), metres.max(0).round(4).tolist()],
                    "centroid_m": metres.mean(0).round(4).tolist(), "score": round(pan.scores.get(int(iid), 0.0), 4)})
    return out


def write_outputs(out_dir: Path, name: str, image: np.ndarray, pan2d: Panoptic2D, pan3d: Panoptic3D | None,
                  grid: FrustumGrid, save_mesh: bool, save_previews: bool, save_page: bool = False) -> dict:
    written = {}
    palette = np.array(COLORS, np.uint8)
    if pan3d is not None:
        occ, sem, inst = pan3d.dense()
        fileio.save_npz(out_dir / f"{name}.npz", occupancy=occ.numpy(), semantic=sem.numpy().astype(np.uint16),
                        instance=inst.numpy().astype(np.uint16),
                        probability=_dense_prob(pan3d).astype(np.float16))
        written["volume"] = f"{name}.npz"
        objs = objects(pan3d, grid)
        fileio.write_bytes(out_dir / f"{name}_objects.json", (json.dumps(objs, indent=1) + "\n").encode())
        written["objects"] = f"{name}_objects.json"
        if save_mesh:
            index = pan3d.index.cpu().numpy()
            verts, faces, owner = voxel_mesh(index, grid)
            s, i = pan3d.semantic.cpu().numpy()[owner], pan3d.instance.cpu().numpy()[owner]
            write_ply(out_dir / f"{name}_semantic.ply", verts, faces, palette[s.clip(0, NUM_CLASSES - 1)], s, i)
            write_ply(out_dir / f"{name}_instance.ply", verts, faces, instance_colors(i), s, i)
            written["mesh_semantic"], written["mesh_instance"] = f"{name}_semantic.ply", f"{name}_instance.ply"
    if save_previews:
        sem2d = palette[pan2d.semantic.cpu().numpy().clip(0, NUM_CLASSES - 1)]
        depth = pan2d.depth.cpu().numpy()
        depth_img = (np.clip(depth / 6.0, 0, 1)[..., None] * np.array([255, 255, 255])).astype(np.uint8)
        panels = [image, (0.5 * image + 0.5 * sem2d).astype(np.uint8), depth_img]
        if pan3d is not None:
            panels.append(_top_down(pan3d, image.shape[:2], palette))
        fileio.save_png(out_dir / f"{name}_preview.png", np.concatenate(panels, 1))
        written["preview"] = f"{name}_preview.png"
    if save_page and pan3d is not None:
        centres = grid.grid_to_camera(pan3d.index).cpu().numpy()
        camera = PageCamera(np.eye(4), grid.intrinsics)
        write_scene_page(out_dir / f"{name}_scene.html", np.round(centres / grid.voxel_size - 0.5),
                         grid.voxel_size, pan3d.semantic.cpu().numpy(), pan3d.instance.cpu().numpy(), [camera],
                         f"{name}: 3D panoptic prediction (camera frame)")
        written["page"] = f"{name}_scene.html"
    return written


def _dense_prob(pan: Panoptic3D) -> np.ndarray:
    prob = np.zeros(pan.dims, np.float32)
    i, j, k = pan.index.cpu().numpy().T
    prob[i, j, k] = pan.probability.cpu().numpy()
    return prob


def _top_down(pan: Panoptic3D, shape: tuple[int, int], palette: np.ndarray) -> np.ndarray:
    """Bird's-eye view (x right, depth up) of the highest occupied voxel's class per column."""
    index = pan.index.cpu().numpy()
    sem = pan.semantic.cpu().numpy()
    img = np.zeros((pan.dims[2], pan.dims[0], 3), np.uint8)
    if len(index):
        order = np.argsort(-index[:, 1])  # y points down: the top voxel has the smallest y, drawn last
        x, z = index[order, 0], index[order, 2]
        img[pan.dims[2] - 1 - z, x] = palette[sem[order].clip(0, NUM_CLASSES - 1)]
    t = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    t = torch.nn.functional.interpolate(t, size=shape, mode="nearest")
    return t[0].permute(1, 2, 0).byte().numpy()

