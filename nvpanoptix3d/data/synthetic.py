"""Synthetic frames generated on the fly (training reads them faster than they could be stored)."""
from __future__ import annotations

from torch.utils.data import Dataset

from ..config import DatasetConfig
from ..geometry import front3d_grid
from ..synth.generate import SynthFrame, generate_frames
from ..synth.voxelize import FrustumVoxelizer
from .sample import FrameSample

SPLIT_SEED_OFFSET = {"train": 0, "val": 1, "test": 2}


class SyntheticDataset(Dataset):
    def __init__(self, cfg: DatasetConfig, split_name: str, train: bool = False):
        syn = cfg.synthetic
        self.seed = syn.seed + SPLIT_SEED_OFFSET[split_name]
        self.scenes = syn.train_scenes if split_name == "train" else syn.eval_scenes
        self.frames = syn.frames_per_scene
        self.enable_3d = cfg.enable_3d
        self.device = syn.render_device
        self._voxelizer = None  # built lazily in each worker

    def __len__(self) -> int:
        return self.scenes * self.frames

    def __getitem__(self, index: int) -> FrameSample:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[FrameSample]:
        """A whole batch in one call (the data loader's fetcher uses this when it exists): a GPU renders a
        batch of frames in the kernel launches of one."""
        if self._voxelizer is None:
            self._voxelizer = FrustumVoxelizer(front3d_grid(), device=self.device)
        jobs = [divmod(i, self.frames) for i in indices]
        # 8 frames per call already reach 320 frames/s on an H100; larger calls only raise each worker's memory
        return [self._sample(f) for at in range(0, len(jobs), self.FRAMES_PER_CALL)
                for f in generate_frames(self.seed, jobs[at:at + self.FRAMES_PER_CALL], self._voxelizer,
                                           with_3d=self.enable_3d)]

    FRAMES_PER_CALL = 8

    def _sample(self, f: SynthFrame) -> FrameSample:
        img = f.image
        sample = FrameSample(f"{f.scene_id}/{f.image_id}", img.rgb.permute(2, 0, 1).float().cpu() / 255.0,
                             img.depth.cpu().clone(), img.semantic.cpu(), img.instance.cpu())
        sample.depth[(sample.depth < 0.4) | (sample.depth > 6.0)] = 0.0
        if self.enable_3d:
            occupied = f.truth.semantic > 0
            sample.occupied = f.truth.index[occupied].cpu()
            sample.semantic3d, sample.instance3d = f.truth.semantic[occupied].cpu(), f.truth.instance[occupied].cpu()
        return sample
