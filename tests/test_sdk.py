"""SDK pieces against real services: spec overrides, data sources (local and a real S3 server), PTM downloads
(a real HTTP server), parent-model selection, the train policy."""
from __future__ import annotations

import copy
import hashlib
import http.server
import json
import shutil
import threading
from pathlib import Path

import boto3
import pytest
from helpers import EXAMPLE, SKILL

from tao_skill_bank.data_sources import DatasetRoots, data_overrides
from tao_skill_bank.errors import SkillBankError
from tao_skill_bank.jobs import JobRecord, JobStore
from tao_skill_bank.policy import resolve_policy, route_train
from tao_skill_bank.skill import load_skill
from tao_skill_bank.spec import resolve_spec
from tao_skill_bank.spec_params import parent_checkpoint, resolve_ptm


@pytest.fixture(scope="module")
def skill():
    return load_skill(SKILL)


# ------------------------------------------------------------------ spec overrides
def test_dotted_overrides_merge_and_inputs_stay_untouched(skill):
    overrides = {"train.num_gpus": "2", "model.mask_former.num_object_queries": 50, "num_epochs": "7"}
    before = copy.deepcopy(overrides)
    template_before = skill.load_template("train")
    spec = resolve_spec(skill, "train", overrides)
    assert spec["train"]["num_gpus"] == 2 and spec["model"]["mask_former"]["num_object_queries"] == 50
    assert spec["train"]["num_epochs"] == 7  # shorthand key
    assert overrides == before and skill.load_template("train") == template_before


@pytest.mark.parametrize("overrides, fragment", [
    ({"train.num_gpuz": 1}, "train.num_gpuz"),
    ({"model.mask_former.num_object_queries": 0}, "model.mask_former.num_object_queries"),
    ({"train.precision": "fp8"}, "train.precision"),
    ({"train.num_epochs": "many"}, "train.num_epochs"),
    ({"train.distributed_strategy": "fsdp"}, "train.distributed_strategy: 'fsdp' is not one of"),
])
def test_bad_overrides_name_the_key(skill, overrides, fragment):
    with pytest.raises(SkillBankError, match=fragment.replace(".", r"\.")):
        resolve_spec(skill, "train", overrides)


# ------------------------------------------------------------------ data sources
def test_local_roots_build_every_mandatory_key(skill):
    overrides = data_overrides(skill, "train", DatasetRoots(str(EXAMPLE)))
    assert {r.spec_key for r in skill.requirements_for("train")} == set(overrides)
    assert overrides["dataset.val.json_path"].endswith("meta/val.json")
    assert Path(overrides["dataset.train.base_dir"]).is_dir()


def test_missing_frustum_mask_gets_the_error_pattern(skill, example_copy):
    (example_copy / "meta" / "frustum_mask.npz").unlink()
    with pytest.raises(SkillBankError, match="Ensure meta/frustum_mask.npz is present"):
        data_overrides(skill, "train", DatasetRoots(train_datasets=str(example_copy)))


def _upload(bucket: str, prefix: str, root: Path) -> int:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    files = [p for p in root.rglob("*") if p.is_file()]
    for p in files:
        s3.upload_file(str(p), bucket, f"{prefix}/{p.relative_to(root)}")
    return len(files)


def test_s3_root_fetched_once_into_content_addressed_cache(skill, s3_env, cache_env):
    _upload("datasets", "front3d/tiny", EXAMPLE)
    roots = DatasetRoots(eval_dataset="s3://datasets/front3d/tiny")
    first = data_overrides(skill, "evaluate", roots)
    local = Path(first["dataset.frustum_mask_path"])
    assert local.is_file() and str(cache_env) in str(local)
    stamp = local.stat().st_mtime_ns
    second = data_overrides(skill, "evaluate", roots)
    assert second == first and local.stat().st_mtime_ns == stamp  # not downloaded again
    assert (local.parent.parent / "data").is_dir()


def test_s3_missing_bucket_and_missing_file(skill, s3_env, cache_env):
    with pytest.raises(SkillBankError, match="bucket 'nope' does not exist"):
        data_overrides(skill, "evaluate", DatasetRoots(eval_dataset="s3://nope/x"))
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="partial")
    s3.put_object(Bucket="partial", Key="ds/meta/val.json", Body=b"[]")
    with pytest.raises(SkillBankError, match="frustum_mask.npz not found"):
        data_overrides(skill, "train", DatasetRoots(train_datasets="s3://partial/ds"))


