"""The job store: one folder per job with its record, resolved spec, logs and results.

    <store>/<job_id>/job.json      JobRecord (written before launch, updated atomically)
    <store>/<job_id>/spec.yaml     resolved spec
    <store>/<job_id>/logs.txt      the engine's output
    <store>/<job_id>/results/      results_dir: status.json, checkpoints, outputs
"""
from __future__ import annotations

import dataclasses
import hashlib
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

PENDING, RUNNING, DONE, FAILED, CANCELLED, PRUNED = "pending", "running", "done", "failed", "cancelled", "pruned"
FINAL = (DONE, FAILED, CANCELLED, PRUNED)
STOP_REASON = "stop_reason"        # a file in the job's folder: why a cancel was asked (e.g. pruned)
ENGINE_LOCK = "results/.engine.lock"  # the engine's lock: its pid and host while it runs


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
    """A folder of jobs. With an s3://bucket/prefix root, jobs run in a local working copy (in the cache) and
    every record, spec, log and result is mirrored to S3, where any machine can read them back."""

    def __init__(self, root: str | Path | None = None):
        root = str(root) if root else str(default_store())
        self.url = root if root.startswith("s3://") else None
        if self.url:
            from .data_sources import cache_dir
            self.root = cache_dir() / "jobs" / hashlib.sha256(self.url.encode()).hexdigest()[:16]
        else:
            self.root = Path(root)

    @property
    def location(self) -> str:
        """What a supervisor or another machine opens to reach this store."""
        return self.url or str(self.root)

    def _s3(self):
        from .data_sources import s3_client, split_s3
        bucket, prefix = split_s3(self.url)
        return s3_client(), bucket, prefix

    def sync_up(self, job_id: str) -> None:
        """Upload the job's folder (job.json last, so a reader never sees a record ahead of its files)."""
        if not self.url:
            return
        client, bucket, prefix = self._s3()
        folder = self.job_dir(job_id)
        files = sorted((p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")),
                       key=lambda p: p.name == "job.json")
        for path in files:
            client.upload_file(str(path), bucket, f"{prefix}/{job_id}/{path.relative_to(folder)}".lstrip("/"))

    def _sync_down(self, job_id: str) -> None:
        if not self.url:
            return
        client, bucket, prefix = self._s3()
        key_prefix = f"{prefix}/{job_id}/".lstrip("/")
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix):
            for obj in page.get("Contents", []):
                dest = self.job_dir(job_id) / obj["Key"][len(key_prefix):]
                dest.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, obj["Key"], str(dest))

    def _remote_ids(self) -> list[str]:
        client, bucket, prefix = self._s3()
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/".lstrip("/"),
                                                                   Delimiter="/")
        return [p["Prefix"].rstrip("/").rsplit("/", 1)[-1] for page in pages for p in page.get("CommonPrefixes", [])]

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
        path = self.job_dir(record.job_id) / "job.json"
        atomic.write_json(path, dataclasses.asdict(record))
        if self.url:
            client, bucket, prefix = self._s3()
            client.upload_file(str(path), bucket, f"{prefix}/{record.job_id}/job.json".lstrip("/"))

    def get(self, job_id: str) -> JobRecord:
        path = self.job_dir(job_id) / "job.json"
        if not path.is_file():
            self._sync_down(job_id)
        if not path.is_file():
            raise SkillBankError(f"job {job_id}: not found in {self.location}; list jobs with --list-jobs or pass "
                                 "the right --jobs-dir")
        return self._reap(self._read(job_id))

    def _read(self, job_id: str) -> JobRecord:
        path = self.job_dir(job_id) / "job.json"
        try:
            return JobRecord(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise SkillBankError(f"job {job_id}: its record {path} is corrupt ({type(exc).__name__}); move the "
                                 "folder aside or delete it") from None

    def _reap(self, record: JobRecord) -> JobRecord:
        """A running job whose supervisor is gone (machine reboot, kill -9) is failed, not running forever: its
        engine, if still alive on this host, is stopped, and the error is the last one its log names."""
        if record.status == RUNNING and record.supervisor_pid and not _alive(record.supervisor_pid):
            time.sleep(0.2)  # the supervisor writes its final record just before exiting
            record = self._read(record.job_id)
            if record.status == RUNNING:
                stopped = _stop_orphan(record, self)
                last = last_error_line(self.log_path(record.job_id))
                record.status, record.finished_at = FAILED, time.time()
                record.error = "supervisor exited" + (f"; {stopped} was stopped" if stopped else "") \
                    + (f"; last error in the log: {last}" if last else "")
                self.save(record)
        return record

    def list(self, problems: list | None = None) -> list[JobRecord]:
        """Every readable job; a corrupt record is skipped and its one-line problem appended to `problems`."""
        ids = {p.parent.name for p in self.root.glob("*/job.json")} if self.root.is_dir() else set()
        if self.url:
            ids |= set(self._remote_ids())
        records = []
        for job_id in sorted(ids):
            try:
                records.append(self.get(job_id))
            except SkillBankError as exc:
                if problems is None:
                    raise
                problems.append(str(exc))
        return records

    def check_writable(self) -> None:
        """The store's folder exists or can be made, and takes files."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".probe-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise SkillBankError(f"--jobs-dir {self.root}: not a writable folder ({exc.strerror or exc}); pass a "
                                 "folder you can write to") from None

    def ensure_not_running(self, job_id: str) -> None:
        """Relaunching a job in place is refused while its supervisor or engine lives."""
        if not (self.job_dir(job_id) / "job.json").is_file():
            return
        record = self.get(job_id)
        live = record.status in (PENDING, RUNNING) and record.supervisor_pid and _alive(record.supervisor_pid)
        lock = self.job_dir(job_id) / ENGINE_LOCK
        if live or _lock_held(lock):
            raise SkillBankError(f"job {job_id}: still {record.status} (supervisor pid {record.supervisor_pid}); "
                                 "cancel it or wait for it before relaunching it")

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


def last_error_line(log: Path, max_bytes: int = 65536) -> str | None:
    """The last line of a job's log that reads as the cause: the engine's `error:` line, else an exception's."""
    try:
        with open(log, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - max_bytes))
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for prefix in ("error: ", "cancelled: ", "requeued: "):
        found = [line for line in lines if line.startswith(prefix)]
        if found:
            return found[-1][:300]
    found = [line for line in lines if line and not line.startswith(" ") and ("Error" in line or "Exception" in line)]
    return found[-1][:300] if found else None


