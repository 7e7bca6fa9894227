"""Faults and hostile input, done for real: a malicious pickle, signals to running engines, corrupt and missing
frames, two engines on one job, alias bombs, a full disk (a small tmpfs), a corrupt store, a killed sweep."""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import EXAMPLE, REPO, SKILL, TINY_OVERRIDES, TINY_TRAIN, spec_file

from nvpanoptix3d.cli import apply_overrides, load_config
from nvpanoptix3d.config import DataError, SpecError
from tao_skill_bank import jobs as job_api
from tao_skill_bank.errors import SkillBankError


def _spec(tmp_path: Path, root: Path = EXAMPLE, extra=()) -> Path:
    return spec_file(tmp_path, extra, root)


def _engine(action: str, spec: Path, results: Path, *overrides, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nvpanoptix3d", action, "-e", str(spec),
                             f"results_dir={results}", *overrides], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _events(results: Path) -> list[dict]:
    path = results / "status.json"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _wait_for(predicate, timeout: float = 300, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


# ------------------------------------------------------------------ 1. no code from files

class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {"model.x": torch.zeros(1)}, "payload": _Payload(marker)}, path)
    return path


def test_a_checkpoint_carrying_code_is_refused_and_the_code_never_runs(tmp_path):
    from nvpanoptix3d.engine.checkpoint import checkpoint_config, load_state_dict
    marker = tmp_path / "pwned"
    evil = _malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    with pytest.raises(pickle.UnpicklingError):  # the payload is real: plain unpickling runs it
        torch.load(evil, weights_only=True)
    for read in (load_state_dict, checkpoint_config):
        with pytest.raises(SpecError, match=r"evil\.ckpt holds objects other than tensors"):
            read(evil)
    assert not marker.exists()


@pytest.mark.slow
def test_the_engine_refuses_a_malicious_checkpoint_in_one_line(tmp_path):
    marker = tmp_path / "pwned"
    evil = _malicious_checkpoint(tmp_path / "evil.pt", marker)
    run = subprocess.run([sys.executable, "-m", "nvpanoptix3d", "evaluate", "-e", str(_spec(tmp_path)),
                          f"results_dir={tmp_path / 'r'}", f"evaluate.checkpoint={evil}"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith("error: evaluate.checkpoint: ")
    assert "Traceback" not in run.stderr and not marker.exists()


def test_weights_that_fill_too_little_of_the_model_are_an_error(tmp_path):
    from safetensors.torch import save_file

    from nvpanoptix3d.engine.module import PanopticModule
    from nvpanoptix3d.engine.status import StatusWriter
    from nvpanoptix3d.engine.train import stage_init
    foreign = tmp_path / "foreign.safetensors"
    save_file({"encoder.layer.0.weight": torch.zeros(4, 4)}, str(foreign))
    cfg = load_config(str(_spec(tmp_path, extra=[f"train.checkpoint_2d={foreign}"])),
                      [f"results_dir={tmp_path / 'r'}"])
    with pytest.raises(SpecError, match=r"train.checkpoint_2d: .*foreign.safetensors fills 0 of the model's"):
        stage_init(PanopticModule(cfg), cfg, StatusWriter(tmp_path / "r", enabled=False))


def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path, capsys):
    from nvpanoptix3d.engine.resume import intact_checkpoint
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    for name in ("epoch_001.ckpt", "epoch_002.ckpt"):
        torch.save({"state_dict": {"w": torch.ones(2)}}, ckpts / name)
        time.sleep(0.05)
    (ckpts / "epoch_002.ckpt").write_bytes(b"not a zip at all")
    torch.save({"state_dict": {"w": torch.ones(2)}}, ckpts / "last.ckpt")
    (ckpts / "last.ckpt").write_bytes((ckpts / "last.ckpt").read_bytes()[:200])  # cut short mid-write
    assert intact_checkpoint(str(ckpts / "last.ckpt")) == str(ckpts / "epoch_001.ckpt")
    assert "last.ckpt is truncated; resuming from" in capsys.readouterr().out
    (ckpts / "epoch_001.ckpt").write_bytes(b"")
    with pytest.raises(SpecError, match="no intact checkpoint beside it"):
        intact_checkpoint(str(ckpts / "last.ckpt"))


# ------------------------------------------------------------------ 2. signals are failures

@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_training_saves_a_checkpoint_and_exits_cancelled(tmp_path, sig):
    results = tmp_path / "r"
    proc = _engine("train", _spec(tmp_path), results, "train.num_epochs=50")
    _wait_for(lambda: any(e["event"] == "epoch" for e in _events(results)), what="the first epoch")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-2000:]
    events = _events(results)
    assert events[-1]["event"] == "cancelled" and events[-1]["signal"] == signal.Signals(sig).name
    assert not any(e["event"] == "done" for e in events)
    assert any(e.get("interrupted") for e in events if e["event"] == "checkpoint")
    blob = torch.load(results / "checkpoints" / "last.ckpt", weights_only=True)  # intact and safe to load
    assert blob["global_step"] >= 1  # one step per epoch here: the first epoch at least
    assert not list((results / "checkpoints").glob(".*.tmp"))


