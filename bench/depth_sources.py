"""Depth maps of held-out walk-throughs against the true depth, per depth source, on photometrically degraded
frames (what real cameras do: exposure, white balance, noise, blur, JPEG).

    python bench/depth_sources.py --scenes 2 --frames 16 --refs 4

Sources, each at the model's 320 x 240 camera: `mono` (the depth head, the depth it lifts with), `multiview`
(the plane sweep's confident pixels only), `combined` (what the engine lifts for a posed folder without sensor
depth: confident multi-view pixels, the rest filled by the depth head fitted to them), and `combined` split
into its confident and filled pixels. Columns: share of the true-depth pixels covered, AbsRel, RMSE (m),
delta < 1.25, share within 5 cm and 10 cm. Walk-throughs use seeds 7100 + i, never used in training.
Targets (combined): AbsRel <= 0.04, >= 75% of pixels within 5 cm.
"""
from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nvpanoptix3d.cli import apply_overrides  # noqa: E402
from nvpanoptix3d.config import ExperimentConfig, from_dict  # noqa: E402
from nvpanoptix3d.depth.multiview import plane_sweep  # noqa: E402
from nvpanoptix3d.engine.inference import inference_model, read_depth  # noqa: E402
from nvpanoptix3d.inputs.camera_fit import fit_depth, fit_rgb  # noqa: E402
from nvpanoptix3d.inputs.images import read_photo  # noqa: E402

from engine_common import WEIGHTS, walkthrough_parser, walkthroughs  # noqa: E402  (bench/ is on sys.path)

COLUMNS = ("coverage", "absrel", "rmse", "delta125", "within5cm", "within10cm")


def degrade(path: Path, rng: np.random.Generator) -> None:
    """One frame as a real camera might give it: exposure x0.6-1.4, white balance x0.85-1.15 per channel,
    sensor noise (sigma 2%), a blur of up to 1 px, JPEG at quality 60-90; written over the frame."""
    rgb = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255
    rgb = rgb * rng.uniform(0.6, 1.4) * rng.uniform(0.85, 1.15, 3)
    rgb = np.clip(rgb + rng.normal(0, 0.02, rgb.shape), 0, 1)
    image = Image.fromarray((rgb * 255).round().astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(0, 1)))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(rng.integers(60, 91)))
    Image.open(buffer).save(path)                              # same name and format: the folder reads it as before


def at_model_size(depth: torch.Tensor, k) -> np.ndarray:
    """The network's lifted depth (1 x h x w) at the model camera's size, as the inference action reads it."""
    return F.interpolate(depth[:, None].float(), size=(k.height, k.width), mode="nearest")[0, 0].cpu().numpy()


def scores(depth: np.ndarray, truth: np.ndarray, where: np.ndarray) -> dict:
    valid = truth > 0
    used = valid & where & (depth > 0)
    if not used.any():
        return dict.fromkeys(COLUMNS, float("nan")) | {"coverage": 0.0}
    d, t = depth[used], truth[used]
    ratio = np.maximum(d / t, t / d)
    return {"coverage": used.sum() / max(valid.sum(), 1), "absrel": float(np.mean(np.abs(d - t) / t)),
            "rmse": float(np.sqrt(np.mean((d - t) ** 2))), "delta125": float(np.mean(ratio < 1.25)),
            "within5cm": float(np.mean(np.abs(d - t) < 0.05)), "within10cm": float(np.mean(np.abs(d - t) < 0.10))}


@torch.no_grad()
def main() -> int:
    a = walkthrough_parser(2, __doc__.splitlines()[0]).parse_args()
    cfg = from_dict(ExperimentConfig, apply_overrides({}, [f"inference.checkpoint={WEIGHTS}"]))
    module, device, grid = inference_model(cfg)
    k = grid.intrinsics
    every = torch.ones(1, dtype=torch.bool)
    rows: dict[str, list[dict]] = {s: [] for s in ("mono", "multiview", "combined", "combined:confident",
                                                  "combined:filled")}
    with tempfile.TemporaryDirectory() as tmp:
        for i, folder, refs in walkthroughs(tmp, a):
            rng = np.random.default_rng(a.seed + i)
            for frame in folder.frames:
                degrade(frame.image, rng)
            images = [torch.from_numpy(fit_rgb(read_photo(f.image), f.camera, k)).permute(2, 0, 1)
                      for f in folder.frames]
            poses = [f.camera_to_world for f in folder.frames]
            for ref in refs:
                frame = folder.frames[ref]
                truth = fit_depth(read_depth(frame), frame.depth_camera or frame.camera, k)
                image = images[ref].float()[None].to(device) / 255
                mono = at_model_size(module.model(image).lifted_depth, k)
                sweep = plane_sweep(images, poses, ref, k, cfg.dataset.depth_min, cfg.dataset.depth_max,
                                    device=device)
                confident = sweep.depth.cpu().numpy() > 0
                combined = at_model_size(module.model(image, gt_depth=sweep.depth[None], use_given=every,
                                                      align_fill=True).lifted_depth, k)
                everywhere = np.ones_like(confident)
                rows["mono"].append(scores(mono, truth, everywhere))
                rows["multiview"].append(scores(sweep.depth.cpu().numpy(), truth, confident))
                rows["combined"].append(scores(combined, truth, everywhere))
                rows["combined:confident"].append(scores(combined, truth, confident))
                rows["combined:filled"].append(scores(combined, truth, ~confident))
    print(f"# {a.scenes} walk-throughs x {a.refs} reference frames of {a.frames}, degraded photos, {device.type}")
    print(f"{'source':<20}" + "".join(f"{c:>12}" for c in COLUMNS))
    for source, r in rows.items():
        print(f"{source:<20}" + "".join(f"{np.nanmean([x[c] for x in r]):>12.3f}" for c in COLUMNS))
    combined = {c: np.nanmean([x[c] for x in rows["combined"]]) for c in COLUMNS}
    print(f"targets (combined): absrel {combined['absrel']:.3f} <= 0.04 ratio {0.04 / combined['absrel']:.2f}; "
          f"within5cm {combined['within5cm']:.3f} >= 0.75 ratio {combined['within5cm'] / 0.75:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
