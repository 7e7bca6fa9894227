"""The job store and its backends with real processes and a real docker daemon."""
from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from tao_skill_bank.backends.docker_backend import host_python_options
from tao_skill_bank.jobs import CANCELLED, DONE, FAILED, RUNNING, JobStore, cancel_job, create_job, wait


def _job(store, command, backend="local", options=None):
    return create_job(store, "train", "tao-train-nvpanoptix3d", {"results_dir": "x"}, backend, command, options)


@pytest.mark.slow
def test_success_and_failure_are_recorded_with_logs(tmp_path):
    store = JobStore(tmp_path)
    ok = _job(store, [sys.executable, "-c", "print('hello from the job')"])
    bad = _job(store, [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"])
    assert wait(store, ok.job_id, 60).status == DONE
    record = wait(store, bad.job_id, 60)
    assert record.status == FAILED and record.exit_code == 3 and "logs.txt" in record.error
    assert "hello from the job" in store.log_path(ok.job_id).read_text()
    assert [r.job_id for r in store.list()] == sorted([ok.job_id, bad.job_id])
    assert (store.job_dir(ok.job_id) / "spec.yaml").is_file()


def _wait_running(store, job_id):
    for _ in range(200):
        if store.get(job_id).status == RUNNING:
            return
        time.sleep(0.05)
    raise AssertionError("job never started")


@pytest.mark.slow
def test_cancel_stops_the_process_and_records_it(tmp_path):
    store = JobStore(tmp_path)
    job = _job(store, [sys.executable, "-c", "import time; time.sleep(60)"])
    _wait_running(store, job.job_id)
    time.sleep(1.0)
    record = cancel_job(store, job.job_id)
    assert record.status == CANCELLED and record.finished_at is not None


@pytest.mark.slow
def test_killed_supervisor_leaves_a_consistent_failed_record(tmp_path):
    store = JobStore(tmp_path)
    job = _job(store, [sys.executable, "-c", "import time; time.sleep(60)"])
    _wait_running(store, job.job_id)
    os.kill(store.get(job.job_id).supervisor_pid, signal.SIGKILL)
    record = wait(store, job.job_id, 30)
    assert record.status == FAILED and record.error == "supervisor exited"


@pytest.mark.slow
def test_docker_job_runs_streams_logs_and_cancels(tmp_path, docker_image):
    store = JobStore(tmp_path)
    options = {**host_python_options(), "image": docker_image}
    ok = _job(store, [sys.executable, "-c", "import os; print('in container', os.environ['NUM_GPU_PER_NODE'])"],
              "docker", options)
    assert wait(store, ok.job_id, 120).status == DONE
    assert "in container 0" in store.log_path(ok.job_id).read_text()
    slow = _job(store, [sys.executable, "-c", "import time; time.sleep(120)"], "docker", options)
    _wait_running(store, slow.job_id)
    time.sleep(2)
    assert cancel_job(store, slow.job_id).status == CANCELLED
    import docker
    leftover = docker.from_env().containers.list(all=True, filters={"label": f"tao_skill_bank.job_id={slow.job_id}"})
    assert leftover == []


@pytest.mark.slow
def test_s3_job_store_mirrors_records_logs_and_results(tmp_path, s3_env, monkeypatch):
    import boto3
    boto3.client("s3").create_bucket(Bucket="jobstore")
    monkeypatch.setenv("TAO_SKILL_BANK_CACHE", str(tmp_path / "machine-a"))
    store = JobStore("s3://jobstore/team")
    script = "import pathlib; pathlib.Path('results/checkpoints').mkdir(parents=True); " \
             "pathlib.Path('results/checkpoints/last.ckpt').write_bytes(b'w'); print('trained')"
    job = _job(store, [sys.executable, "-c", script])
    assert wait(store, job.job_id, 60).status == DONE
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="jobstore")["Contents"]}
    assert {f"team/{job.job_id}/{name}" for name in ("job.json", "spec.yaml", "logs.txt",
                                                     "results/checkpoints/last.ckpt")} <= keys
    # another machine (another cache) sees the same job and can take its checkpoint as a parent model
    monkeypatch.setenv("TAO_SKILL_BANK_CACHE", str(tmp_path / "machine-b"))
    other = JobStore("s3://jobstore/team")
    assert [r.job_id for r in other.list()] == [job.job_id]
    assert other.get(job.job_id).status == DONE and "trained" in other.log_path(job.job_id).read_text()
    from tao_skill_bank.spec_params import parent_checkpoint
    assert parent_checkpoint(other, job.job_id).name == "last.ckpt"


@pytest.mark.slow
def test_sdk_front_door(tmp_path, cache_env):
    import tao_skill_bank as sdk
    from helpers import EXAMPLE, SKILL, TINY_OVERRIDES
    store = sdk.JobStore(tmp_path)
    overrides = dict(o.split("=", 1) for o in TINY_OVERRIDES)
    request = sdk.ActionRequest(str(SKILL), "evaluate", sdk.DatasetRoots(eval_dataset=str(EXAMPLE)), overrides,
                                ptm="none")
    job = sdk.launch(sdk.prepare(request, store), store)
    assert sdk.wait(store, job.job_id, 300).status == DONE
    assert [j.job_id for j in sdk.list_jobs(str(tmp_path))] == [job.job_id]
    assert sdk.get_job(job.job_id, str(tmp_path)).status == DONE
