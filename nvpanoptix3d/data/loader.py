"""Training and evaluation data loaders: a shuffle a resumed run repeats exactly, and evaluation shards that cover a
split once across DDP ranks."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Sampler

from ..config import ExperimentConfig
from . import collate, get_dataset


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
