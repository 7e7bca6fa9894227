from __future__ import annotations

import threading
from typing import BinaryIO, Protocol


class Backend(Protocol):
    def check(self) -> None:
        """Raise SkillBankError when the backend cannot run jobs (before a job is created)."""

    def run(self, record, store, log: BinaryIO, stop: threading.Event) -> int:
        """Run record.command to completion (or until stop is set); return its exit code."""

    def stop_orphan(self, record, store) -> str | None:
        """Stop what still runs of a job whose supervisor died; say what was stopped (None: nothing ran)."""
