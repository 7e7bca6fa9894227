"""status.json: one JSON object per line (epoch, losses, KPIs, timings) that runners and AutoML read."""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path


class StatusWriter:
    def __init__(self, results_dir: str | Path, enabled: bool = True):
        self.path = Path(results_dir) / "status.json"
        self.enabled = enabled
        self.start = time.time()

    def warn(self, message: str) -> None:
        """A warning on the log and in the status, where the runner's result lists it."""
        print(f"[warning] {message}")
        self.write("warning", message=message)

    def write(self, event: str, **fields) -> None:
        if not self.enabled:
            return
        record = {"event": event, "time": round(time.time(), 3), "elapsed_s": round(time.time() - self.start, 3)}
        record.update({k: _plain(v) for k, v in fields.items()})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line)  # one write of one line: readers never see half a record
        finally:
            os.close(fd)


def _plain(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
