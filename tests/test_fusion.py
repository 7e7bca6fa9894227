"""Scene fusion with known answers: frames of a synthetic walk-through, each predicted perfectly in 2D and depth
but with its own instance numbering, fuse to one room with one scene ID per true object."""
from __future__ import annotations

import numpy as np
import pytest

from nvpanoptix3d import fileio
from nvpanoptix3d.fusion.scene import FrameObservation, SceneFusion, pack, unpack
from nvpanoptix3d.geometry import Intrinsics


def test_keys_round_trip_negative_and_far_coordinates():
    coords = np.array([[0, 0, 0], [-5, 7, -1000], [1000000, -1000000, 3]])
    assert np.array_equal(unpack(pack(coords)), coords)


def _observations(root, shuffle_seed=0):
    from nvpanoptix3d.inputs.posed import read_posed_folder
    k = Intrinsics.front3d()
    rng = np.random.default_rng(shuffle_seed)
    for frame in read_posed_folder(root).frames:
        depth = fileio.load_uint16(frame.depth).astype(np.float32) * frame.depth_scale
        labels = fileio.load_npz(root / "panoptic" / f"{frame.name}.npz").astype(np.int64)
        valid = (depth > 0) & (labels[..., 0] > 0)
        v, u = np.nonzero(valid)
        z = depth[v, u]
        points = np.stack([(u - k.cx) / k.fx * z, (v - k.cy) / k.fy * z, z], 1)
        true_instance = labels[v, u, 1]
        ids = np.unique(true_instance[true_instance > 0])
        local = dict(zip(ids.tolist(), rng.permutation(len(ids)) + 1))          # each frame numbers its own
        instance = np.array([local.get(i, 0) for i in true_instance.tolist()])
        yield FrameObservation(frame.camera_to_world, points, labels[v, u, 0], instance, np.ones(len(z), np.float32),
                               depth, k.fx, k.fy, k.cx, k.cy, frame.name), true_instance


def _wall_and_box_frames(count=10):
    """Frames from one pose: a wall at 2 m and a box face at 1.5 m (seen); frame 0 also completes a blob
    behind the wall that no other frame predicts; 7 frames call the box a chair, 3 a sofa."""
    fx = fy = 100.0
    cx = cy = 50.0
    depth = np.full((100, 100), 2.0, np.float32)
    depth[70:91, 70:91] = 1.5                                   # the box face covers x, y in [0.4, 0.6] m

    def plane(lo, hi, z):  # one point per 3 cm voxel, as a frame's voxel centres are
        step = np.arange(lo, hi, 0.03) + 0.015
        x, y = np.meshgrid(step, step)
        return np.stack([x.ravel(), y.ravel(), np.full(x.size, z)], 1)

    wall, box, blob = plane(-0.45, 0.45, 2.01), plane(0.42, 0.57, 1.51), plane(-0.09, 0.09, 2.31)
    for f in range(count):
        parts = [wall, box] + ([blob] if f == 0 else [])
        points = np.concatenate(parts)
        semantic = np.concatenate([np.full(len(wall), 10), np.full(len(box), 3 if f < 7 else 4)]
                                  + ([np.full(len(blob), 10)] if f == 0 else []))
        instance = np.concatenate([np.zeros(len(wall)), np.ones(len(box))]
                                  + ([np.zeros(len(blob))] if f == 0 else [])).astype(np.int64)
        yield FrameObservation(np.eye(4), points, semantic, instance, np.ones(len(points), np.float32), depth,
                               fx, fy, cx, cy, f"f{f}")


def test_what_one_frame_in_ten_completes_is_dropped_and_an_object_keeps_one_id_and_class():
    kept = {}
    for support in (0.0, 0.3):
        fusion = SceneFusion(voxel_size=0.03, min_support=support)
        for obs in _wall_and_box_frames():
            fusion.integrate(obs)
        scene = fusion.result()
        z = (scene.coords[:, 2] + 0.5) * 0.03
        kept[support] = int((z > 2.2).sum())
        box = np.abs(z - 1.5) < 0.05
        assert set(np.unique(scene.instance[box]).tolist()) == {1}        # 7 chair frames and 3 sofa frames: one
        assert set(np.unique(scene.semantic[box]).tolist()) == {3}        # object, the majority's class
        assert len(scene.objects) == 1 and scene.objects[0].class_id == 3
        assert (np.abs(z - 2.0) < 0.05).sum() > 600                       # the wall every frame saw stays
    assert kept[0.0] > 0 and kept[0.3] == 0                               # the blob only frame 0 completed


