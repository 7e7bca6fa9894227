"""Detached supervisor of one job: runs its backend, streams logs, records the outcome.

    python -m tao_skill_bank.supervise STORE JOB_ID

SIGTERM (cancel_job) stops the engine process or container and records the job as cancelled.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

from .backends import get_backend
from .jobs import CANCELLED, DONE, FAILED, PENDING, RUNNING, JobStore, read_status


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
        if stop.is_set():
            record.status = CANCELLED
        elif exit_code == 0:
            record.status = DONE
        else:
            record.status, record.error = FAILED, f"engine exited with code {exit_code}; see {store.log_path(job_id)}"
    except Exception as exc:  # noqa: BLE001 - any backend failure must end in a consistent record
        record.status, record.error = FAILED, f"{type(exc).__name__}: {exc}"
    kpis = [e["kpi"] for e in read_status(store.results_dir(job_id)) if isinstance(e.get("kpi"), (int, float))]
    record.kpi = max(kpis) if kpis else None
    record.finished_at = time.time()
    # the files first, the final record last: whoever sees the job finished (here or through S3) finds its results
    store.sync_up(job_id)
    store.save(record)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
