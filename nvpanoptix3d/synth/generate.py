"""Frames from (seed, scene, frame) and the writer of the NVPanoptix3D data layout.

    <out>/meta/{train,val,test}.json, frustum_mask.npz, colormap.json
    <out>/data/<scene_id>/rgb_<id>.png, depth_<id>.exr, segmap_<id>.mapped.npz, geometry_<id>.npz,
                          segmentation_<id>.mapped.npz, weighting_<id>.npz, camera_<id>.json
    <out>/images.tar.gz   the test split's RGB frames, flat, for the inference action
"""
from __future__ import annotations

import json
import multiprocessing as mp
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import fileio
from ..geometry import Intrinsics, front3d_grid
from ..labels import write_colormap
from .render import RenderedFrame, shade
from .scene import Scene, sample_camera, sample_scene
from .voxelize import FrustumTruth, FrustumVoxelizer

DISTANCE_QUANTUM = 1.0 / 64  # voxels; stored distances are rounded to it so the volumes compress well


@dataclass
class SynthFrame:
    scene_id: str
    image_id: str
    pose: np.ndarray
    image: RenderedFrame
    truth: FrustumTruth


def scene_id(seed: int, index: int) -> str:
    return f"synth-{seed:04d}-{index:05d}"


def make_scene(seed: int, index: int) -> Scene:
    return sample_scene(np.random.default_rng([seed, index]))


def generate_frame(seed: int, index: int, frame: int, voxelizer: FrustumVoxelizer, scene: Scene | None = None,
                   noise: bool = True) -> SynthFrame:
    """Frame `frame` of scene `index`: the same on any worker and device for the same seed."""
    scene = scene or make_scene(seed, index)
    rng = np.random.default_rng([seed, index, frame + 1])
    pose = sample_camera(rng, scene)
    k = voxelizer.grid.intrinsics
    image = shade(scene, pose, k, rng, voxelizer.device, noise=noise)
    return SynthFrame(scene_id(seed, index), f"{frame:04d}", pose, image, voxelizer(scene, pose))


def write_frame(out: Path, f: SynthFrame) -> None:
    d = out / "data" / f.scene_id
    fileio.save_png(d / f"rgb_{f.image_id}.png", f.image.rgb.cpu().numpy())
    fileio.save_exr(d / f"depth_{f.image_id}.exr", f.image.depth.cpu().numpy())
    seg2d = torch.stack([f.image.semantic, f.image.instance], -1).cpu().numpy().astype(np.uint16)
    fileio.save_npz(d / f"segmap_{f.image_id}.mapped.npz", data=seg2d)
    dist, sem, inst, weight = (t.cpu().numpy() for t in f.truth.dense())
    dist = (np.round(dist / DISTANCE_QUANTUM) * DISTANCE_QUANTUM).astype(np.float32)
    fileio.save_npz(d / f"geometry_{f.image_id}.npz", data=dist)
    fileio.save_npz(d / f"segmentation_{f.image_id}.mapped.npz", data=np.stack([sem, inst], -1).astype(np.uint16))
    fileio.save_npz(d / f"weighting_{f.image_id}.npz", data=weight.astype(np.float32))
    camera = {"pose_camera_to_world": f.pose.tolist(), "intrinsics": Intrinsics.front3d().matrix4().tolist(),
              "convention": "opencv"}
    fileio.write_bytes(d / f"camera_{f.image_id}.json", (json.dumps(camera, indent=1) + "\n").encode())


_worker_voxelizer: FrustumVoxelizer | None = None


def _work(job: tuple[str, int, int, int]) -> tuple[str, str, str]:
    global _worker_voxelizer
    out, seed, index, frame = job
    torch.set_num_threads(1)
    if _worker_voxelizer is None:
        _worker_voxelizer = FrustumVoxelizer(front3d_grid())
    f = generate_frame(seed, index, frame, _worker_voxelizer)
    write_frame(Path(out), f)
    return f.scene_id, f.image_id, ""


def split_of(index: int, scenes: int, val_scenes: int, test_scenes: int) -> str:
    if index >= scenes - test_scenes:
        return "test"
    if index >= scenes - test_scenes - val_scenes:
        return "val"
    return "train"


def write_dataset(out: str | Path, scenes: int, frames: int, seed: int = 0, val_scenes: int | None = None,
                  test_scenes: int | None = None, workers: int = 1, progress: bool = True) -> Path:
    out = Path(out)
    val_scenes = max(1, scenes // 10) if val_scenes is None else val_scenes
    test_scenes = max(1, scenes // 10) if test_scenes is None else test_scenes
    if scenes - val_scenes - test_scenes < 0:
        raise ValueError(f"--scenes {scenes} is fewer than --val-scenes + --test-scenes")
    (out / "meta").mkdir(parents=True, exist_ok=True)
    jobs = [(str(out), seed, s, f) for s in range(scenes) for f in range(frames)]
    from tqdm import tqdm
    bar = tqdm(total=len(jobs), desc="synth", unit="frame", disable=not progress)
    if workers > 1:
        with mp.get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_work, jobs):
                bar.update()
    else:
        for job in jobs:
            _work(job)
            bar.update()
    bar.close()
    splits: dict[str, list] = {"train": [], "val": [], "test": []}
    for _, s_seed, s, f in jobs:
        splits[split_of(s, scenes, val_scenes, test_scenes)].append(
            {"scene_id": scene_id(s_seed, s), "image_id": f"{f:04d}", "height": 240, "width": 320})
    for name, rows in splits.items():
        fileio.write_bytes(out / "meta" / f"{name}.json", (json.dumps(rows, indent=1) + "\n").encode())
    grid = front3d_grid()
    fileio.save_npz(out / "meta" / "frustum_mask.npz", mask=grid.frustum_mask().numpy())
    write_colormap(out / "meta" / "colormap.json")
    test_images = [(f"{r['scene_id']}_{r['image_id']}.png", out / "data" / r["scene_id"] / f"rgb_{r['image_id']}.png")
                   for r in splits["test"]]
    fileio.write_tar_gz(out / "images.tar.gz", test_images)
    return out
