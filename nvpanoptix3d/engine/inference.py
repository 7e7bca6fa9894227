"""The inference action: every RGB image of inference.images_dir (a folder or an images.tar.gz) ->
3D volume, meshes, objects JSON and previews under results_dir."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .. import fileio
from ..config import ExperimentConfig, SpecError
from ..data import check_frustum_mask
from ..model.network import get_grid
from ..model.postprocess import panoptic_2d, panoptic_3d
from .outputs import write_outputs
from .predictor import device_for, load_for_action
from .status import StatusWriter

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def list_images(images_dir: str, results_dir: Path) -> list[Path]:
    src = Path(images_dir)
    if not images_dir or not src.exists():
        raise SpecError(f"inference.images_dir: {images_dir or '(empty)'} not found; give a folder of RGB images "
                        "or an images.tar.gz")
    if src.is_file():
        if not tarfile.is_tarfile(src):
            raise SpecError(f"inference.images_dir: {images_dir} is a file but not a tar archive")
        target = results_dir / "inputs" / "images"
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(src) as tar:
            tar.extractall(target, filter="data")
        src = target
    images = sorted(p for p in src.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not images:
        raise SpecError(f"inference.images_dir: no .png / .jpg images in {images_dir}")
    return images


@torch.no_grad()
def run_inference(cfg: ExperimentConfig) -> dict:
    results = Path(cfg.results_dir)
    status = StatusWriter(results)
    if cfg.dataset.enable_3d:
        check_frustum_mask(cfg.dataset)
    images = list_images(cfg.inference.images_dir, results)
    module = load_for_action(cfg, cfg.inference.checkpoint, "inference.checkpoint")
    device = device_for(cfg)
    module.to(device)
    mcfg = module.cfg
    grid = get_grid(mcfg)
    width, height = mcfg.dataset.target_size
    status.write("start", action="inference", images=len(images), mode=cfg.inference.mode)
    out_dir = results / "predictions"
    manifest = []
    for path in tqdm(images, desc="inference", unit="image"):
        rgb = fileio.load_rgb(path)
        factor = mcfg.dataset.downsample_factor
        rgb = np.array(rgb[::factor, ::factor])  # a writable copy
        if rgb.shape[:2] != (height, width):
            raise SpecError(f"inference.images_dir: {path.name} is {rgb.shape[1]}x{rgb.shape[0]} after "
                            f"downsample_factor {factor}; the model expects {width}x{height} (dataset.target_size)")
        image = torch.from_numpy(rgb).permute(2, 0, 1).float()[None].to(device) / 255.0
        out = module.model(image)
        pan2d = panoptic_2d(out.out2d, 0, mcfg, (height, width))
        pan3d = panoptic_3d(out.out2d, out.out3d, 0, mcfg, cfg.inference.mode) if out.out3d is not None else None
        name = path.stem
        written = write_outputs(out_dir, name, rgb, pan2d, pan3d, grid, cfg.inference.save_mesh,
                                cfg.inference.save_previews)
        manifest.append({"image": path.name, **written,
                         "occupied_voxels": int(len(pan3d.index)) if pan3d is not None else 0})
    fileio.write_bytes(out_dir / "manifest.json", (json.dumps(manifest, indent=1) + "\n").encode())
    status.write("done", action="inference", images=len(images))
    return {"images": len(images), "outputs": str(out_dir)}
