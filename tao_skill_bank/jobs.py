"""The job store: one folder per job with its record, resolved spec, logs and results.

    <store>/<job_id>/job.json      JobRecord (written before launch, updated atomically)
    <store>/<job_id>/spec.yaml     resolved spec
    <store>/<job_id>/logs.txt      the engine's output
    <store>/<job_id>/results/      results_dir: status.json, checkpoints, outputs
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import atomic
from .errors import SkillBankError

PENDING, RUNNING, DONE, FAILED, CANCELLED = "pending", "running", "done", "failed", "cancelled"
FINAL = (DONE, FAILED, CANCELLED)


@dataclass
class JobRecord:
    job_id: str
    action: str
    skill: str
    backend: str
    status: str = PENDING
    parent_job_id: str | None = None
    command: list[str] = field(default_factory=list)
    backend_options: dict = field(default_factory=dict)
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    error: str | None = None
    supervisor_pid: int | None = None
    kpi: float | None = None


def default_store() -> Path:
    return Path(os.environ.get("TAO_SKILL_BANK_JOBS", Path.cwd() / "jobs"))


class JobStore:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else default_store()

    def job_dir(self, job_id: str) -> Path:
        return self.root / job_id

    def results_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "results"

    def spec_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "spec.yaml"

    def log_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "logs.txt"

    def new_id(self, action: str) -> str:
        return f"{action}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"

    def save(self, record: JobRecord) -> None:
        atomic.write_json(self.job_dir(record.job_id) / "job.json", dataclasses.asdict(record))

    def get(self, job_id: str) -> JobRecord:
        path = self.job_dir(job_id) / "job.json"
        if not path.is_file():
            raise SkillBankError(f"job {job_id}: not found in {self.root}; list jobs with --list-jobs or pass "
                                 "the right --jobs-dir")
        record = JobRecord(**json.loads(path.read_text()))
        return self._reap(record)

    def _reap(self, record: JobRecord) -> JobRecord:
        """A running job whose supervisor is gone (machine reboot, kill -9) is failed, not running forever."""
        if record.status == RUNNING and record.supervisor_pid and not _alive(record.supervisor_pid):
            time.sleep(0.2)  # the supervisor writes its final record just before exiting
            record = JobRecord(**json.loads((self.job_dir(record.job_id) / "job.json").read_text()))
            if record.status == RUNNING:
                record.status, record.error, record.finished_at = FAILED, "supervisor exited", time.time()
                self.save(record)
        return record

    def list(self) -> list[JobRecord]:
        if not self.root.is_dir():
            return []
        ids = sorted(p.parent.name for p in self.root.glob("*/job.json"))
        return [self.get(i) for i in ids]

    def kpis(self, job_id: str) -> list[dict]:
        """KPI events the engine wrote to status.json."""
        return [e for e in read_status(self.results_dir(job_id)) if "kpi" in e]


def read_status(results_dir: Path) -> list[dict]:
    path = Path(results_dir) / "status.json"
    if not path.is_file():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written right now
            continue
    return events


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def create_job(store: JobStore, action: str, skill: str, spec: dict, backend: str, command: list[str],
               backend_options: dict | None = None, parent_job_id: str | None = None,
               job_id: str | None = None) -> JobRecord:
    """Write the job record and spec, then start a detached supervisor that runs the backend."""
    record = JobRecord(job_id=job_id or store.new_id(action), action=action, skill=skill, backend=backend,
                       parent_job_id=parent_job_id, command=command, backend_options=backend_options or {},
                       created_at=time.time())
    store.job_dir(record.job_id).mkdir(parents=True, exist_ok=True)
    store.results_dir(record.job_id).mkdir(exist_ok=True)
    atomic.write_text(store.spec_path(record.job_id), yaml.safe_dump(spec, sort_keys=False))
    store.save(record)
    proc = subprocess.Popen([sys.executable, "-m", "tao_skill_bank.supervise", str(store.root), record.job_id],
                            start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=open(store.job_dir(record.job_id) / "supervisor.err", "w"),
                            env={**os.environ, "PYTHONPATH": _pythonpath()})
    record.supervisor_pid = proc.pid
    _own_children.append(proc)
    return record


_own_children: list[subprocess.Popen] = []


def _pythonpath() -> str:
    here = str(Path(__file__).resolve().parent.parent)
    return os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))


def wait(store: JobStore, job_id: str, timeout: float | None = None, poll: float = 0.5) -> JobRecord:
    deadline = None if timeout is None else time.time() + timeout
    while True:
        record = store.get(job_id)
        if record.status in FINAL:
            for proc in _own_children:
                proc.poll()
            return record
        if deadline is not None and time.time() > deadline:
            raise SkillBankError(f"job {job_id}: still {record.status} after {timeout:.0f} s")
        time.sleep(poll)


def cancel_job(store: JobStore, job_id: str) -> JobRecord:
    record = store.get(job_id)
    if record.status in FINAL:
        return record
    if record.supervisor_pid is None:  # not launched yet: nothing to stop
        record.status, record.finished_at = CANCELLED, time.time()
        store.save(record)
        return record
    try:
        os.kill(record.supervisor_pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    return wait(store, job_id, timeout=60)
