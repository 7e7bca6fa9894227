"""Each action through the runner, end to end: the local backend and the docker backend against a real daemon."""
from __future__ import annotations

import json

import pytest
from helpers import EXAMPLE, SKILL, TINY_OVERRIDES, TINY_TRAIN

from runners.tao_run_action import main as run_action
from tao_skill_bank.jobs import JobStore, read_status


def _run(capsys, *args) -> dict:
    code = run_action(["--skill", str(SKILL), "--json", *args])
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    assert code == 0 and result["ok"], result
    return result


def _overrides(items):
    return [a for item in items for a in ("--override", item)]


def _chain(capsys, tmp_path, backend_args, runtime=()):
    """train -> evaluate / inference / export, each child taking the train job as its parent; `runtime`: spec keys
    of the children alone (weightless settings the spec chooses over the parent's)."""
    jobs = str(tmp_path / "jobs")
    common = ["--jobs-dir", jobs, *backend_args]
    train = _run(capsys, "--action", "train", "--automl-policy", "off", "--train-dataset", str(EXAMPLE),
                 *common, *_overrides(TINY_OVERRIDES + TINY_TRAIN), "--ptm", "none")
    assert train["ok"], train
    assert train["report"] and "<h2>Training</h2>" in open(train["report"]).read()   # every job gets its report
    store = JobStore(jobs)
    status = read_status(store.results_dir(train["job_id"]))
    assert any(e["event"] == "checkpoint" for e in status)
    spec_keys = TINY_OVERRIDES + list(runtime)
    evaluate = _run(capsys, "--action", "evaluate", "--eval-dataset", str(EXAMPLE), "--parent-job-id",
                    train["job_id"], *common, *_overrides(spec_keys))
    metrics = json.loads((store.results_dir(evaluate["job_id"]) / "metrics.json").read_text())
    assert {"prq", "rsq", "rrq", "pq", "depth_abs_rel", "occupancy_iou", "kpi"} <= set(metrics)
    inference = _run(capsys, "--action", "inference", "--inference-dataset", str(EXAMPLE), "--parent-job-id",
                     train["job_id"], *common, *_overrides(spec_keys))
    manifest = json.loads((store.results_dir(inference["job_id"]) / "predictions" / "manifest.json").read_text())
    assert len(manifest) == 1 and {"volume", "objects", "preview", "page"} <= set(manifest[0])
    export = _run(capsys, "--action", "export", "--parent-job-id", train["job_id"], *common,
                  *_overrides(spec_keys + ["export.max_voxels=4000"]))
    results = store.results_dir(export["job_id"])
    assert any("tensorrt is not installed" in w for w in export["warnings"])  # ONNX only, and it says so
    assert (results / "nvpanoptix3d_2d.onnx").is_file() and (results / "nvpanoptix3d_3d.onnx").is_file()
    import onnx
    graph = onnx.load(str(results / "nvpanoptix3d_3d.onnx")).graph
    depth = next(i for i in graph.input if i.name == "depth")
    size = [d.dim_value for d in depth.type.tensor_type.shape.dim][-2:]
    assert size == [120, 160]   # the depth head's resolution (stride 2)
    done = [json.loads(line) for line in (results / "status.json").read_text().splitlines()][-1]
    assert done["max_abs_diff_2d"] < 1e-3 and done["max_abs_diff_3d"] < 1e-2
    assert done["shared_candidates_3d"] > 0.95
    assert "tensorrt" in done["tensorrt"].lower()


@pytest.mark.slow
def test_every_action_local_backend(capsys, tmp_path, cache_env):
    # a weightless setting the children's spec chooses over the parent's stored one
    _chain(capsys, tmp_path, ["--backend", "local"], ["postprocess.min_segment_voxels=0"])


@pytest.mark.slow
def test_every_action_docker_backend(capsys, tmp_path, cache_env, docker_image):
    _chain(capsys, tmp_path, ["--backend", "docker", "--image", docker_image, "--host-python"])


