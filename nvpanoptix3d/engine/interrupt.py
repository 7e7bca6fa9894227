"""SIGTERM / SIGINT end an action as cancelled, never as success; SIGUSR1 (Slurm's warning before a time limit or
preemption) ends it as requeued: the train action saves a checkpoint and asks Slurm to run the job again.

Outside training a signal interrupts at once. Inside Lightning's fit it is deferred to the end of the current
batch (an optimiser step is never cut in half): the train callback sees `received()`, saves a checkpoint and
raises JobInterrupted. The engine then exits 128 + the signal's number, as a shell reports a killed process.
"""
from __future__ import annotations

import contextlib
import os
import signal


class JobInterrupted(BaseException):
    """Not an Exception: `except Exception` clauses must not swallow a cancel."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_state = {"pid": None, "received": None, "defer": False}


def install() -> None:
    _state.update(pid=os.getpid(), received=None, defer=False)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(sig, _handler)


def _handler(signum, _frame) -> None:
    if os.getpid() != _state["pid"]:  # a forked data-loader worker: the main process ends it
        return
    _state["received"] = signum
    if not _state["defer"]:
        raise JobInterrupted(signum)


def requeue_requested() -> bool:
    return _state["received"] == signal.SIGUSR1


def request_requeue() -> bool:
    """Ask Slurm to run this job again (after a checkpoint was saved); False outside Slurm or if refused."""
    import os
    import subprocess
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return False
    return subprocess.run(["scontrol", "requeue", job], capture_output=True).returncode == 0


def received() -> int | None:
    """The signal received so far, if any."""
    return _state["received"]


@contextlib.contextmanager
def deferred():
    """Signals only set the flag inside this block; a signal already received is raised on entry."""
    if _state["received"]:
        raise JobInterrupted(_state["received"])
    _state["defer"] = True
    try:
        yield
    finally:
        _state["defer"] = False