def _stop_orphan(record: JobRecord, store: JobStore) -> str | None:
    from .backends import get_backend
    try:
        return get_backend(record.backend, **record.backend_options).stop_orphan(record, store)
    except (SkillBankError, TypeError):  # a record of another version's backend options
        return None


def _lock_held(path: Path) -> bool:
    import fcntl
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


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
    store.check_writable()
    if job_id:
        store.ensure_not_running(job_id)
        (store.job_dir(job_id) / STOP_REASON).unlink(missing_ok=True)
    record = JobRecord(job_id=job_id or store.new_id(action), action=action, skill=skill, backend=backend,
                       parent_job_id=parent_job_id, command=command, backend_options=backend_options or {},
                       created_at=time.time())
    store.job_dir(record.job_id).mkdir(parents=True, exist_ok=True)
    store.results_dir(record.job_id).mkdir(exist_ok=True)
    atomic.write_text(store.spec_path(record.job_id), yaml.safe_dump(spec, sort_keys=False))
    store.save(record)
    store.sync_up(record.job_id)
    proc = subprocess.Popen([sys.executable, "-m", "tao_skill_bank.supervise", store.location, record.job_id],
                            start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL,
                            stderr=open(store.job_dir(record.job_id) / "supervisor.err", "w"),
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


def cancel_job(store: JobStore, job_id: str, reason: str = CANCELLED) -> JobRecord:
    """Stop a job; it ends as `reason` (cancelled, or pruned for an AutoML trial)."""
    record = store.get(job_id)
    if record.status in FINAL:
        return record
    atomic.write_text(store.job_dir(job_id) / STOP_REASON, reason)
    if record.supervisor_pid is None:  # not launched yet: nothing to stop
        record.status, record.finished_at = reason, time.time()
        store.save(record)
        return record
    try:
        os.kill(record.supervisor_pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    return wait(store, job_id, timeout=60)
