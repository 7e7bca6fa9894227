"""What a training run records as it goes: status.json events, periodic and interrupt checkpoints (each written
atomically), and the shuffle order of a resumed run."""
from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ..config import ExperimentConfig
from ..data.loader import EpochSeededSampler
from . import interrupt
from .status import StatusWriter


class StatusCallback(L.Callback):
    """status.json events and checkpoints every checkpoint_interval epochs, tagged with the latest KPI."""

    def __init__(self, cfg: ExperimentConfig, status: StatusWriter):
        self.cfg, self.status = cfg, status
        self.ckpt_dir = Path(cfg.results_dir) / "checkpoints"
        self.epoch_start = time.time()
        self.images = 0
        self.saved_step = -1

    def on_train_epoch_start(self, trainer, module):
        self.epoch_start, self.images = time.time(), 0
        sampler = getattr(trainer.train_dataloader, "sampler", None)
        if isinstance(sampler, EpochSeededSampler):
            sampler.set_epoch(trainer.current_epoch)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.images += batch.images.shape[0] * trainer.world_size
        # every process stops after the same batch, or the others would wait for it in the next all-reduce
        if trainer.strategy.reduce_boolean_decision(interrupt.received() is not None, all=False):
            raise interrupt.JobInterrupted(interrupt.received() or signal.SIGTERM)

    def on_exception(self, trainer, module, exception):
        """A cancel (SIGTERM, SIGINT, Lightning's own SIGTERM exit) saves where training stood first."""
        if isinstance(exception, (interrupt.JobInterrupted, SIGTERMException, KeyboardInterrupt)):
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            save_atomically(trainer, self.ckpt_dir / "last.ckpt")
            self.status.write("checkpoint", epoch=trainer.current_epoch, step=trainer.global_step,
                              path="checkpoints/last.ckpt", interrupted=True)
            if interrupt.requeue_requested() and trainer.is_global_zero:
                self.status.write("requeue", asked=interrupt.request_requeue())

    def on_train_epoch_end(self, trainer, module):
        epoch = trainer.current_epoch + 1
        seconds = time.time() - self.epoch_start
        losses = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("loss")}
        kpis = module.last_metrics if epoch % self.cfg.train.validation_interval == 0 else {}
        scalar_kpis = {k: v for k, v in kpis.items() if not isinstance(v, dict)}
        self.status.write("epoch", epoch=epoch, step=trainer.global_step, max_epochs=self.cfg.train.num_epochs,
                          losses=losses, epoch_time_s=round(seconds, 3),
                          images_per_s=round(self.images / max(seconds, 1e-6), 3), **scalar_kpis)
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        last = epoch == self.cfg.train.num_epochs or trainer.should_stop
        if epoch % self.cfg.train.checkpoint_interval == 0 or last:
            path = self.ckpt_dir / f"epoch_{epoch:03d}.ckpt"
            save_atomically(trainer, path)
            self.status.write("checkpoint", epoch=epoch, path=str(path.relative_to(self.cfg.results_dir)),
                              kpi=scalar_kpis.get("kpi"))
        save_atomically(trainer, self.ckpt_dir / "last.ckpt")
        self.saved_step = trainer.global_step

    def on_train_end(self, trainer, module):
        """A run cut by max_time / max_steps mid-epoch still leaves a resumable checkpoint."""
        if trainer.global_step != self.saved_step:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            save_atomically(trainer, self.ckpt_dir / "last.ckpt")


def save_atomically(trainer, path: Path) -> None:
    """The new file replaces the old one only when complete; on a full disk the old one stays and the partial
    file goes."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            kept = f"; {path.name} from before is intact" if path.is_file() else ""
            raise OSError(errno.ENOSPC, f"no space left on the device writing {path}{kept}; free space under "
                                        f"{path.parent} and resume") from None
        raise