@pytest.mark.slow
def test_a_walk_through_fuses_to_one_scene_id_per_object(tmp_path):
    from nvpanoptix3d.synth.multiview import write_multiview
    root = write_multiview(tmp_path, scenes=1, frames=8, seed=4)   # five objects in view
    scene_dir = next(root.iterdir())
    fusion = SceneFusion(voxel_size=0.03)
    truth_keys, truth_ids = [], []
    for obs, true_instance in _observations(scene_dir):
        fusion.integrate(obs)
        world = obs.points @ obs.camera_to_world[:3, :3].T + obs.camera_to_world[:3, 3]
        truth_keys.append(pack(np.floor(world / 0.03)))
        truth_ids.append(true_instance)
    scene = fusion.result()
    keys, ids = np.concatenate(truth_keys), np.concatenate(truth_ids)
    fused = dict(zip(pack(scene.coords).tolist(), scene.instance.tolist()))
    seen_objects = [i for i in np.unique(ids) if i > 0 and (ids == i).sum() > 200]
    assert len(seen_objects) >= 2
    per_object = []
    for true_id in seen_objects:
        got = np.array([fused.get(key, 0) for key in keys[ids == true_id].tolist()])
        got = got[got > 0]
        values, counts = np.unique(got, return_counts=True)
        assert counts.max() >= 0.9 * len(got), true_id                 # one scene ID carries the object
        per_object.append(values[counts.argmax()])
    assert len(set(per_object)) == len(per_object)                     # and no two objects share one
    assert len(scene.objects) <= 1.2 * len(seen_objects)
    assert len(scene.trajectory) == 8 and len(scene.coords) > 1000


