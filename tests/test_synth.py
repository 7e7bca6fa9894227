"""Synthetic data: the frustum convention, 2D/3D consistency, physical plausibility and determinism."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from helpers import EXAMPLE
from scipy import ndimage

from nvpanoptix3d import fileio
from nvpanoptix3d.geometry import Intrinsics, front3d_grid
from nvpanoptix3d.labels import WALL
from nvpanoptix3d.synth import write_dataset
from nvpanoptix3d.synth.scene import sample_camera, sample_scene


def test_frustum_grid_matches_the_reference_layout():
    g = front3d_grid()
    assert g.extent.tolist() == [231, 174, 187] and g.offset.tolist() == [12, 41, 34]
    mask = fileio.load_npz(EXAMPLE / "meta" / "frustum_mask.npz", "mask")
    assert mask.shape == (256, 256, 256) and mask.dtype == bool
    assert np.array_equal(mask, g.frustum_mask().numpy())


def _frames():
    rows = [r for split in ("train", "val", "test")
            for r in json.loads((EXAMPLE / "meta" / f"{split}.json").read_text())]
    for r in rows:
        d = EXAMPLE / "data" / r["scene_id"]
        yield (fileio.load_exr(d / f"depth_{r['image_id']}.exr"),
               fileio.load_npz(d / f"segmap_{r['image_id']}.mapped.npz").astype(np.int64),
               fileio.load_npz(d / f"segmentation_{r['image_id']}.mapped.npz").astype(np.int64))


def test_back_projected_depth_lands_in_a_voxel_of_the_same_class_and_instance():
    g, k = front3d_grid(), Intrinsics.front3d()
    agree = total = 0
    for depth, seg2d, vol in _frames():
        pts = k.pixel_rays() * torch.from_numpy(depth)[..., None]
        idx = g.camera_to_grid(pts).floor().long().numpy()
        # leave out a one-voxel band (3 cm: f * 0.03 / depth pixels) around label and depth boundaries and
        # around the frustum's own boundary (image border, near and far planes)
        key = seg2d[..., 0] * 100000 + seg2d[..., 1]
        edge = ndimage.maximum_filter(key, 3) != ndimage.minimum_filter(key, 3)
        edge |= ndimage.maximum_filter(depth, 3) - ndimage.minimum_filter(depth, 3) > 0.1
        edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True
        pixels_to_edge = ndimage.distance_transform_edt(~edge)
        band = k.fx * g.voxel_size / np.maximum(depth, 0.4)
        inside = (depth > 0.4 + g.voxel_size) & (depth < 6.0 - g.voxel_size)
        valid = inside & (pixels_to_edge > band) & (idx >= 0).all(-1) & (idx < 256).all(-1)
        i, j, kk = idx[valid].T
        same = (vol[i, j, kk, 0] == seg2d[valid][:, 0]) & (vol[i, j, kk, 1] == seg2d[valid][:, 1])
        agree, total = agree + same.sum(), total + valid.sum()
    assert total > 100000 and agree / total >= 0.99, agree / total


def test_instance_ids_agree_between_2d_and_3d():
    for _, seg2d, vol in _frames():
        things2d = {(int(c), int(i)) for c, i in np.unique(seg2d.reshape(-1, 2), axis=0) if 1 <= c <= 9}
        ids3d = {}
        sem, inst = vol[..., 0], vol[..., 1]
        for c, i in np.unique(np.stack([sem[inst > 0], inst[inst > 0]], 1), axis=0):
            ids3d.setdefault(int(i), set()).add(int(c))
        assert all(len(c) == 1 for c in ids3d.values())           # one class per 3D instance
        for c, i in things2d:
            assert ids3d.get(i) == {c}                             # every visible instance exists in 3D, same class


def _footprint_boxes(scene):
    by_instance = {}
    for p in scene.parts:
        by_instance.setdefault(p.instance, []).append(p)
    return by_instance


@pytest.mark.parametrize("seed", range(40))
def test_furniture_never_intersects_and_cameras_are_free(seed):
    from nvpanoptix3d.synth.scene import _footprint
    rng = np.random.default_rng([99, seed])
    scene = sample_scene(rng)
    objects = _footprint_boxes(scene)
    boxes = {i: np.array([_footprint(p) for p in parts]) for i, parts in objects.items()}
    spans = {i: (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()) for i, b in boxes.items()}
    ids = sorted(spans)
    for a_i, a in enumerate(ids):
        x0, y0, x1, y1 = spans[a]
        assert x0 >= 0 and y0 >= 0 and x1 <= scene.size[0] and y1 <= scene.size[1]
        for b in ids[a_i + 1:]:
            u0, v0, u1, v1 = spans[b]
            assert x1 <= u0 or u1 <= x0 or y1 <= v0 or v1 <= y0, (a, b)
    for f in range(3):
        pose = sample_camera(np.random.default_rng([99, seed, f]), scene)
        eye = pose[:3, 3]
        assert (eye > 0).all() and (eye < scene.size).all() and 1.2 <= eye[2] <= 1.8
        for x0, y0, x1, y1 in spans.values():
            assert not (x0 < eye[0] < x1 and y0 < eye[1] < y1)


def _digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    one = write_dataset(tmp_path / "one", scenes=4, frames=1, seed=2029, val_scenes=1, test_scenes=1, workers=1,
                        progress=False)
    two = write_dataset(tmp_path / "two", scenes=4, frames=1, seed=2029, val_scenes=1, test_scenes=1, workers=2,
                        progress=False)
    assert _digest(one) == _digest(two) == _digest(EXAMPLE)


def _scenes_and_poses(seed: int, count: int):
    scenes = [sample_scene(np.random.default_rng([seed, i])) for i in range(count)]
    return scenes, [sample_camera(np.random.default_rng([seed, i, 0]), s) for i, s in enumerate(scenes)]


def test_batched_and_part_by_part_ground_truth_are_identical():
    from nvpanoptix3d.synth.frames import FrameBatch
    from nvpanoptix3d.synth.voxelize import FrustumVoxelizer
    scenes, poses = _scenes_and_poses(7, 3)
    batch = FrameBatch.build(scenes, poses)
    one_by_one = FrustumVoxelizer(front3d_grid(), batched=False).frames(batch)
    batched = FrustumVoxelizer(front3d_grid(), batched=True).frames(batch)
    for a, b in zip(one_by_one, batched):
        assert torch.equal(a.distance, b.distance) and torch.equal(a.semantic, b.semantic)
        assert torch.equal(a.instance, b.instance) and (a.semantic > 0).sum() > 1000


def test_batched_and_part_by_part_rendering_are_identical():
    from nvpanoptix3d.synth.frames import FrameBatch
    from nvpanoptix3d.synth.render import cast
    scenes, poses = _scenes_and_poses(3, 3)
    batch = FrameBatch.build(scenes, poses)
    one, many = cast(batch, Intrinsics.front3d(), batched=False), cast(batch, Intrinsics.front3d(), batched=True)
    for name in ("depth", "label", "instance", "part", "points", "normal"):
        assert torch.equal(getattr(one, name), getattr(many, name)), name
    assert ((one.part >= 0).flatten(1).any(1)).all()  # every frame sees furniture


def test_frames_generated_together_equal_frames_generated_alone():
    """A batch is only a way to launch fewer kernels: no frame may depend on the others in its batch (an
    L-shaped room's corner block beside a rectangular room, different part and light counts)."""
    from nvpanoptix3d.synth.generate import generate_frames, make_scene
    from nvpanoptix3d.synth.voxelize import FrustumVoxelizer
    jobs = [(0, 0), (1, 2), (2, 1)]
    assert len({len(make_scene(6, i).lights) for i, _ in jobs}) > 1
    assert len({make_scene(6, i).parts[0].label == WALL for i, _ in jobs}) == 2  # with and without a corner block
    for batched in (False, True):
        vox = FrustumVoxelizer(front3d_grid(), batched=batched)
        together = generate_frames(6, jobs, vox)
        for job, t in zip(jobs, together):
            alone = generate_frames(6, [job], vox)[0]
            assert torch.equal(t.image.rgb, alone.image.rgb) and torch.equal(t.image.depth, alone.image.depth)
            assert torch.equal(t.image.instance, alone.image.instance)
            assert torch.equal(t.truth.distance, alone.truth.distance)
            assert torch.equal(t.truth.instance, alone.truth.instance)


def test_frames_without_3d_truth_have_the_same_images():
    """2D-only training skips the voxelisation; the images must not change with it."""
    from nvpanoptix3d.synth.generate import generate_frames
    from nvpanoptix3d.synth.voxelize import FrustumVoxelizer
    vox = FrustumVoxelizer(front3d_grid())
    jobs = [(0, 0), (3, 1)]
    full, flat = generate_frames(5, jobs, vox), generate_frames(5, jobs, vox, with_3d=False)
    for a, b in zip(full, flat):
        assert a.truth is not None and b.truth is None and a.image_id == b.image_id
        assert torch.equal(a.image.rgb, b.image.rgb) and torch.equal(a.image.depth, b.image.depth)
        assert torch.equal(a.image.semantic, b.image.semantic)


def test_sensor_noise_is_zero_mean_unit_variance_and_seeded():
    from nvpanoptix3d.synth.render import hash_noise
    a = hash_noise(torch.tensor([1, 2]), (240, 320, 3))
    assert a.shape == (2, 240, 320, 3)
    assert abs(float(a.mean())) < 0.01 and abs(float(a.std()) - 1.0) < 0.01
    assert torch.equal(a[1], hash_noise(torch.tensor([2]), (240, 320, 3))[0])
    assert abs(float(torch.corrcoef(a.reshape(2, -1))[0, 1])) < 0.01  # seeds give unrelated noise
    neighbours = torch.corrcoef(torch.stack([a[0].flatten()[:-1], a[0].flatten()[1:]]))[0, 1]
    assert abs(float(neighbours)) < 0.01


def test_multiview_walk_through_in_nerfstudio_layout(tmp_path):
    from nvpanoptix3d.cli import main
    from nvpanoptix3d.synth.generate import make_scene
    from nvpanoptix3d.synth.scene import _footprint
    assert main(["synth", str(tmp_path), "--layout", "multiview", "--scenes", "1", "--frames", "6", "--seed", "5"]) == 0
    (scene_dir,) = list(tmp_path.iterdir())
    transforms = json.loads((scene_dir / "transforms.json").read_text())
    frames = transforms["frames"]
    assert len(frames) == 6 and transforms["fl_x"] == pytest.approx(277.1281435)
    eyes = np.array([np.array(f["transform_matrix"])[:3, 3] for f in frames])
    assert (np.linalg.norm(np.diff(eyes, axis=0), axis=1) < 0.5).all()          # a walk, not jumps
    scene = make_scene(5, 0)
    for f, eye in zip(frames, eyes):
        c2w = np.array(f["transform_matrix"])
        assert c2w[2, 1] > 0  # OpenGL: the camera's y axis points up in the z-up world
        assert not any(fp[0] < eye[0] < fp[2] and fp[1] < eye[1] < fp[3] for fp in map(_footprint, scene.parts))
        from PIL import Image
        depth_mm = np.asarray(Image.open(scene_dir / f["depth_file_path"]))
        assert depth_mm.shape == (240, 320) and 300 < np.median(depth_mm) < 10000
        pan = fileio.load_npz(scene_dir / f["panoptic_file_path"])
        assert pan.shape == (240, 320, 2) and (pan[..., 0] > 0).all()


def test_matterport_layout_written_and_read_back(tmp_path):
    from nvpanoptix3d.config import DatasetConfig, SplitConfig
    from nvpanoptix3d.data import get_dataset
    root = write_dataset(tmp_path / "mp", scenes=3, frames=1, seed=11, val_scenes=1, test_scenes=1, progress=False,
                         layout="matterport")
    row = json.loads((root / "meta" / "train.json").read_text())[0]
    name, angle, rot = row["image_id"].split("_")
    folder = root / "data" / row["scene_id"]
    for file in (f"{name}_i{angle}_{rot}.jpg", f"{name}_d{angle}_{rot}.png", f"{name}_segmap{angle}_{rot}.mapped.npz",
                 f"{name}_geometry{angle}_{rot}.npz", f"{name}_segmentation{angle}_{rot}.mapped.npz",
                 f"{name}_weighting{angle}_{rot}.npz"):
        assert (folder / file).is_file(), file
    assert (row["width"], row["height"]) == (640, 480)
    meta = root / "meta"
    split = SplitConfig(json_path=str(meta / "train.json"), base_dir=str(root / "data"))
    cfg = DatasetConfig(name="matterport", downsample_factor=2, label_map=str(meta / "colormap.json"),
                        frustum_mask_path=str(meta / "frustum_mask.npz"), train=split)
    sample = get_dataset(cfg, "train")[0]
    assert sample.image.shape == (3, 240, 320) and sample.semantic2d.shape == (240, 320)
    valid = sample.depth > 0
    assert valid.float().mean() > 0.9 and 0.4 <= float(sample.depth[valid].min())
    assert sample.occupied is not None and len(sample.occupied) > 1000
