"""One engine per results dir: an exclusive lock that names its holder.

The lock is an flock on `<results_dir>/.engine.lock`, so the kernel frees it when its holder dies however it
dies; the file's text (pid, host, start time) names the holder for the error a second engine gets, and the
holder before a takeover for the record.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from ..config import SpecError

LOCK_NAME = ".engine.lock"


class JobLock:
    def __init__(self, results_dir: str | Path):
        self.path = Path(results_dir) / LOCK_NAME
        self.fd: int | None = None
        self.took_over: dict | None = None   # the previous holder, when it died holding the lock

    def acquire(self) -> "JobLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = holder_of(self.path) or {}
            os.close(fd)
            raise SpecError(f"results_dir {self.path.parent}: an engine already runs this job (pid "
                            f"{holder.get('pid', '?')} on {holder.get('host', '?')}); cancel it or wait for it, "
                            "then relaunch") from None
        previous = holder_of(self.path)
        if previous and previous.get("pid"):
            self.took_over = previous
            print(f"[lock] took over {self.path} from pid {previous['pid']} on {previous.get('host')}, "
                  "which is no longer running")
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": round(time.time(), 3)})
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        os.ftruncate(self.fd, 0)  # an empty file: released cleanly, nothing to take over
        os.close(self.fd)
        self.fd = None


RANK_VARIABLES = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK")


def is_first_process() -> bool:
    """Only the first of a distributed job's processes takes the lock (the others are its own children or
    tasks, started with a rank in the environment)."""
    return all(os.environ.get(name, "0") == "0" for name in RANK_VARIABLES)


def holder_of(path: str | Path) -> dict | None:
    """The pid / host written by the lock's last holder (None when released cleanly or unreadable)."""
    try:
        text = Path(path).read_text()
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None

