"""Lightning wrapper: optimisation, validation metrics and staged initialisation around the model."""
from __future__ import annotations

import dataclasses

import lightning as L
import torch
import torch.distributed as dist

from ..config import ExperimentConfig
from ..data.sample import Batch
from ..model.losses import compute_losses, occupancy_grids
from ..model.network import PanopticReconstruction
from ..model.postprocess import panoptic_2d, panoptic_3d
from ..metrics.metric_set import MetricSet


class PanopticModule(L.LightningModule):
    def __init__(self, cfg: ExperimentConfig, max_voxels: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.model = PanopticReconstruction(cfg, max_voxels)
        if cfg.train.freeze_2d:
            # no gradients into the 2D stage: its forward records no graph and its weights stay bit for bit
            for part in self.model.stage_modules("2d"):
                part.requires_grad_(False)
        self.metrics: MetricSet | None = None
        self.last_metrics: dict = {}

    def on_train_batch_start(self, batch, batch_idx):
        """A frozen 2D stage runs in eval mode, batch-norm statistics included (Lightning sets each submodule's
        mode itself around validation, so a train() override would not hold)."""
        if self.cfg.train.freeze_2d:
            for part in self.model.stage_modules("2d"):
                part.eval()

    def forward(self, images: torch.Tensor):
        return self.model(images)

    def training_step(self, batch: Batch, batch_idx: int):
        g64 = g128 = None
        if self.cfg.dataset.mirror > 0:
            which = torch.rand(batch.images.shape[0], generator=self._step_generator(1)) < self.cfg.dataset.mirror
            grid = self.model.stage3d.grid if self.model.stage3d is not None else None
            batch = batch.mirrored(which, *((grid.mirror_x_index, grid.dims[0]) if grid else ()))
        if self.model.stage3d is not None and batch.has_3d_truth:
            g64, g128 = occupancy_grids(batch, tuple(self.cfg.model.frustum3d.grid_dimensions))
        ratio = self.cfg.model.frustum3d.gt_depth_ratio
        given = None
        if ratio > 0:
            given = torch.rand(batch.images.shape[0], generator=self._step_generator(0)) < ratio
        out = self.model(batch.images, g64, g128, batch.depths if ratio > 0 else None, given)
        stage3d = self.model.stage3d
        losses = compute_losses(out, batch, self.cfg, g64, g128, stage3d.label if stage3d is not None else None)
        total = sum(losses.values())
        bs = batch.images.shape[0]
        self.log("loss", total, prog_bar=True, batch_size=bs, sync_dist=False)
        for name, value in losses.items():
            if "_aux" not in name:
                self.log(f"loss_{name}", value, batch_size=bs)
        return total

    def _step_generator(self, stream: int) -> torch.Generator:
        """Random draws from (seed, step, stream), not the global generator: a resumed run draws what the
        straight run drew."""
        return torch.Generator().manual_seed(self.cfg.train.seed * 1_000_003 + self.global_step + stream * 2**40)

    def new_metrics(self) -> MetricSet:
        """Empty metrics for this data layout: Matterport counts the ceiling; PRQ's masks use the model's frustum."""
        kwargs = {"ignore_3d": set()} if self.cfg.dataset.name == "matterport" else {}
        if self.model.stage3d is not None:
            kwargs.update(frustum_mask=self.model.stage3d.mask256, pool_factor=self.cfg.dataset.downsample,
                          require_3d=True)
        return MetricSet(**kwargs)

    def on_validation_epoch_start(self):
        self.metrics = self.new_metrics()

    def validation_step(self, batch: Batch, batch_idx: int):
        if self.cfg.dataset.depth_source == "sensor" and batch.depths is not None:  # lift the data set's depth
            every = torch.ones(batch.images.shape[0], dtype=torch.bool)
            self.accumulate(batch, self.model(batch.images, gt_depth=batch.depths, use_given=every))
        else:
            self.accumulate(batch, self.model(batch.images))

    def accumulate(self, batch: Batch, out) -> None:
        """Adds one batch's predictions to the running metrics."""
        size = tuple(batch.images.shape[-2:])
        for i in range(batch.images.shape[0]):
            pan = panoptic_2d(out.out2d, i, self.cfg, size)
            if batch.has_2d_truth:
                gt_depth = batch.depths[i] if batch.depths is not None else torch.zeros(size)
                self.metrics.add_2d(batch.semantic2d[i], batch.instance2d[i], pan.semantic, pan.instance,
                                    gt_depth, pan.depth)
            if out.out3d is not None and batch.has_3d_truth:
                p3 = panoptic_3d(out.out2d, out.out3d, i, self.cfg)
                self.metrics.add_3d(batch.occupied[i], batch.semantic3d[i], batch.instance3d[i],
                                    p3.index, p3.semantic, p3.instance)

    def on_validation_epoch_end(self):
        if dist.is_available() and dist.is_initialized():
            state = self.metrics.state_tensor().to(self.device)
            dist.all_reduce(state)
            self.metrics.load_state_tensor(state.cpu())
        self.last_metrics = self.metrics.summary()
        if self._trainer is None:  # evaluate runs the same steps without a trainer
            return
        for key in ("kpi", "pq", "prq", "depth_abs_rel", "occupancy_iou", "semantic_miou"):
            if key in self.last_metrics:
                self.log(f"val_{key}", float(self.last_metrics[key]), sync_dist=False, rank_zero_only=True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """The architecture travels with the weights: a checkpoint rebuilds its own model."""
        checkpoint.setdefault("hyper_parameters", {})["model_config"] = dataclasses.asdict(self.cfg.model)

    def configure_optimizers(self):
        opt_cfg = self.cfg.train.optim
        trained = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        backbone = [p for n, p in trained if n.startswith("backbone.")]
        rest = [p for n, p in trained if not n.startswith("backbone.")]
        optimizer = torch.optim.AdamW([{"params": backbone, "lr": opt_cfg.lr * opt_cfg.backbone_multiplier},
                                       {"params": rest, "lr": opt_cfg.lr}], lr=opt_cfg.lr,
                                      weight_decay=opt_cfg.weight_decay)
        if opt_cfg.lr_scheduler == "MultiStep":
            sched = torch.optim.lr_scheduler.MultiStepLR(optimizer, opt_cfg.milestones, opt_cfg.gamma)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warm = opt_cfg.warmup_iters

        def warmup_poly(step: int) -> float:
            if step < warm:
                return (step + 1) / max(1, warm)
            return max(0.0, 1 - (step - warm) / max(1, total - warm)) ** 0.9

        sched = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_poly)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
