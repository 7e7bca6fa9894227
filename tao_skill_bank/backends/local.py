from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO


def _die_with_parent() -> None:
    """Linux: the engine gets SIGTERM when its supervisor dies, however it dies (kill -9 included)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class LocalBackend:
    """The engine as a subprocess of the supervisor, in its own process group so a cancel stops all of it, and
    tied to the supervisor's life so a supervisor killed outright does not leave it running."""

    def __init__(self, env: dict | None = None):
        self.env = env or {}

    def check(self) -> None:
        return None

    def stop_orphan(self, record, store) -> str | None:
        from ..jobs import ENGINE_LOCK
        pid = stop_orphan_engine(store.job_dir(record.job_id) / ENGINE_LOCK)
        return f"its engine (pid {pid})" if pid else None

    def run(self, record, store, log: BinaryIO, stop: threading.Event) -> int:
        proc = subprocess.Popen(record.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, **self.env},
                                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                                cwd=store.job_dir(record.job_id))
        while True:
            try:
                return proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                if stop.is_set():
                    os.killpg(proc.pid, signal.SIGTERM)
                    try:
                        return proc.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                        return proc.wait()


def stop_orphan_engine(lock_path: Path) -> int | None:
    """SIGTERM, then SIGKILL, to the process group of the engine the lock names, when it runs on this host."""
    from ..jobs import _alive
    try:
        holder = json.loads(lock_path.read_text() or "null")
    except (OSError, ValueError):
        return None
    if not holder or holder.get("host") != socket.gethostname() or not _alive(int(holder["pid"])):
        return None
    pid = int(holder["pid"])
    for sig, wait_s in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(os.getpgid(pid), sig)
        except (ProcessLookupError, PermissionError):
            return pid
        deadline = time.time() + wait_s
        while time.time() < deadline and _alive(pid):
            time.sleep(0.2)
        if not _alive(pid):
            break
    return pid
