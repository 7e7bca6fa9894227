"""Detached supervisor of one job: runs its backend, streams logs, records the outcome.

    python -m tao_skill_bank.supervise STORE JOB_ID

SIGTERM (cancel_job) stops the engine process or container and records the job as cancelled (or as the reason
cancel_job left in the job's folder: pruned). An engine stopped by a signal from elsewhere (docker stop, a
scheduler's preemption, the OOM killer) never reads as done.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

from .backends import get_backend
from .jobs import (CANCELLED, DONE, FAILED, FINAL, PENDING, RUNNING, STOP_REASON, JobStore, last_error_line,
                   read_status)


def main(store_root: str, job_id: str) -> int:
    store = JobStore(store_root)
    record = store.get(job_id)
    if record.status != PENDING:  # cancelled before we started
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    record.status, record.started_at, record.supervisor_pid = RUNNING, time.time(), os.getpid()
    store.save(record)
    backend = get_backend(record.backend, **record.backend_options)
    try:
        with open(store.log_path(job_id), "ab", buffering=0) as log:
            exit_code = backend.run(record, store, log, stop)
        record.exit_code = exit_code
        record.status, record.error = outcome(exit_code, stop.is_set(), store, job_id)
    except Exception as exc:  # noqa: BLE001 - any backend failure must end in a consistent record
        record.status, record.error = FAILED, f"{type(exc).__name__}: {exc}"
    kpis = [e["kpi"] for e in read_status(store.results_dir(job_id)) if isinstance(e.get("kpi"), (int, float))]
    record.kpi = max(kpis) if kpis else None
    record.finished_at = time.time()
    # the files first (the report included), the final record last: whoever sees the job finished (here or
    # through S3) finds its results
    try:
        from .report import write_report
        write_report(store, job_id, record)
    except Exception as exc:  # noqa: BLE001 - the report is a view; the record is what counts
        print(f"report not written: {type(exc).__name__}: {exc}", file=sys.stderr)
    try:
        store.sync_up(job_id)
    except Exception as exc:  # noqa: BLE001 - the record must still be written
        record.error = (record.error or "") + f"; mirroring the results failed: {type(exc).__name__}: {exc}"
    _save_final(store, record)
    return 0


def outcome(exit_code: int, stopped: bool, store: JobStore, job_id: str) -> tuple[str, str | None]:
    """The job's final status and error from the engine's exit code (128 + N or -N: signal N)."""
    reason_file = store.job_dir(job_id) / STOP_REASON
    reason = reason_file.read_text().strip() if reason_file.is_file() else CANCELLED
    last = last_error_line(store.log_path(job_id))
    if exit_code == 0 and not stopped:
        return DONE, None
    signum = -exit_code if exit_code < 0 else exit_code - 128 if exit_code > 128 else None
    if stopped:
        return (reason if reason in FINAL else CANCELLED), None
    if signum in (signal.SIGTERM, signal.SIGINT):
        return CANCELLED, f"engine stopped by {signal.Signals(signum).name} (a docker stop, a scheduler's " \
                          "preemption or a kill); resume with --job-id"
    if signum == signal.SIGKILL:
        return FAILED, "engine killed by SIGKILL (out of memory, or a hard stop)" + (f"; {last}" if last else "")
    return FAILED, f"engine exited with code {exit_code}: {last or 'no error line'}; see {store.log_path(job_id)}"


def _save_final(store: JobStore, record) -> None:
    """The final record, retried once: a full disk may have just freed the engine's partial checkpoint."""
    for attempt in range(3):
        try:
            store.save(record)
            return
        except OSError:
            if attempt == 2:
                raise
            time.sleep(1.0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
