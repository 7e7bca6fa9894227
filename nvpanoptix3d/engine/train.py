"""The train action: Lightning fit with status events, periodic checkpoints and staged initialisation."""
from __future__ import annotations

import dataclasses
import errno
import os
import signal
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader, Sampler

from ..config import ExperimentConfig, SpecError
from ..data import collate, get_dataset
from . import interrupt
from .checkpoint import TruncatedCheckpoint, checkpoint_config, load_state_dict, read_checkpoint, require_loaded
from .module import PanopticModule
from .status import StatusWriter


class EpochSeededSampler(Sampler):
    """Shuffles with (seed, epoch) so a resumed run sees exactly the order an uninterrupted one would."""

    def __init__(self, length: int, seed: int, rank: int = 0, world: int = 1):
        self.length, self.seed, self.rank, self.world, self.epoch = length, seed, rank, world, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        order = torch.randperm(self.length, generator=g).tolist()
        return iter(order[self.rank::self.world])

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world))


class ShardSampler(Sampler):
    """Evaluation under DDP: rank r takes frames r, r + world, ... so the ranks' metric sums cover the split once."""

    def __init__(self, length: int, rank: int = 0, world: int = 1):
        self.indices = range(rank, length, world)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


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
            _atomic_save(trainer, self.ckpt_dir / "last.ckpt")
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
            _atomic_save(trainer, path)
            self.status.write("checkpoint", epoch=epoch, path=str(path.relative_to(self.cfg.results_dir)),
                              kpi=scalar_kpis.get("kpi"))
        _atomic_save(trainer, self.ckpt_dir / "last.ckpt")
        self.saved_step = trainer.global_step

    def on_train_end(self, trainer, module):
        """A run cut by max_time / max_steps mid-epoch still leaves a resumable checkpoint."""
        if trainer.global_step != self.saved_step:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            _atomic_save(trainer, self.ckpt_dir / "last.ckpt")


def _atomic_save(trainer, path: Path) -> None:
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


# DDP over CPU processes (gloo): the distributed path (sharded data, all-reduced metrics, rank-0 records) is
# tested on machines without GPUs
CPU_PROCESSES_ENV = "NVPANOPTIX3D_CPU_PROCESSES"


def gpu_check(cfg: ExperimentConfig) -> str | None:
    """GPUs asked and none visible: an error, or with train.allow_cpu_fallback the warning to record."""
    if cfg.train.num_gpus == 0 or torch.cuda.is_available():
        return None
    message = (f"train.num_gpus={cfg.train.num_gpus} but no GPU is visible here "
               f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    if not cfg.train.allow_cpu_fallback:
        raise SpecError(f"{message}; set train.num_gpus=0 to train on the CPU, or train.allow_cpu_fallback=true")
    return message + "; training on the CPU (train.allow_cpu_fallback)"


def trainer_kwargs(cfg: ExperimentConfig) -> dict:
    t = cfg.train
    use_gpu = t.num_gpus > 0 and torch.cuda.is_available()
    precision = {"fp16": "16-mixed", "bf16": "bf16-mixed", "fp32": "32-true"}[t.precision] if use_gpu else "32-true"
    kwargs = {"accelerator": "gpu" if use_gpu else "cpu", "precision": precision, "num_nodes": t.num_nodes,
              # under Slurm the engine saves and requeues itself (interrupt.py); Lightning's own requeue would race it
              "plugins": [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else None,
              "logger": False, "enable_checkpointing": False, "deterministic": False,
              "gradient_clip_val": t.clip_grad_norm or None}
    if use_gpu:
        kwargs["devices"] = t.gpu_ids[:t.num_gpus] if len(t.gpu_ids) >= t.num_gpus else t.num_gpus
        if t.num_gpus > 1 or t.num_nodes > 1:
            from lightning.pytorch.strategies import DDPStrategy
            # the seed's rule: activation checkpointing needs find_unused_parameters=False
            kwargs["strategy"] = DDPStrategy(find_unused_parameters=not t.activation_checkpoint)
    elif int(os.environ.get(CPU_PROCESSES_ENV, "1")) > 1:
        from lightning.pytorch.strategies import DDPStrategy
        kwargs["devices"] = int(os.environ[CPU_PROCESSES_ENV])
        kwargs["strategy"] = DDPStrategy(process_group_backend="gloo",
                                         find_unused_parameters=not t.activation_checkpoint)
    else:
        kwargs["devices"] = 1
    return kwargs


def _worker_context(cfg: ExperimentConfig, workers: int) -> str | None:
    gpu_workers = cfg.dataset.name == "synthetic" and cfg.dataset.synthetic.render_device == "cuda"
    return "spawn" if gpu_workers and workers > 0 else None


def make_loader(cfg: ExperimentConfig, split: str, train: bool, rank: int = 0, world: int = 1) -> DataLoader:
    dataset = get_dataset(cfg.dataset, split, train)
    split_cfg = getattr(cfg.dataset, split)
    sampler = EpochSeededSampler(len(dataset), cfg.train.seed, rank, world) if train else \
        ShardSampler(len(dataset), rank, world)
    return DataLoader(dataset, batch_size=split_cfg.batch_size, sampler=sampler, shuffle=False,
                      num_workers=split_cfg.num_workers, collate_fn=collate, drop_last=False,
                      persistent_workers=split_cfg.num_workers > 0, pin_memory=torch.cuda.is_available(),
                      # CUDA cannot be re-initialised in a forked worker
                      multiprocessing_context=_worker_context(cfg, split_cfg.num_workers))


def stage_init(module: PanopticModule, cfg: ExperimentConfig, status: StatusWriter) -> None:
    for key, stage in (("train.checkpoint_2d", "2d"), ("train.checkpoint_3d", "3d")):
        path = getattr(cfg.train, key.split(".")[1])
        if not path or (stage == "3d" and module.model.stage3d is None):
            continue
        result = module.model.load_stage(load_state_dict(path, key), stage)
        prefixes = module.model.STAGE_PREFIXES[stage]
        expected = sum(1 for name in module.model.state_dict() if name.startswith(prefixes))
        require_loaded(len(result.loaded), expected, path, key)
        status.write("init", stage=stage, path=path, loaded=len(result.loaded), skipped=len(result.skipped))
        print(f"[init] {key}: {len(result.loaded)} tensors loaded, {len(result.skipped)} skipped (shape or name "
              "mismatch)")


BACKBONE_KEYS = ("backbone_type", "embed_dim", "depth")


def backbone_of_checkpoint_2d(cfg: ExperimentConfig) -> ExperimentConfig:
    """Fine-tuning from a 2D checkpoint of another backbone would load none of its backbone tensors: train
    with the backbone the checkpoint was trained with (its stored model section), as evaluate and inference
    do. Heads, loss weights and everything AutoML searches stay the spec's."""
    path = cfg.train.checkpoint_2d
    stored = checkpoint_config(path) if path and Path(path).is_file() else None
    if not stored or all(stored.get(k) == getattr(cfg.model, k) for k in BACKBONE_KEYS):
        return cfg
    theirs = {k: stored[k] for k in BACKBONE_KEYS if k in stored}
    print(f"[init] train.checkpoint_2d: {path} was trained with {theirs}; training with that backbone")
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **theirs))


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


