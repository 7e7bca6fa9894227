"""The inference action: every RGB image of inference.images_dir (a folder or an images.tar.gz) ->
3D volume, meshes, objects JSON and previews under results_dir."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm import tqdm

from .. import fileio
from ..config import ExperimentConfig
from ..data import check_frustum_mask
from ..inputs.images import fit_to_model, list_images, read_photo
from ..model.network import get_grid
from ..model.postprocess import panoptic_2d, panoptic_3d
from .outputs import write_outputs
from .predictor import device_for, load_for_action
from .status import StatusWriter

@torch.no_grad()
def run_inference(cfg: ExperimentConfig) -> dict:
    results = Path(cfg.results_dir)
    status = StatusWriter(results)
    if cfg.dataset.enable_3d and cfg.dataset.frustum_mask_path:  # optional: the model's grid has its own
        check_frustum_mask(cfg.dataset)
    images, skipped = list_images(cfg.inference.images_dir, results / "inputs" / "images")
    if skipped:
        message = f"skipped {len(skipped)} file(s) that are not .png / .jpg images, e.g. {skipped[0]}"
        print(f"[warning] {message}")
        status.write("warning", message=message)
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
        fitted = fit_to_model(read_photo(path), (width, height), grid.intrinsics.fx, cfg.inference.horizontal_fov_deg,
                              mcfg.dataset.downsample_factor)
        rgb = fitted.rgb
        image = torch.from_numpy(rgb).permute(2, 0, 1).float()[None].to(device) / 255.0
        out = module.model(image)
        pan2d = panoptic_2d(out.out2d, 0, mcfg, (height, width))
        pan3d = panoptic_3d(out.out2d, out.out3d, 0, mcfg, cfg.inference.mode) if out.out3d is not None else None
        name = path.stem
        written = write_outputs(out_dir, name, rgb, pan2d, pan3d, grid, cfg.inference.save_mesh,
                                cfg.inference.save_previews)
        manifest.append({"image": path.name, **written, "input_size": list(fitted.original_size),
                         "scale_to_model": round(fitted.scale, 6), "offset_in_model": list(fitted.offset),
                         "occupied_voxels": int(len(pan3d.index)) if pan3d is not None else 0})
    fileio.write_bytes(out_dir / "manifest.json", (json.dumps(manifest, indent=1) + "\n").encode())
    status.write("done", action="inference", images=len(images))
    return {"images": len(images), "outputs": str(out_dir)}
