"""Frames from (seed, scene, frame) and the writer of the NVPanoptix3D data layout.

    <out>/meta/{train,val,test}.json, frustum_mask.npz, colormap.json
    <out>/data/<scene_id>/rgb_<id>.png, depth_<id>.exr, segmap_<id>.mapped.npz, geometry_<id>.npz,
                          segmentation_<id>.mapped.npz, weighting_<id>.npz, camera_<id>.json
    <out>/images.tar.gz   the test split's RGB frames, flat, for the inference action
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import fileio
from ..file_naming import FRONT3D, NAMINGS, FileNaming
from ..geometry import Intrinsics, front3d_grid
from ..labels import write_colormap
from .frames import FrameBatch, Shot
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
    truth: FrustumTruth | None   # None when generated without 3D truth


def scene_id(seed: int, index: int) -> str:
    return f"synth-{seed:04d}-{index:05d}"


def make_scene(seed: int, index: int) -> Scene:
    return sample_scene(np.random.default_rng([seed, index]))


def image_id(seed: int, index: int, frame: int, layout: FileNaming = FRONT3D) -> str:
    if layout.name == "matterport":  # <name>_<angle>_<rot> as Matterport's camera / yaw indices
        name = hashlib.sha256(f"{seed}-{index}-{frame}".encode()).hexdigest()[:16]
        return f"{name}_{frame % 3}_{frame // 3 % 6}"
    return f"{frame:04d}"


def generate_frames(seed: int, jobs: list[tuple[int, int]], voxelizer: FrustumVoxelizer,
                    scenes: dict[int, Scene] | None = None, noise: bool = True,
                    layout: FileNaming = FRONT3D, with_3d: bool = True) -> list[SynthFrame]:
    """Frames (scene index, frame index) rendered and voxelised together (one batch of kernels): each the same
    on any worker and device, in any batch, for the same seed. Images are rendered at the layout's stored
    size (Matterport: twice 320 x 240); the frustum grid is the same. with_3d=False skips the 3D truth
    (2D-only training), which leaves the images unchanged."""
    scenes = dict(scenes or {})
    picked, poses, shots = [], [], []
    for index, frame in jobs:
        if index not in scenes:
            scenes[index] = make_scene(seed, index)
        rng = np.random.default_rng([seed, index, frame + 1])
        poses.append(sample_camera(rng, scenes[index]))
        shots.append(Shot.draw(rng, noise))
        picked.append(scenes[index])
    batch = FrameBatch.build(picked, poses, voxelizer.device)
    k = voxelizer.grid.intrinsics
    images = shade(batch, k.scaled(k.width * layout.downsample, k.height * layout.downsample), shots, noise)
    truths = voxelizer.frames(batch) if with_3d else [None] * len(jobs)
    return [SynthFrame(scene_id(seed, index), image_id(seed, index, frame, layout), pose, image, truth)
            for (index, frame), pose, image, truth in zip(jobs, poses, images, truths)]


def generate_frame(seed: int, index: int, frame: int, voxelizer: FrustumVoxelizer, scene: Scene | None = None,
                   noise: bool = True, layout: FileNaming = FRONT3D) -> SynthFrame:
    """Frame `frame` of scene `index` (see generate_frames)."""
    return generate_frames(seed, [(index, frame)], voxelizer, {index: scene} if scene else None, noise, layout)[0]


def write_frame(out: Path, f: SynthFrame, layout: FileNaming = FRONT3D) -> None:
    path = lambda kind: layout.path(out / "data", f.scene_id, f.image_id, kind)  # noqa: E731
    rgb = f.image.rgb.cpu().numpy()
    fileio.save_jpg(path("rgb"), rgb) if layout.rgb.endswith(".jpg") else fileio.save_png(path("rgb"), rgb)
    layout.write_depth(path("depth"), f.image.depth.cpu().numpy())
    seg2d = torch.stack([f.image.semantic, f.image.instance], -1).cpu().numpy().astype(np.uint16)
    fileio.save_npz(path("segmap"), data=seg2d)
    dist, sem, inst, weight = (t.cpu().numpy() for t in f.truth.dense())
    dist = (np.round(dist / DISTANCE_QUANTUM) * DISTANCE_QUANTUM).astype(np.float32)
    fileio.save_npz(path("geometry"), data=dist)
    fileio.save_npz(path("segmentation"), data=np.stack([sem, inst], -1).astype(np.uint16))
    fileio.save_npz(path("weighting"), data=weight.astype(np.float32))
    k = Intrinsics.front3d()
    k = k.scaled(k.width * layout.downsample, k.height * layout.downsample)
    camera = {"pose_camera_to_world": f.pose.tolist(), "intrinsics": k.matrix4().tolist(), "convention": "opencv"}
    fileio.write_bytes(path("rgb").with_name(f"camera_{f.image_id}.json"),
                       (json.dumps(camera, indent=1) + "\n").encode())


_worker_voxelizer: FrustumVoxelizer | None = None


def _work(job: tuple[str, int, int, int, str]) -> None:
    global _worker_voxelizer
    out, seed, index, frame, layout_name = job
    layout = NAMINGS[layout_name]
    torch.set_num_threads(1)
    if _worker_voxelizer is None or _worker_voxelizer.iso != layout.iso:
        _worker_voxelizer = FrustumVoxelizer(front3d_grid(), iso=layout.iso)
    write_frame(Path(out), generate_frame(seed, index, frame, _worker_voxelizer, layout=layout), layout)


def split_of(index: int, scenes: int, val_scenes: int, test_scenes: int) -> str:
    if index >= scenes - test_scenes:
        return "test"
    if index >= scenes - test_scenes - val_scenes:
        return "val"
    return "train"


def write_dataset(out: str | Path, scenes: int, frames: int, seed: int = 0, val_scenes: int | None = None,
                  test_scenes: int | None = None, workers: int = 1, progress: bool = True,
                  layout: str = "front3d") -> Path:
    out = Path(out)
    val_scenes = max(1, scenes // 10) if val_scenes is None else val_scenes
    test_scenes = max(1, scenes // 10) if test_scenes is None else test_scenes
    if scenes - val_scenes - test_scenes < 0:
        raise ValueError(f"--scenes {scenes} is fewer than --val-scenes + --test-scenes")
    (out / "meta").mkdir(parents=True, exist_ok=True)
    jobs = [(str(out), seed, s, f, layout) for s in range(scenes) for f in range(frames)]
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
    size = NAMINGS[layout].downsample
    for _, s_seed, s, f, _ in jobs:
        splits[split_of(s, scenes, val_scenes, test_scenes)].append(
            {"scene_id": scene_id(s_seed, s), "image_id": image_id(s_seed, s, f, NAMINGS[layout]),
             "height": 240 * size, "width": 320 * size})
    for name, rows in splits.items():
        fileio.write_bytes(out / "meta" / f"{name}.json", (json.dumps(rows, indent=1) + "\n").encode())
    grid = front3d_grid()
    fileio.save_npz(out / "meta" / "frustum_mask.npz", mask=grid.frustum_mask().numpy())
    write_colormap(out / "meta" / "colormap.json")
    test_images = [(f"{r['scene_id']}_{r['image_id']}{NAMINGS[layout].rgb[-4:]}",
                    NAMINGS[layout].path(out / "data", r["scene_id"], r["image_id"], "rgb")) for r in splits["test"]]
    fileio.write_tar_gz(out / "images.tar.gz", test_images)
    return out
