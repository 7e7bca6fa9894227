"""Pictures of the synthetic data for the docs: per frame RGB | depth | 2D semantic | 2D instance | the 3D
ground truth seen from above (every occupied voxel of the frustum, also what the camera does not see).

    python scripts/render_docs_frames.py docs/synthetic_frames.png [--frames 4] [--seed 2029]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nvpanoptix3d import fileio  # noqa: E402
from nvpanoptix3d.engine.outputs import _top_down, instance_colors  # noqa: E402
from nvpanoptix3d.geometry import front3d_grid  # noqa: E402
from nvpanoptix3d.labels import COLORS, NUM_CLASSES  # noqa: E402
from nvpanoptix3d.model.postprocess import Panoptic3D  # noqa: E402
from nvpanoptix3d.synth.generate import generate_frames  # noqa: E402
from nvpanoptix3d.synth.voxelize import FrustumVoxelizer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--seed", type=int, default=2029)
    a = p.parse_args()
    palette = np.array(COLORS, np.uint8)
    rows = []
    for f in generate_frames(a.seed, [(i, 0) for i in range(a.frames)], FrustumVoxelizer(front3d_grid())):
        rgb = f.image.rgb.numpy()
        depth = (np.clip(f.image.depth.numpy() / 6.0, 0, 1) * 255).astype(np.uint8)[..., None].repeat(3, -1)
        semantic = palette[f.image.semantic.numpy().clip(0, NUM_CLASSES - 1)]
        instance = instance_colors(f.image.instance.numpy().reshape(-1)).reshape(rgb.shape)
        occupied = f.truth.semantic > 0
        truth = Panoptic3D(f.truth.index[occupied], f.truth.semantic[occupied], f.truth.instance[occupied],
                           torch.ones(int(occupied.sum())), {}, f.truth.dims)
        rows.append(np.concatenate([rgb, depth, semantic, instance, _top_down(truth, rgb.shape[:2], palette)], 1))
    # half size keeps the picture small in the repo
    image = np.concatenate(rows, 0)[::2, ::2]
    fileio.save_png(a.out, np.ascontiguousarray(image))
    print(f"wrote {a.out} ({image.shape[1]} x {image.shape[0]})")


if __name__ == "__main__":
    main()
