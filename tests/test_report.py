"""The job report: one self-contained page per job, checked as a browser renders it (headless Chromium)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from tao_skill_bank import atomic
from tao_skill_bank.jobs import DONE, JobRecord, JobStore
from tao_skill_bank.report import write_report


def _job(tmp_path, job_id="train-1", **extra) -> JobStore:
    store = JobStore(tmp_path / "jobs")
    store.job_dir(job_id).mkdir(parents=True)
    store.save(JobRecord(job_id, "train", "skill", "local", status=DONE, created_at=1.0, started_at=2.0,
                         finished_at=62.0, kpi=0.31, **extra))
    lines = [{"event": "start", "time": 2.0, "frames": 4}]
    lines += [{"event": "epoch", "time": 2.0 + 20 * e, "epoch": e, "losses": {"loss": 3.0 / e}, "kpi": 0.1 * e,
               "images_per_s": 5.0} for e in (1, 2, 3)]
    lines += [{"event": "done", "time": 62.0, "kpi": 0.31}]
    results = store.results_dir(job_id)
    results.mkdir(parents=True)
    (results / "status.json").write_text("".join(json.dumps(line) + "\n" for line in lines))
    atomic.write_json(results / "metrics.json", {"prq": 0.31, "pq": 0.8, "prq_per_class": {
        "chair": {"quality": 0.2, "segmentation": 0.5, "recognition": 0.4, "tp": 2, "fp": 1, "fn": 3},
        "<script>": {"quality": 0.0, "segmentation": 0.0, "recognition": 0.0, "tp": 0, "fp": 0, "fn": 1}}})
    return store


def _rendered(path) -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("REQUIRE_CHROMIUM"):
            pytest.fail("REQUIRE_CHROMIUM is set but chromium is not installed")
        pytest.skip("chromium not installed (CI installs it and sets REQUIRE_CHROMIUM=1)")
    run = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", f"file://{path}"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def test_a_train_report_shows_the_record_metrics_curves_and_timeline(tmp_path):
    store = _job(tmp_path)
    page = write_report(store, "train-1")
    assert page == store.results_dir("train-1") / "report.html"
    dom = _rendered(page)
    assert "<h2>Metrics</h2>" in dom and "<h2>Training</h2>" in dom and "<h2>Status timeline</h2>" in dom
    assert dom.count("<polyline") == 3                       # loss, KPI, images/s
    losses = re.search(r"loss: loss.*?points=\"([^\"]+)\"", dom, re.S).group(1).split()
    ys = [float(p.split(",")[1]) for p in losses]
    assert ys[0] < ys[1] < ys[2]                              # the loss falls: the line goes down the page
    assert "&lt;script&gt;" in dom and "<script>" not in dom  # names are escaped, the page runs no script
    assert "http" not in dom.replace("http://www.w3.org/2000/svg", "")   # nothing fetched from the network


def test_an_automl_report_marks_pruned_trials_and_the_best(tmp_path):
    store = _job(tmp_path, "automl-1")
    summary = {"metric": "kpi", "best_trial": 1, "best_value": 0.4, "trials": [
        {"trial": 0, "state": "pruned", "rung": 1, "kpi": 0.1, "job_id": "t0", "params": {"lr": 1}},
        {"trial": 1, "state": "complete", "rung": 3, "kpi": 0.4, "job_id": "t1", "params": {"lr": 2}},
        {"trial": 2, "state": "fail", "rung": 0, "kpi": None, "job_id": "t2", "params": {"lr": 3}}]}
    atomic.write_json(store.results_dir("automl-1") / "summary.json", summary)
    dom = _rendered(write_report(store, "automl-1"))
    assert "<h2>Trials</h2>" in dom and 'class="best"' in dom and 'class="pruned"' in dom
    assert len(re.findall(r"<circle class=\"(?:best|pruned)\"", dom)) == 2   # scored trials only
    assert "best: trial 1" in dom


def test_an_inference_report_links_its_scene_pages(tmp_path):
    store = _job(tmp_path, "inference-1")
    predictions = store.results_dir("inference-1") / "predictions"
    (predictions / "scene").mkdir(parents=True)
    (predictions / "scene" / "scene.html").write_text("<html></html>")
    (predictions / "frame_0001_scene.html").write_text("<html></html>")
    dom = _rendered(write_report(store, "inference-1"))
    assert "<h2>Scene pages</h2>" in dom
    assert 'href="predictions/frame_0001_scene.html"' in dom and 'href="predictions/scene/scene.html"' in dom