@pytest.mark.slow
def test_a_job_whose_engine_gets_sigterm_reads_cancelled_not_done(tmp_path):
    """What `docker stop` or a scheduler's preemption does: SIGTERM to the engine, not through cancel_job."""
    store = tmp_path / "jobs"
    runner = subprocess.Popen([sys.executable, "runners/tao_run_action.py", "--skill", str(SKILL), "--action",
                               "train", "--automl-policy", "off", "--train-dataset", str(EXAMPLE), "--jobs-dir",
                               str(store), "--ptm", "none", "--json",
                               *(f"--override={o}" for o in [*TINY_OVERRIDES, *TINY_TRAIN, "train.num_epochs=50"])],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = _wait_for(lambda: next(iter(store.glob("*/results/.engine.lock")), None), what="the engine's lock")
    holder = _wait_for(lambda: json.loads(lock.read_text() or "null"), what="the lock's holder")
    _wait_for(lambda: any(e["event"] == "epoch" for e in _events(lock.parent)), what="the first epoch")
    os.kill(holder["pid"], signal.SIGTERM)
    out, err = runner.communicate(timeout=180)
    result = json.loads(out.strip().splitlines()[-1])
    assert runner.returncode == 1 and not result["ok"]
    assert result["status"] == "cancelled" and result["exit_code"] == 143 and "SIGTERM" in result["error"]


@pytest.mark.slow
def test_a_pruned_trial_reads_pruned(tmp_path):
    store = job_api.JobStore(tmp_path / "jobs")
    record = job_api.create_job(store, "train", "skill", {}, "local",
                                [sys.executable, "-c", "import time; time.sleep(120)"])
    _wait_for(lambda: store.get(record.job_id).status == job_api.RUNNING, 30, "the job to start")
    assert job_api.cancel_job(store, record.job_id, reason=job_api.PRUNED).status == job_api.PRUNED


# ------------------------------------------------------------------ 3. data checks before metrics

def _first_train_frame(root: Path, kind: str) -> Path:
    row = json.loads((root / "meta" / "train.json").read_text())[0]
    names = {"rgb": "rgb_{}.png", "depth": "depth_{}.exr", "segmap": "segmap_{}.mapped.npz",
             "segmentation": "segmentation_{}.mapped.npz"}
    return root / "data" / row["scene_id"] / names[kind].format(row["image_id"])


@pytest.mark.parametrize("damage, message", [
    ("delete segmentation", r"segmentation_.*\.mapped\.npz: missing \(segmentation of frame"),
    ("delete rgb", r"rgb_.*\.png: missing \(rgb of frame"),
    ("truncate rgb", r"rgb_.*\.png: unreadable rgb"),
    ("random depth", r"depth_.*\.exr: unreadable depth"),
    ("nan depth", r"depth_.*\.exr: depth of frame .* has no valid pixel"),
    ("small segmap", r"segmap_.*\.mapped\.npz: segmap of frame .* is 10 x 10 x 2, not 240 x 320 x 2"),
    ("bad class", r"segmap_.*\.mapped\.npz: segmap of frame .* has class 40, outside the label set"),
    ("small volume", r"segmentation_.*\.mapped\.npz: segmentation of frame .* is 128 x 128 x 128 x 2, not 256"),
])
def test_a_bad_frame_names_its_file_and_what_is_wrong(tmp_path, example_copy, damage, message):
    from nvpanoptix3d import fileio
    from nvpanoptix3d.data import get_dataset
    verb, kind = damage.split(" ")
    kind = {"volume": "segmentation", "class": "segmap", "nan": "depth"}.get(kind, kind)
    path = _first_train_frame(example_copy, kind)
    if verb == "delete":
        path.unlink()
    elif verb == "truncate":
        path.write_bytes(path.read_bytes()[:300])
    elif verb == "random":
        path.write_bytes(np.random.default_rng(0).bytes(2000))
    elif damage == "nan depth":
        fileio.save_exr(path, np.full((240, 320), np.nan, np.float32))
    elif damage == "small segmap":
        fileio.save_npz(path, data=np.zeros((10, 10, 2), np.uint16))
    elif damage == "bad class":
        seg = fileio.load_npz(path)
        seg[0, 0, 0] = 40
        fileio.save_npz(path, data=seg)
    elif damage == "small volume":
        fileio.save_npz(path, data=np.zeros((128, 128, 128, 2), np.uint16))
    cfg = load_config(str(_spec(tmp_path, example_copy)), [f"results_dir={tmp_path / 'r'}"])
    with pytest.raises(DataError, match=message):
        get_dataset(cfg.dataset, "train", True)[0]


def test_the_kpi_is_prq_or_an_error_never_a_fallback():
    from nvpanoptix3d.metrics.metric_set import MetricSet
    sem = torch.full((1, 4), 10)
    three_d = MetricSet(require_3d=True)
    three_d.add_2d(sem, sem * 0, sem, sem * 0, torch.ones(1, 4), torch.ones(1, 4))
    with pytest.raises(DataError, match="no frame had 3D truth, so PRQ, the KPI, cannot be computed"):
        three_d.summary()
    two_d = MetricSet()
    two_d.add_2d(sem, sem * 0, sem, sem * 0, torch.ones(1, 4), torch.ones(1, 4))
    assert two_d.summary()["kpi"] == two_d.summary()["pq"] == 1.0


@pytest.mark.slow
def test_training_on_a_split_missing_3d_truth_fails_with_the_file(tmp_path, example_copy):
    _first_train_frame(example_copy, "segmentation").unlink()
    run = subprocess.run([sys.executable, "-m", "nvpanoptix3d", "train", "-e", str(_spec(tmp_path, example_copy)),
                          f"results_dir={tmp_path / 'r'}"], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert run.returncode == 2, run.stderr[-2000:]
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "segmentation_" in last and "missing" in last
    events = _events(tmp_path / "r")
    assert events[-1]["event"] == "failed" and not any(e["event"] == "done" for e in events)


# ------------------------------------------------------------------ 4. one engine per job

_HOLD_LOCK = ("import sys, time\nfrom nvpanoptix3d.engine.joblock import JobLock\nJobLock(sys.argv[1]).acquire()\n"
              "print('held', flush=True)\ntime.sleep(120)\n")


@pytest.mark.slow
def test_a_second_engine_on_a_job_is_refused_and_a_dead_holders_lock_taken_over(tmp_path):
    from nvpanoptix3d.engine.joblock import JobLock
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(SpecError, match=rf"an engine already runs this job \(pid {holder.pid} on "):
        JobLock(tmp_path).acquire()
    holder.kill()
    holder.wait()
    lock = JobLock(tmp_path).acquire()
    assert lock.took_over["pid"] == holder.pid
    lock.release()
    assert JobLock(tmp_path).acquire().took_over is None  # released cleanly: nothing to take over


@pytest.mark.slow
def test_relaunching_a_live_job_is_refused(tmp_path):
    store = job_api.JobStore(tmp_path / "jobs")
    record = job_api.create_job(store, "train", "skill", {}, "local",
                                [sys.executable, "-c", "import time; time.sleep(120)"])
    _wait_for(lambda: store.get(record.job_id).status == job_api.RUNNING, 30, "the job to start")
    with pytest.raises(SkillBankError, match=rf"job {record.job_id}: still running .* cancel it or wait"):
        job_api.create_job(store, "train", "skill", {}, "local", ["true"], job_id=record.job_id)
    job_api.cancel_job(store, record.job_id)


@pytest.mark.slow
def test_killing_the_supervisor_takes_its_engine_down_and_the_job_reads_failed(tmp_path):
    store = job_api.JobStore(tmp_path / "jobs")
    script = ("import os, sys, time\nopen('engine.pid', 'w').write(str(os.getpid()))\n"
              "print('error: the last words of the engine', flush=True)\ntime.sleep(120)\n")
    record = job_api.create_job(store, "train", "skill", {}, "local", [sys.executable, "-c", script])
    pid_file = store.job_dir(record.job_id) / "engine.pid"
    engine = int(_wait_for(lambda: pid_file.is_file() and pid_file.read_text(), 30, "the engine"))
    running = _wait_for(lambda: store.get(record.job_id), 30)
    os.kill(running.supervisor_pid, signal.SIGKILL)
    _wait_for(lambda: not Path(f"/proc/{engine}").exists() or
              Path(f"/proc/{engine}/stat").read_text().split()[2] == "Z", 30, "the engine to die")
    final = store.get(record.job_id)
    assert final.status == job_api.FAILED
    assert final.error.startswith("supervisor exited") and "the last words of the engine" in final.error


# ------------------------------------------------------------------ 5. bounded input

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


def test_an_alias_bomb_a_huge_file_and_deep_nesting_are_refused_in_one_line(tmp_path):
    assert len(BOMB) < 400
    cases = {"bomb.yaml": BOMB, "deep.yaml": "a: " + "[" * 200 + "]" * 200 + "\n",
             "huge.yaml": "results_dir: " + "x" * (2 << 20) + "\n"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        started = time.time()
        with pytest.raises(SpecError) as err:
            load_config(str(tmp_path / name), [])
        assert time.time() - started < 5, name
        assert name in str(err.value) and "\n" not in str(err.value) and len(str(err.value)) < 300


def test_bounded_overrides_on_the_engine_and_the_skill_bank(tmp_path):
    from tao_skill_bank.skill import load_skill
    from tao_skill_bank.spec import resolve_spec
    bomb_value = "{" + BOMB.strip().replace("\n", ", ") + "}"
    with pytest.raises(SpecError, match="model.mask_former.dec_layers: not a valid value"):
        apply_overrides({}, [f"model.mask_former.dec_layers={bomb_value}"])
    skill = load_skill(SKILL)
    with pytest.raises(SkillBankError, match="override train.optim.milestones: refused: expands to more than"):
        resolve_spec(skill, "train", {"train.optim.milestones": "[" + bomb_value + "]"})
    with pytest.raises(SkillBankError, match="over the 65536-byte limit") as err:
        resolve_spec(skill, "train", {"results_dir": "x" * 100_000})
    assert len(str(err.value)) < 300
    with pytest.raises(SkillBankError) as err:  # a long wrong value is cut in the message
        resolve_spec(skill, "train", {"train.num_epochs": "[" + ", ".join(["1"] * 5000) + "]"})
    assert len(str(err.value)) < 400


# ------------------------------------------------------------------ 6. disk and store faults

@contextlib.contextmanager
def _tmpfs(path: Path, options: str):
    """A tmpfs mounted at `path` for the block (skipped where mounting is not allowed)."""
    path.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MB tmpfs: room for the spec and status records, not for a tiny model's checkpoints."""
    with _tmpfs(tmp_path / "small", "size=24m") as mount:
        yield mount


@pytest.mark.slow
def test_a_full_disk_fails_the_job_with_that_reason_and_leaves_no_partial_file(tmp_path, small_disk):
    filler = small_disk / "filler"
    results = small_disk / "r"
    proc = _engine("train", _spec(tmp_path), results, "train.num_epochs=3", "train.checkpoint_interval=1")
    _, err = proc.communicate(timeout=600)
    if proc.returncode == 0:  # the checkpoints fitted: fill the disk and train on from them
        with open(filler, "wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * (1 << 20))
            except OSError:
                pass
        proc = _engine("train", _spec(tmp_path), results, "train.num_epochs=6", "train.checkpoint_interval=1",
                       f"train.resume_training_checkpoint_path={results / 'checkpoints' / 'last.ckpt'}")
        _, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, err[-2000:]
    assert "no space left on the device writing" in err.strip().splitlines()[-1]
    assert not list((results / "checkpoints").glob(".*.tmp"))
    for ckpt in (results / "checkpoints").glob("*.ckpt"):  # what was there before is intact
        torch.load(ckpt, weights_only=True)


@pytest.mark.slow
def test_a_corrupt_record_is_skipped_by_list_jobs(tmp_path):
    store = job_api.JobStore(tmp_path / "jobs")
    good = job_api.JobRecord("train-good", "train", "skill", "local", status=job_api.DONE)
    store.job_dir(good.job_id).mkdir(parents=True)
    store.save(good)
    (store.job_dir("train-bad")).mkdir()
    (store.job_dir("train-bad") / "job.json").write_text('{"job_id": "train-bad", "act')
    run = subprocess.run([sys.executable, "runners/tao_run_action.py", "--list-jobs", "--json", "--jobs-dir",
                          str(store.root)], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0
    assert [json.loads(line)["job_id"] for line in run.stdout.splitlines()] == ["train-good"]
    assert "skipped: job train-bad: its record" in run.stderr and "is corrupt" in run.stderr


@pytest.mark.slow
def test_json_output_on_a_read_only_store_is_still_json(tmp_path):
    with _tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        run = subprocess.run([sys.executable, "runners/tao_run_action.py", "--skill", str(SKILL), "--action",
                              "evaluate", "--eval-dataset", str(EXAMPLE), "--jobs-dir", str(ro), "--json"],
                             capture_output=True, text=True, cwd=REPO, timeout=120)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert run.returncode != 0 and result["ok"] is False and "Read-only file system" in result["error"]
    assert "Traceback" not in run.stderr


# ------------------------------------------------------------------ 7. AutoML after a crash

@pytest.mark.slow
def test_a_killed_sweep_keeps_its_summary_stops_its_trial_and_does_not_repeat_itself(tmp_path):
    store = tmp_path / "jobs"
    argv = [sys.executable, "runners/tao_run_automl.py", "--skill", str(SKILL), "--train-dataset", str(EXAMPLE),
            "--jobs-dir", str(store), "--job-id", "automl-crash", "--algorithm", "bayesian", "--ptm", "none",
            "--json", "--params", "train.optim.lr",
            *(f"--override={o}" for o in [*TINY_OVERRIDES, *TINY_TRAIN])]
    sweep = subprocess.Popen([*argv, "--max-trials", "2"], cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    results = store / "automl-crash" / "results"
    _wait_for(lambda: (results / "best_rec.json").is_file(), 600, "the first trial's summary")
    second = _wait_for(lambda: next((p.parent for p in store.glob("train-*/job.json")
                                     if p.parent.name != json.loads((results / "best_rec.json").read_text())
                                     ["best_job_id"]), None), 120, "the second trial")
    _wait_for(lambda: (second / "results" / ".engine.lock").is_file(), 120, "the second trial's engine")
    os.kill(sweep.pid, signal.SIGKILL)  # the sweep dies; its trial's supervisor and engine run on
    sweep.wait()
    summary = json.loads((results / "summary.json").read_text())
    assert summary["best_job_id"] and [t["state"] for t in summary["trials"]][0] == "complete"
    first_params = summary["trials"][0]["params"]
    resumed = subprocess.run([*argv, "--max-trials", "3"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    interrupted = job_api.JobStore(store).get(second.name)
    assert interrupted.status in job_api.FINAL and interrupted.status != job_api.DONE
    final = json.loads((results / "summary.json").read_text())
    later = [t["params"] for t in final["trials"][1:] if t["state"] == "complete"]
    assert later and all(p != first_params for p in later)
