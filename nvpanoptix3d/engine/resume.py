"""Which checkpoint a training run resumes from: the one the spec names, or the last one when a cluster runs the
job again, falling back to the newest intact one beside a truncated file."""
from __future__ import annotations

import os
from pathlib import Path

from ..config import ExperimentConfig, SpecError
from .checkpoint import TruncatedCheckpoint, read_checkpoint


RESUME_KEY = "train.resume_training_checkpoint_path"


AUTO_RESUME_ENV = "NVPANOPTIX3D_AUTO_RESUME"


def requeued_checkpoint(cfg: ExperimentConfig) -> str:
    """A job a cluster runs again (Slurm's requeue, a Kubernetes pod replaced after preemption) continues from its
    last checkpoint: Slurm says so with SLURM_RESTART_COUNT, the Kubernetes backend with NVPANOPTIX3D_AUTO_RESUME."""
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    last = Path(cfg.results_dir) / "checkpoints" / "last.ckpt"
    if (restarts > 0 or os.environ.get(AUTO_RESUME_ENV) == "1") and last.is_file():
        print(f"[resume] run again by the cluster: continuing from {last}")
        return str(last)
    return ""


def intact_checkpoint(path: str) -> str:
    """The checkpoint to resume from: the one named, or, when it is truncated (a kill or a full disk while it
    was written), the newest intact one beside it, said on the log (the start record names the one used). The
    named checkpoint refused as unsafe is an error, not a reason to fall back."""
    if not path:
        return path
    if not Path(path).is_file():
        raise SpecError(f"{RESUME_KEY}: {path} not found")
    try:
        read_checkpoint(path, RESUME_KEY)
        return path
    except TruncatedCheckpoint as exc:
        first_error = exc
    others = sorted((p for p in Path(path).parent.glob("*.ckpt") if p != Path(path)),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for other in others:
        try:
            read_checkpoint(other, RESUME_KEY)
        except SpecError:  # truncated too, or refused: not one to resume from
            continue
        print(f"[resume] {path} is truncated; resuming from {other}, the newest intact checkpoint beside it")
        return str(other)
    raise SpecError(f"{first_error}; no intact checkpoint beside it either")
