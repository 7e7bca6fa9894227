"""The train action: Lightning fit with status events, periodic checkpoints and staged initialisation."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.plugins.environments import SLURMEnvironment

from ..config import ExperimentConfig, SpecError
from ..data.loader import make_loader
from . import interrupt
from .callbacks import StatusCallback
from .checkpoint import checkpoint_config, load_state_dict, require_loaded
from .module import PanopticModule
from .resume import intact_checkpoint, requeued_checkpoint
from .status import StatusWriter


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