# ------------------------------------------------------------------ PTM
@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_ptm_default_is_the_skills_shipped_weights(skill):
    path = Path(resolve_ptm(None, None, skill.pretrained_model()))
    assert path.name == "nvpanoptix3d_synthetic.safetensors" and path.is_file()
    assert resolve_ptm("none", None, skill.pretrained_model()) == ""


def test_ptm_https_downloaded_once_and_checked(http_root, cache_env):
    root, url = http_root
    blob = b"weights" * 1000
    (root / "model.safetensors").write_bytes(blob)
    digest = hashlib.sha256(blob).hexdigest()
    path = Path(resolve_ptm(f"{url}/model.safetensors", digest))
    assert path.read_bytes() == blob
    (root / "model.safetensors").unlink()  # a second resolve must come from the cache
    assert Path(resolve_ptm(f"{url}/model.safetensors", digest)) == path
    with pytest.raises(SkillBankError, match="does not match"):
        (root / "other.bin").write_bytes(b"x")
        resolve_ptm(f"{url}/other.bin", digest)
    with pytest.raises(SkillBankError, match="HTTP 404"):
        resolve_ptm(f"{url}/missing.bin", None)


def test_ptm_from_s3(s3_env, cache_env):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="models")
    s3.put_object(Bucket="models", Key="p/w.bin", Body=b"abc")
    assert Path(resolve_ptm("s3://models/p/w.bin", hashlib.sha256(b"abc").hexdigest())).read_bytes() == b"abc"


# ------------------------------------------------------------------ parent model
def _fake_job(store: JobStore, job_id: str, action: str = "train", status_lines=(), files=()) -> Path:
    store.save(JobRecord(job_id, action, "tao-train-nvpanoptix3d", "local", status="done"))
    results = store.results_dir(job_id)
    (results / "checkpoints").mkdir(parents=True, exist_ok=True)
    for name in files:
        (results / "checkpoints" / name).write_bytes(b"x")
    (results / "status.json").write_text("".join(json.dumps(e) + "\n" for e in status_lines))
    return results


def test_parent_model_best_kpi_else_latest_else_error(tmp_path):
    store = JobStore(tmp_path)
    events = [{"event": "checkpoint", "path": f"checkpoints/epoch_00{i}.ckpt", "kpi": kpi}
              for i, kpi in ((1, 0.2), (2, 0.5), (3, 0.4))]
    _fake_job(store, "with-kpi", status_lines=events, files=["epoch_001.ckpt", "epoch_002.ckpt", "epoch_003.ckpt",
                                                             "last.ckpt"])
    assert parent_checkpoint(store, "with-kpi").name == "epoch_002.ckpt"
    results = _fake_job(store, "no-kpi", files=["epoch_001.ckpt"])
    (results / "checkpoints" / "last.ckpt").write_bytes(b"newer")
    assert parent_checkpoint(store, "no-kpi").name == "last.ckpt"
    _fake_job(store, "empty")
    with pytest.raises(SkillBankError, match="no checkpoint"):
        parent_checkpoint(store, "empty")
    automl = _fake_job(store, "sweep", action="automl")
    (automl / "best_rec.json").write_text(json.dumps({"best_job_id": "with-kpi"}))
    assert parent_checkpoint(store, "sweep").name == "epoch_002.ckpt"


# ------------------------------------------------------------------ policy
@pytest.mark.parametrize("text, policy", [
    ("train NVPanoptix3D on my scans", "auto"), ("please turn off AutoML", "off"), ("Disable AutoML now", "off"),
    ("no HPO, just train", "off"), ("plain training please", "off"),
])
def test_policy_phrases(text, policy):
    assert resolve_policy(None, text) == policy
    assert resolve_policy("auto", text) == "auto"  # an explicit value wins


def test_route_auto_off_and_missing_schema(skill, tmp_path):
    assert route_train(skill, "auto").automl
    assert not route_train(skill, "off").automl
    for missing in ("schemas/train.schema.json", "references/spec_template_train.yaml"):
        copy_root = tmp_path / missing.replace("/", "_")
        shutil.copytree(SKILL.parent.parent, copy_root, ignore=shutil.ignore_patterns(".venv", "examples", "jobs",
                                                                                       ".git", "*.safetensors"))
        (copy_root / missing).unlink()
        route = route_train(load_skill(copy_root / "skills" / "tao-train-nvpanoptix3d"), "auto")
        assert not route.automl and "not runnable until schemas are generated" in route.reason
