"""Spec-param inference: the skill table's functions fill checkpoint, output and key fields before a job exists."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .data_sources import cache_dir, s3_client, split_s3
from .errors import SkillBankError
from .jobs import JobStore, read_status
from .skill import Skill

CHECKPOINT_SUFFIXES = (".ckpt", ".pth", ".pt", ".safetensors")


@dataclass
class SpecContext:
    """What the spec-parameter functions may look at: the job being created, its parent and the PTM choice."""
    store: JobStore
    job_id: str
    parent_job_id: str | None = None
    ptm: str | None = None          # local path, s3:// or https:// URL; None: the skill's shipped weights
    ptm_sha256: str | None = None
    shipped_ptm: str = ""           # the skill's own weights (skill_info.yaml), "" when it ships none
    model: str = "model"            # the skill's network_arch (skill_info.yaml): names the files it creates


def checkpoints_in(results_dir: Path) -> list[Path]:
    if not results_dir.is_dir():
        return []
    return sorted(p for p in results_dir.rglob("*") if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES
                  and not p.name.startswith("."))


def select_checkpoint(results_dir: Path) -> Path | None:
    """Best by KPI when status.json tied KPIs to checkpoints, else the latest written."""
    files = checkpoints_in(results_dir)
    if not files:
        return None
    scored = {}
    for event in read_status(results_dir):
        if event.get("event") == "checkpoint" and isinstance(event.get("kpi"), (int, float)):
            path = (results_dir / event["path"]).resolve()
            if path in {f.resolve() for f in files}:
                scored[path] = event["kpi"]
    if scored:
        return max(scored, key=lambda p: (scored[p], p.stat().st_mtime))
    return max(files, key=lambda p: (p.stat().st_mtime, p.name))


def parent_checkpoint(store: JobStore, parent_job_id: str) -> Path:
    record = store.get(parent_job_id)
    results = store.results_dir(parent_job_id)
    best_rec = results / "best_rec.json"
    if record.action == "automl" and best_rec.is_file():
        import json
        return parent_checkpoint(store, json.loads(best_rec.read_text())["best_job_id"])
    chosen = select_checkpoint(results)
    if chosen is None:
        raise SkillBankError(f"parent job {parent_job_id} ({record.action}, {record.status}): no checkpoint in "
                             f"{results}; pass the id of a finished train or AutoML job as --parent-job-id")
    return chosen


def resolve_ptm(ptm: str | None, sha256: str | None, shipped: str = "") -> str:
    """The pretrained weights as a local file: the skill's shipped ones by default, "none" for random
    initialisation, else fetched once into the cache."""
    if ptm == "none":
        return ""
    if not ptm:
        return shipped
    if ptm.startswith(("s3://", "http://", "https://")):
        return str(_download_once(ptm, sha256))
    path = Path(ptm).expanduser().resolve()
    if not path.is_file():
        raise SkillBankError(f"--ptm {ptm}: file not found; give a local file, s3:// or https:// URL")
    if sha256 and _sha256(path) != sha256:
        raise SkillBankError(f"--ptm {ptm}: SHA-256 {_sha256(path)} does not match --ptm-sha256 {sha256}")
    return str(path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download_once(url: str, sha256: str | None) -> Path:
    name = url.rstrip("/").rsplit("/", 1)[-1] or "model"
    folder = cache_dir() / "ptm" / (sha256 or hashlib.sha256(url.encode()).hexdigest()[:24])
    target = folder / name
    if target.is_file() and (not sha256 or _sha256(target) == sha256):
        return target
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".download-")
    os.close(fd)
    try:
        if url.startswith("s3://"):
            bucket, key = split_s3(url)
            s3_client().download_file(bucket, key, tmp)
        else:
            import requests
            with requests.get(url, stream=True, timeout=60) as resp:
                if resp.status_code != 200:
                    raise SkillBankError(f"--ptm {url}: HTTP {resp.status_code}; check the URL")
                with open(tmp, "wb") as fh:
                    shutil.copyfileobj(resp.raw, fh)
        got = _sha256(Path(tmp))
        if sha256 and got != sha256:
            raise SkillBankError(f"--ptm {url}: downloaded SHA-256 {got} does not match --ptm-sha256 {sha256}")
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def _parent_model(ctx: SpecContext) -> str:
    if ctx.parent_job_id:
        return str(parent_checkpoint(ctx.store, ctx.parent_job_id))
    return _ptm(ctx)


def _ptm(ctx: SpecContext) -> str:
    return resolve_ptm(ctx.ptm, ctx.ptm_sha256, ctx.shipped_ptm)


def _resume_model(ctx: SpecContext) -> str:
    own = ctx.store.results_dir(ctx.job_id) / "checkpoints" / "last.ckpt"
    return str(own) if own.is_file() else ""


FUNCTIONS: dict[str, Callable[[SpecContext], str]] = {
    "parent_model": _parent_model,
    "parent_model_or_ptm": _parent_model,
    "ptm": _ptm,
    "resume_model": _resume_model,
    "output_dir": lambda ctx: str(ctx.store.results_dir(ctx.job_id).resolve()),
    "key": lambda ctx: os.environ.get("TAO_ENCRYPTION_KEY", ""),
    "create_onnx_file": lambda ctx: str(ctx.store.results_dir(ctx.job_id).resolve() / f"{ctx.model}.onnx"),
    "create_engine_file": lambda ctx: str(ctx.store.results_dir(ctx.job_id).resolve() / "model.engine"),
    "create_onnx_file_2d": lambda ctx: str(ctx.store.results_dir(ctx.job_id).resolve() / f"{ctx.model}_2d.onnx"),
    "create_onnx_file_3d": lambda ctx: str(ctx.store.results_dir(ctx.job_id).resolve() / f"{ctx.model}_3d.onnx"),
}


def infer_spec_params(skill: Skill, action: str, ctx: SpecContext, user_keys: set[str]) -> dict[str, str]:
    """Values for the action's inferred fields; keys the user set explicitly are left to the user."""
    return {p.spec_key: FUNCTIONS[p.function](ctx) for p in skill.spec_params_for(action)
            if p.spec_key not in user_keys}
