"""The evaluate action: 2D PQ / depth and 3D PRQ / RSQ / RRQ, mIoU and occupancy IoU on a split."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm import tqdm

from ..config import ExperimentConfig
from ..data import collate, get_dataset
from ..fileio import write_bytes
from .predictor import device_for, load_for_action
from .status import StatusWriter


@torch.no_grad()
def run_evaluate(cfg: ExperimentConfig) -> dict:
    status = StatusWriter(cfg.results_dir)
    module = load_for_action(cfg, cfg.evaluate.checkpoint, "evaluate.checkpoint")
    device = device_for(cfg)
    module.to(device)
    dataset = get_dataset(module.cfg.dataset, cfg.evaluate.split)
    count = len(dataset) if cfg.evaluate.max_frames < 0 else min(len(dataset), cfg.evaluate.max_frames)
    status.write("start", action="evaluate", split=cfg.evaluate.split, frames=count)
    module.on_validation_epoch_start()
    batch_size = getattr(cfg.dataset, cfg.evaluate.split).batch_size
    for start in tqdm(range(0, count, batch_size), desc="evaluate", unit="batch"):
        indices = list(range(start, min(count, start + batch_size)))
        samples = dataset.__getitems__(indices) if hasattr(dataset, "__getitems__") else [dataset[i] for i in indices]
        batch = collate(samples).to(device)
        module.validation_step(batch, start)
    module.on_validation_epoch_end()
    metrics = module.last_metrics
    write_bytes(Path(cfg.results_dir) / "metrics.json", (json.dumps(metrics, indent=1) + "\n").encode())
    status.write("done", action="evaluate", **{k: v for k, v in metrics.items() if not isinstance(v, dict)})
    for key in ("kpi", "prq", "rsq", "rrq", "prq_things", "prq_stuff", "pq", "depth_abs_rel", "depth_rmse",
                "semantic_miou", "occupancy_iou"):
        if key in metrics:
            print(f"{key:>14}: {metrics[key]:.4f}")
    return metrics