def run_train(cfg: ExperimentConfig) -> dict:
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    fallback = gpu_check(cfg)
    kwargs = trainer_kwargs(cfg)
    resume = intact_checkpoint(cfg.train.resume_training_checkpoint_path or requeued_checkpoint(cfg)) or None
    cfg = backbone_of_checkpoint_2d(cfg)  # also on resume: the run was built that way
    status = StatusWriter(cfg.results_dir, enabled=False)
    callback = StatusCallback(cfg, status)
    max_time = {"minutes": cfg.train.max_time_minutes} if cfg.train.max_time_minutes > 0 else None
    trainer = L.Trainer(max_epochs=cfg.train.num_epochs, max_steps=cfg.train.optim.max_steps, max_time=max_time,
                        check_val_every_n_epoch=cfg.train.validation_interval, callbacks=[callback],
                        enable_progress_bar=True, num_sanity_val_steps=0, use_distributed_sampler=False,
                        **kwargs)
    status.enabled = trainer.is_global_zero  # one record per event, whatever the number of processes
    module = PanopticModule(cfg)
    if not resume:
        stage_init(module, cfg, status)
    world = trainer.world_size
    train_loader = make_loader(cfg, "train", True, trainer.global_rank, world)
    val_loader = make_loader(cfg, "val", False, trainer.global_rank, world)
    if len(val_loader.dataset) < world:
        # a process with an empty shard skips validation and the others wait for it in the metric all-reduce
        raise SpecError(f"dataset.val: {len(val_loader.dataset)} frame(s) for {world} training processes; each "
                        f"process validates its own share: give the val split at least {world} frames")
    if fallback:
        status.warn(fallback)
    status.write("start", action="train", accelerator=kwargs["accelerator"], precision=kwargs["precision"],
                 devices=world, frames=len(train_loader.dataset), resume=resume)
    with interrupt.deferred():
        trainer.fit(module, train_loader, val_loader, ckpt_path=resume, weights_only=True)
    result = dict(module.last_metrics)
    if torch.cuda.is_available() and kwargs["accelerator"] == "gpu":
        result["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    status.write("done", action="train", steps=trainer.global_step,
                 **{k: v for k, v in result.items() if not isinstance(v, dict)})
    return result