@pytest.mark.slow
def test_a_posed_folder_is_reconstructed_into_one_scene_through_the_runner(capsys, tmp_path):
    import json

    from helpers import SKILL

    from nvpanoptix3d.synth.multiview import write_multiview
    from runners.tao_run_action import main as run_action
    from tao_skill_bank.jobs import JobStore
    walk = next(write_multiview(tmp_path / "walk", scenes=1, frames=3, seed=4).iterdir())
    code = run_action(["--skill", str(SKILL), "--action", "inference", "--inference-dataset", str(walk),
                       "--jobs-dir", str(tmp_path / "jobs"), "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and result["ok"], result
    scene = JobStore(str(tmp_path / "jobs")).results_dir(result["job_id"]) / "predictions" / "scene"
    summary = json.loads((scene / "summary.json").read_text())
    assert summary["posed_folder"] == "nerfstudio" and summary["depth_source"] == "sensor"
    volume = np.load(scene / "scene.npz")
    assert len(volume["coords"]) == summary["scene_voxels"] > 1000
    assert float(volume["voxel_size"]) == pytest.approx(0.03)
    objects = json.loads((scene / "scene_objects.json").read_text())
    assert len(objects) == summary["scene_objects"] and all(o["frames"] for o in objects)
    assert (scene / "scene.ply").read_bytes().startswith(b"ply\n") and (scene / "scene_top_down.png").is_file()
    page = (scene / "scene.html").read_text()
    assert summary["scene"]["page"] == "scene/scene.html" and f"{len(objects)} objects" in page
    assert page.count('"c2w"') == 3                                     # one frustum per frame
    live = json.loads((scene / "live.json").read_text())                # the live view's last version
    assert live["done"] and live["frames"] == 3 and len(live["objects"]) == len(objects)


def _box_room_truth():
    """A 2 x 2 x 2 m room with one 0.5 m cube (a cabinet, instance 7) on its floor."""
    from nvpanoptix3d.synth.scene import Part
    from nvpanoptix3d.synth.scene_truth import surface_points

    class Room:
        size = np.array([2.0, 2.0, 2.0])
        parts = [Part(np.array([1.0, 1.0, 0.25]), np.array([0.25, 0.25, 0.25]), 0.3, 1, 7, np.zeros(3), 0)]
    return surface_points(Room())


def test_scene_scores_of_a_perfect_a_shifted_and_a_split_prediction():
    from nvpanoptix3d.metrics.scene import score_scene, voxel_labels
    points, semantic, instance = _box_room_truth()
    coords, sem, inst = voxel_labels(points, semantic, instance, 0.03)
    perfect = score_scene(coords, sem, inst, 0.03, points, semantic, instance)
    assert perfect.fscore == 1.0 and perfect.prq == pytest.approx(1.0) and perfect.ids_per_object == 1.0
    assert perfect.accuracy_m < 0.03 and perfect.objects_found == perfect.objects_true == 1
    shifted = score_scene(coords + 4, sem, inst, 0.03, points, semantic, instance)  # 12 cm along every axis
    assert shifted.fscore < 0.5 and shifted.accuracy_m > 0.05
    split = inst.copy()
    cube = np.nonzero(inst == 7)[0]
    split[cube[: len(cube) // 2]] = 8                                  # one cube, two predicted IDs
    halves = score_scene(coords, sem, split, 0.03, points, semantic, instance)
    assert halves.ids_per_object == 2.0 and halves.fscore == 1.0 and halves.prq < perfect.prq


@pytest.mark.slow
def test_evaluate_scores_a_folder_of_walk_throughs_as_scenes(capsys, tmp_path):
    """`--eval-dataset` of walk-throughs with scene ground truth: each is fused and scored; the means are the
    job's metrics and scene PRQ its KPI."""
    import json

    from helpers import SKILL

    from nvpanoptix3d.synth.multiview import write_multiview
    from runners.tao_run_action import main as run_action
    from tao_skill_bank.jobs import JobStore
    walks = write_multiview(tmp_path / "walks", scenes=2, frames=3, seed=4)
    code = run_action(["--skill", str(SKILL), "--action", "evaluate", "--eval-dataset", str(walks),
                       "--jobs-dir", str(tmp_path / "jobs"), "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and result["ok"], result
    metrics = json.loads((JobStore(str(tmp_path / "jobs")).results_dir(result["job_id"]) / "metrics.json").read_text())
    assert [row["scene"] for row in metrics["scenes"]] == sorted(p.name for p in walks.iterdir())
    assert all(row["depth_source"] == "sensor" and row["frames"] == 3 for row in metrics["scenes"])
    assert metrics["fscore"] == pytest.approx(np.mean([row["fscore"] for row in metrics["scenes"]]), abs=1e-4)
    assert metrics["fscore"] > 0.5 and 0 <= metrics["prq"] <= 1 and result["kpi"] == metrics["kpi"] == metrics["prq"]


def test_an_evaluation_root_with_neither_walk_throughs_nor_a_split_is_one_line(tmp_path):
    from nvpanoptix3d.config import ExperimentConfig, SpecError, from_dict
    from nvpanoptix3d.engine.evaluate import run_evaluate
    cfg = from_dict(ExperimentConfig, {"results_dir": str(tmp_path / "r"), "evaluate": {"scenes_dir": str(tmp_path)}})
    with pytest.raises(SpecError, match=f"evaluate: {tmp_path} holds neither walk-throughs"):
        run_evaluate(cfg)


def test_dilating_keys_gives_the_26_neighbourhood():
    from nvpanoptix3d.fusion.scene import dilate, pack, unpack
    one = pack(np.array([[-5, 0, 7]]))
    assert len(dilate(one)) == 27 and np.abs(unpack(dilate(one)) - [-5, 0, 7]).max() == 1
    pair = np.sort(pack(np.array([[0, 0, 0], [1, 0, 0]])))
    grown = dilate(pair)
    assert len(grown) == 36 and np.all(np.diff(grown) > 0)                       # 4 x 3 x 3, sorted, unique
    cube = np.array(np.meshgrid(*[np.arange(-1, 3)] + [np.arange(-1, 2)] * 2, indexing="ij")).reshape(3, -1).T
    assert np.array_equal(grown, np.sort(pack(cube)))