@pytest.mark.slow
def test_a_posed_folder_through_the_docker_backend_is_one_scene(capsys, tmp_path, docker_image):
    from nvpanoptix3d.synth.multiview import write_multiview
    walk = next(write_multiview(tmp_path / "walk", scenes=1, frames=3, seed=4).iterdir())
    result = _run(capsys, "--action", "inference", "--inference-dataset", str(walk), "--jobs-dir",
                  str(tmp_path / "jobs"), "--backend", "docker", "--image", docker_image, "--host-python")
    scene = JobStore(str(tmp_path / "jobs")).results_dir(result["job_id"]) / "predictions" / "scene"
    summary = json.loads((scene / "summary.json").read_text())
    assert summary["frames"] == 3 and summary["depth_source"] == "sensor" and summary["scene_objects"] >= 1
    assert (scene / "scene.html").is_file() and json.loads((scene / "live.json").read_text())["done"]


def test_dry_run_prints_spec_and_command(capsys, tmp_path):
    code = run_action(["--skill", str(SKILL), "--action", "train", "--automl-policy", "off", "--train-dataset",
                       str(EXAMPLE), "--jobs-dir", str(tmp_path), "--dry-run", "--json",
                       "--override", "train.num_epochs=3", "--override", "learning_rate=0.001"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["dry_run"]
    assert result["spec"]["train"]["num_epochs"] == 3 and result["spec"]["train"]["optim"]["lr"] == 0.001
    assert result["spec"]["dataset"]["train"]["json_path"].endswith("meta/train.json")
    assert result["command"][-1].startswith("results_dir=") and "train" in result["command"]
    assert not list(tmp_path.iterdir())  # a dry run creates no job


@pytest.mark.parametrize("args, fragment", [
    (["--action", "detect"], "action 'detect' is not one of"),
    (["--action", "evaluate", "--eval-dataset", str(EXAMPLE), "--override", "model.nope=1"], "model.nope"),
    (["--action", "evaluate", "--eval-dataset", str(EXAMPLE), "--override", "model.mask_former.dec_layers=99"],
     "dec_layers"),
    (["--action", "evaluate", "--eval-dataset", str(EXAMPLE), "--parent-job-id", "no-such-job"], "no-such-job"),
    (["--action", "evaluate", "--eval-dataset", str(EXAMPLE), "--backend", "slurmish"], "backend 'slurmish'"),
    (["--action", "evaluate"], "--eval-dataset"),
    (["--action", "train", "--automl-policy", "off", "--train-dataset", str(EXAMPLE), "--override",
      "train.num_nodes=2"], "train.num_nodes=2: the local backend runs on this machine alone"),
    (["--action", "evaluate", "--eval-dataset", str(EXAMPLE), "--partition", "gpu"],
     "--partition: an option of the slurm and kubernetes backends, not local"),
])
def test_bad_input_one_line_and_nonzero_exit(capsys, tmp_path, args, fragment):
    code = run_action(["--skill", str(SKILL), "--jobs-dir", str(tmp_path), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len([line for line in err if line.startswith("error:")]) == 1 and fragment in err[-1], err


def test_a_job_resumes_only_on_the_backend_it_ran_on(capsys, tmp_path):
    from tao_skill_bank.jobs import JobRecord
    store = JobStore(tmp_path)
    store.save(JobRecord("train-old", "train", "tao-train-nvpanoptix3d", "slurm", status="failed"))
    store.spec_path("train-old").write_text("train: {}\n")
    code = run_action(["--skill", str(SKILL), "--jobs-dir", str(tmp_path), "--action", "train", "--job-id",
                       "train-old", "--train-dataset", str(EXAMPLE)])
    assert code == 2 and "job train-old ran on the slurm backend; resume it with --backend slurm" in \
        capsys.readouterr().err


def test_docker_daemon_unreachable_is_one_clear_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")
    code = run_action(["--skill", str(SKILL), "--jobs-dir", str(tmp_path), "--action", "inference",
                       "--inference-dataset", str(EXAMPLE), "--backend", "docker"])
    err = capsys.readouterr().err
    assert code == 2 and "docker daemon unreachable" in err and "--backend local" in err


@pytest.mark.slow
def test_train_with_policy_auto_routes_through_automl(capsys, tmp_path):
    code = run_action(["--skill", str(SKILL), "--action", "train", "--train-dataset", str(EXAMPLE), "--jobs-dir",
                       str(tmp_path), "--request", "train NVPanoptix3D on my rooms", "--dry-run"])
    captured = capsys.readouterr()
    assert code == 0 and "routing through tao-run-automl" in captured.err
    plan = json.loads(captured.out)
    space = plan["search_space"]
    assert {p["key"] for p in space["parameters"]} >= {"train.optim.lr", "model.mask_former.num_object_queries"}
    assert plan["base_spec"]["dataset"]["train"]["base_dir"].endswith("data")  # resolved as a direct train would


@pytest.mark.parametrize("args, fragment", [
    (["--train-dataset", "/no/such/folder"], "dataset root /no/such/folder: not a folder"),
    (["--train-dataset", str(EXAMPLE), "--override", "dataset.name=matterport", "--override",
      "dataset.downsample_factor=1"],
     "spec key dataset.downsample_factor: does not match dataset.name"),
    (["--train-dataset", str(EXAMPLE), "--override", "train.distributed_strategy=fsdp"],
     "train.distributed_strategy: 'fsdp' is not one of"),
    (["--train-dataset", "s3://no-such-bucket/rooms"], None),  # a dry run does not contact S3
])
def test_the_automl_route_validates_as_a_direct_train_does(capsys, tmp_path, monkeypatch, args, fragment):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    code = run_action(["--skill", str(SKILL), "--action", "train", "--jobs-dir", str(tmp_path), "--dry-run", *args])
    captured = capsys.readouterr()
    if fragment is None:
        plan = json.loads(captured.out)
        assert code == 0 and plan["base_spec"]["dataset"]["train"]["base_dir"] == "s3://no-such-bucket/rooms/data"
        return
    assert code == 2 and fragment in captured.err and "Traceback" not in captured.err
    assert len([line for line in captured.err.splitlines() if line.startswith("error:")]) == 1
    assert not list(tmp_path.iterdir())
    code = run_action(["--skill", str(SKILL), "--action", "train", "--train-dataset", str(EXAMPLE), "--jobs-dir",
                       str(tmp_path), "--request", "plain training, no HPO", "--dry-run", "--json"])
    captured = capsys.readouterr()
    assert code == 0 and "automl_policy is off" in captured.err and json.loads(captured.out)["dry_run"]


@pytest.mark.slow
def test_resume_keeps_the_jobs_spec_and_never_starts_a_sweep(capsys, tmp_path):
    jobs = str(tmp_path / "jobs")
    first = _run(capsys, "--action", "train", "--automl-policy", "off", "--train-dataset", str(EXAMPLE),
                 "--jobs-dir", jobs, *_overrides(TINY_OVERRIDES + TINY_TRAIN), "--ptm", "none")
    # "resume job X" with no policy words and no overrides but the new epoch count
    code = run_action(["--skill", str(SKILL), "--json", "--action", "train", "--jobs-dir", jobs, "--job-id",
                       first["job_id"], "--request", "resume job " + first["job_id"], "--override",
                       "train.num_epochs=2"])
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert code == 0 and result["ok"] and result["job_id"] == first["job_id"], captured.err[-2000:]
    assert "AutoML" not in captured.err and "routing through tao-run-automl" not in captured.err
    store = JobStore(jobs)
    import yaml
    spec = yaml.safe_load(store.spec_path(first["job_id"]).read_text())
    assert spec["model"]["backbone_type"] == "resnet_tiny" and spec["train"]["num_epochs"] == 2
    assert spec["train"]["resume_training_checkpoint_path"].endswith("checkpoints/last.ckpt")
    events = read_status(store.results_dir(first["job_id"]))
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2]  # epoch 1 is not trained twice


@pytest.mark.slow
def test_gpus_asked_and_none_visible_fail_unless_the_fallback_is_allowed(capsys, tmp_path):
    common = ["--skill", str(SKILL), "--json", "--action", "train", "--automl-policy", "off", "--train-dataset",
              str(EXAMPLE), "--jobs-dir", str(tmp_path), "--ptm", "none",
              *_overrides([o for o in TINY_OVERRIDES + TINY_TRAIN if not o.startswith("train.num_gpus")])]
    code = run_action([*common, "--override", "train.num_gpus=2"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1 and not result["ok"] and "train.num_gpus=2 but no GPU is visible" in result["error"]
    code = run_action([*common, "--override", "train.num_gpus=2", "--override", "train.allow_cpu_fallback=true"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and result["ok"] and "training on the CPU" in result["warnings"][0]


def test_a_jobs_dir_under_a_file_and_a_too_small_synth_are_one_line(capsys, tmp_path):
    (tmp_path / "a_file").write_text("")
    code = run_action(["--skill", str(SKILL), "--action", "evaluate", "--eval-dataset", str(EXAMPLE), "--jobs-dir",
                       str(tmp_path / "a_file" / "jobs"), "--json"])
    captured = capsys.readouterr()
    assert code == 2 and "not a writable folder" in json.loads(captured.out)["error"]
    assert "Traceback" not in captured.err
    from nvpanoptix3d.cli import main as engine_main
    assert engine_main(["synth", str(tmp_path / "s"), "--scenes", "1"]) == 2
    assert "--scenes 1 is fewer than" in capsys.readouterr().err


@pytest.mark.slow
def test_a_plain_folder_of_photos_is_an_inference_root(capsys, tmp_path):
    """No meta/, photos of another size, a stray text file: segmented with the model's own camera and labels."""
    import numpy as np
    from PIL import Image
    photos = tmp_path / "photos"
    photos.mkdir()
    rgb = np.asarray(Image.open(next((EXAMPLE / "data").glob("*/rgb_*.png"))).convert("RGB"))
    Image.fromarray(rgb).resize((640, 480)).save(photos / "room.jpg", quality=92)
    (photos / "notes.txt").write_text("taken with a phone")
    result = _run(capsys, "--action", "inference", "--inference-dataset", str(photos), "--jobs-dir",
                  str(tmp_path / "jobs"), *_overrides(["inference.horizontal_fov_deg=60"]))
    assert any("skipped 1 file" in w and "notes.txt" in w for w in result["warnings"])
    manifest = json.loads((JobStore(str(tmp_path / "jobs")).results_dir(result["job_id"]) / "predictions" /
                           "manifest.json").read_text())
    assert [m["image"] for m in manifest] == ["room.jpg"] and manifest[0]["input_size"] == [640, 480]
    assert manifest[0]["scale_to_model"] == pytest.approx(0.5, rel=1e-3) and manifest[0]["occupied_voxels"] > 0


@pytest.mark.slow
def test_submit_status_logs_cancel_the_four_verbs_of_every_backend(capsys, tmp_path):
    """What the platform skills tell an agent to do, on the local backend (the same job-store verbs run Slurm's
    scancel and Kubernetes' delete)."""
    import time
    jobs = str(tmp_path / "jobs")
    argv = ["--skill", str(SKILL), "--jobs-dir", jobs, "--json"]
    code = run_action([*argv, "--action", "train", "--automl-policy", "off", "--train-dataset", str(EXAMPLE),
                       "--no-wait", "--ptm", "none", *_overrides(TINY_OVERRIDES + TINY_TRAIN),
                       "--override", "train.num_epochs=200"])
    submitted = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and submitted["ok"] and submitted["status"] in ("pending", "running")
    job_id = submitted["job_id"]
    store = JobStore(jobs)
    for _ in range(240):                                          # until the engine has written its first epoch
        if any(e.get("event") == "epoch" for e in read_status(store.results_dir(job_id))):
            break
        time.sleep(0.5)
    assert run_action([*argv, "--status", job_id]) == 0
    status = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert status["status"] == "running" and status["action"] == "train"
    assert run_action([*argv, "--logs", job_id]) == 0
    logs = capsys.readouterr().out
    assert logs and store.log_path(job_id).read_text(errors="replace").startswith(logs)   # the job's own log
    assert run_action([*argv, "--cancel", job_id]) == 0
    cancelled = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert cancelled["status"] == "cancelled"
    assert run_action([*argv, "--status", "no-such-job"]) == 2
    assert "no-such-job: not found" in capsys.readouterr().err
