"""AutoML: search space from a schema, a real tiny sweep on the CPU with pruning, kill and resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from helpers import EXAMPLE, REPO, SKILL, TINY_OVERRIDES, TINY_TRAIN

from tao_skill_bank.search_space import SearchSpace
from tao_skill_bank.conditions import evaluate_condition
from tao_skill_bank.jobs import JobStore
from tao_skill_bank.spec_params import parent_checkpoint

SCHEMA = {
    "type": "object",
    "properties": {
        "train": {"type": "object", "properties": {
            "num_epochs": {"type": "integer", "default": 10, "minimum": 1, "maximum": 100},
            "lr": {"type": "number", "default": 0.001, "minimum": 1e-6, "maximum": 1.0},
            "warmup": {"type": "integer", "default": 4, "minimum": 0, "maximum": 50,
                       "math_cond": "train.warmup < train.num_epochs"},
            "scheduler": {"type": "string", "default": "step", "enum": ["step", "poly"],
                          "option_weights": [0.9, 0.1]},
            "gamma": {"type": "number", "default": 0.1, "minimum": 0.01, "maximum": 1.0,
                      "depends_on": "train.scheduler=step"},
        }},
    },
    "automl_default_parameters": ["train.num_epochs", "train.lr", "train.warmup", "train.scheduler", "train.gamma"],
}


def test_search_space_respects_bounds_weights_conditions_and_dependencies():
    space = SearchSpace.from_schema(SCHEMA)
    assert space.conditions == ["train.warmup < train.num_epochs"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    launched, rejected, schedulers = [], 0, []
    for _ in range(300):
        trial = study.ask()
        values = space.sample(trial, {"train": {"num_epochs": 10, "lr": 0.001, "warmup": 4, "scheduler": "step",
                                                "gamma": 0.1}})
        if values is None:
            rejected += 1
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        launched.append(values)
        study.tell(trial, 0.0)
        schedulers.append(values["train.scheduler"])
    assert rejected > 0
    for v in launched:
        assert v["train.warmup"] < v["train.num_epochs"]                 # never launched when broken
        assert 1e-4 <= v["train.lr"] <= 1e-2 and 5 <= v["train.num_epochs"] <= 20
        assert ("train.gamma" in v) == (v["train.scheduler"] == "step")  # searched only under its dependency
    assert 0.8 < schedulers.count("step") / len(schedulers) < 0.97     # option weights 0.9 / 0.1


def test_conditions_read_dotted_keys():
    assert evaluate_condition("dataset.depth_min < dataset.depth_max", {"dataset": {"depth_min": 0.4, "depth_max": 6}})
    assert not evaluate_condition("a.b >= 2", {"a": {"b": 1}})


def _automl_cmd(jobs, job_id, trials):
    overrides = [a for o in TINY_OVERRIDES + TINY_TRAIN + ["train.num_epochs=3", "model.depth_head.weight=1.0"]
                 for a in ("--override", o)]
    return [sys.executable, str(REPO / "runners" / "tao_run_automl.py"), "--skill", str(SKILL), "--train-dataset",
            str(EXAMPLE), "--jobs-dir", str(jobs), "--job-id", job_id, "--max-trials", str(trials), "--algorithm",
            "asha", "--metric", "loss", "--ptm", "none", "--json", *overrides]


@pytest.mark.slow
def test_tiny_sweep_prunes_and_parent_model_is_the_best_trial(tmp_path):
    jobs = tmp_path / "jobs"
    run = subprocess.run(_automl_cmd(jobs, "automl-test", 5), capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "TAO_SKILL_BANK_CACHE": str(tmp_path / "cache")})
    assert run.returncode == 0, run.stderr[-2000:]
    store = JobStore(jobs)
    results = store.results_dir("automl-test")
    summary = json.loads((results / "summary.json").read_text())
    states = [t["state"] for t in summary["trials"]]
    assert len(states) == 5 and "pruned" in states and "complete" in states
    assert (results / "summary.csv").is_file() and (results / "prq_over_trials.png").stat().st_size > 0
    best = summary["best_job_id"]
    complete = [t for t in summary["trials"] if t["state"] == "complete"]
    assert min(t["loss"] for t in complete) == summary["best_value"]
    children = [store.get(t["job_id"]) for t in summary["trials"] if t["job_id"]]
    assert all(c.parent_job_id == "automl-test" for c in children)
    assert any(c.status == "pruned" for c in children)  # a pruned child is stopped and says why
    assert summary["trial_seconds_saved_by_pruning"] > 0
    chosen = parent_checkpoint(store, "automl-test")
    assert str(chosen).startswith(str(store.results_dir(best)))
    assert store.get("automl-test").status == "done"


@pytest.fixture(params=["sqlite", "postgresql"])
def study_storage(request, tmp_path):
    """None: the default SQLite file in the AutoML job's folder; else a real PostgreSQL server's URL."""
    return None if request.param == "sqlite" else request.getfixturevalue("postgres_url")


@pytest.mark.slow
def test_killed_sweep_resumes_the_same_study(tmp_path, study_storage):
    jobs = tmp_path / "jobs"
    job_id = f"automl-resume-{tmp_path.name[-12:]}"  # one study per test run in a shared database
    env = {**os.environ, "TAO_SKILL_BANK_CACHE": str(tmp_path / "cache")}
    cmd = _automl_cmd(jobs, job_id, 3) + (["--storage", study_storage] if study_storage else [])
    db = jobs / job_id / "results" / "study.db"
    storage = study_storage or f"sqlite:///{db}"

    def finished_trials():
        if study_storage is None and not db.exists():
            return []
        try:
            study = optuna.load_study(study_name=job_id, storage=storage)
        except KeyError:  # not created yet
            return []
        return [t for t in study.trials if t.state.is_finished()]

    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        if finished_trials():
            break
        time.sleep(1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = [t.number for t in finished_trials()]
    assert first
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    finished = finished_trials()
    assert {t.number for t in finished} >= set(first)
    assert len([t for t in finished if t.state != optuna.trial.TrialState.FAIL]) >= 3 - 1


def test_packaged_space_searches_training_not_evaluation_settings():
    schema = json.loads((SKILL / ".." / ".." / "schemas" / "train.schema.json").read_text())
    keys = {p.key for p in SearchSpace.from_schema(schema).parameters}
    assert "dataset.train.batch_size" in keys
    assert not keys & {"dataset.val.batch_size", "dataset.test.batch_size"}  # cannot change what training learns
    assert {"dataset.val.batch_size", "dataset.test.batch_size"} <= set(schema["automl_disabled_parameters"])
