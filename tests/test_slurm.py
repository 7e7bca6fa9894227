"""The Slurm backend: the batch script Lightning expects, and jobs on a real one-node cluster (submit, follow,
logs, cancel, requeue and resume)."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from helpers import EXAMPLE, REPO, SKILL, TINY_OVERRIDES, TINY_TRAIN

from tao_skill_bank.backends.slurm import SlurmBackend, job_state
from tao_skill_bank.jobs import JobRecord, JobStore


def _script(tmp_path, **options) -> str:
    store = JobStore(tmp_path)
    record = JobRecord("train-x", "train", "skill", "slurm", command=["nvpanoptix3d", "train", "-e", "s.yaml"])
    return SlurmBackend(**options).script(record, store)


def test_one_task_per_gpu_on_every_node_with_requeue_and_warning():
    lines = _script(__import__("pathlib").Path("/tmp/jobs"), nodes=2, gpus_per_node=4, partition="gpu",
                    account="proj", time_limit="02:00:00").splitlines()
    for expected in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gres=gpu:4",
                     "#SBATCH --partition=gpu", "#SBATCH --account=proj", "#SBATCH --time=02:00:00",
                     "#SBATCH --requeue", "#SBATCH --signal=USR1@90"):
        assert expected in lines
    assert lines[-1].startswith("exec srun ") and lines[-1].endswith("nvpanoptix3d train -e s.yaml")


@pytest.mark.parametrize("runtime, fragment", [
    ("pyxis", "--container-image=nvcr.io/x:1 --container-workdir=/tmp/jobs/train-x --container-mounts="),
    ("apptainer", "apptainer exec --nv --bind /tmp/jobs/train-x:/tmp/jobs/train-x"),
])
def test_containers_through_pyxis_or_apptainer(runtime, fragment):
    script = _script(__import__("pathlib").Path("/tmp/jobs"), container="nvcr.io/x:1", container_runtime=runtime,
                     input_paths=["/data/rooms"])
    assert fragment in script and "/data/rooms:/data/rooms:ro" in script


def _runner(tmp_path, conf, *extra, epochs=1):
    env = {**__import__("os").environ, "SLURM_CONF": conf}
    return subprocess.Popen([sys.executable, "runners/tao_run_action.py", "--skill", str(SKILL), "--action", "train",
                             "--automl-policy", "off", "--train-dataset", str(EXAMPLE), "--jobs-dir",
                             str(tmp_path / "jobs"), "--backend", "slurm", "--backend-option", "poll_s=0.5",
                             "--ptm", "none", "--json",
                             *(f"--override={o}" for o in [*TINY_OVERRIDES, *TINY_TRAIN, f"train.num_epochs={epochs}"]),
                             *extra], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
def test_a_train_job_runs_on_slurm_and_reports_done(tmp_path, slurm_cluster):
    runner = _runner(tmp_path, slurm_cluster)
    out, err = runner.communicate(timeout=600)
    result = json.loads(out.strip().splitlines()[-1])
    assert runner.returncode == 0 and result["ok"] and result["status"] == "done", err[-2000:]
    logs = (tmp_path / "jobs" / result["job_id"] / "logs.txt").read_text()
    assert "[slurm] submitted job" in logs and "COMPLETED" in logs
    events = [json.loads(line) for line in (tmp_path / "jobs" / result["job_id"] / "results" / "status.json")
              .read_text().splitlines()]
    assert events[-1]["event"] == "done"


@pytest.mark.slow
def test_a_requeued_job_resumes_from_its_checkpoint(tmp_path, slurm_cluster, monkeypatch):
    """What preemption does: Slurm stops the job (SIGTERM) and runs it again; the engine saves first and the new
    run continues from that checkpoint, so no finished epoch is trained twice."""
    env = {**__import__("os").environ, "SLURM_CONF": slurm_cluster}
    runner = _runner(tmp_path, slurm_cluster, epochs=4)
    jobs = tmp_path / "jobs"
    deadline = time.time() + 300
    while time.time() < deadline:
        ids = list(jobs.glob("*/slurm_job_id"))
        status = list(jobs.glob("*/results/status.json"))
        if ids and status and any(json.loads(line)["event"] == "epoch" for line in status[0].read_text().splitlines()):
            break
        time.sleep(0.5)
    slurm_id = ids[0].read_text().strip()
    subprocess.run(["scontrol", "requeue", slurm_id], env=env, check=True)
    out, err = runner.communicate(timeout=900)
    result = json.loads(out.strip().splitlines()[-1])
    assert runner.returncode == 0 and result["ok"], err[-2000:]
    events = [json.loads(line) for line in (status[0]).read_text().splitlines()]
    starts = [e for e in events if e["event"] == "start"]
    assert len(starts) == 2 and starts[1]["resume"].endswith("checkpoints/last.ckpt")
    assert any(e["event"] == "cancelled" for e in events) and events[-1]["event"] == "done"
    epochs = [e["epoch"] for e in events if e["event"] == "epoch"]
    assert epochs[-1] == 4 and len(epochs) == len(set(epochs))   # each epoch once
    monkeypatch.setenv("SLURM_CONF", slurm_cluster)
    assert job_state(slurm_id)[0] == "COMPLETED"


@pytest.mark.slow
@pytest.mark.parametrize("args, fragment", [
    (["--partition", "nope"], "partition 'nope' does not exist; pass --partition with one of debug"),
    (["--gpus-per-node", "1"], "1 GPUs per node asked; partition debug's nodes have at most 0"),
    (["--nodes", "2"], "2 nodes asked; partition debug has 1; pass --nodes 1 or fewer"),
])
def test_the_cluster_is_asked_before_a_job_is_submitted(capsys, tmp_path, slurm_cluster, monkeypatch, args,
                                                         fragment):
    from runners.tao_run_action import main as run_action
    monkeypatch.setenv("SLURM_CONF", slurm_cluster)
    code = run_action(["--skill", str(SKILL), "--action", "train", "--automl-policy", "off", "--train-dataset",
                       str(EXAMPLE), "--jobs-dir", str(tmp_path), "--backend", "slurm", "--dry-run", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and fragment in err[-1], err
