"""The inference action. A folder of photos (or an images.tar.gz): per image a 3D volume, meshes, objects JSON
and previews under results_dir/predictions. A posed folder (nerfstudio, COLMAP, RGB-D export): the same per
frame, lifted with the frame's sensor depth where it has one (dataset.depth_source), and every frame fused into
one scene under predictions/scene."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from .. import fileio
from ..config import DataError, ExperimentConfig
from ..data import check_frustum_mask
from ..depth.multiview import plane_sweep
from ..fusion.outputs import write_live_scene, write_scene
from ..fusion.scene import FrameObservation, SceneFusion
from ..inputs.camera_fit import fit_depth, fit_rgb
from ..inputs.images import fit_to_model, list_images, read_photo
from ..inputs.posed import PosedFolder, detect_format, read_posed_folder
from ..model.network import get_grid
from ..model.postprocess import panoptic_2d, panoptic_3d
from ..viewer.page import PageCamera
from .outputs import write_outputs
from .predictor import device_for, load_for_action
from .status import StatusWriter


def inference_model(cfg: ExperimentConfig):
    """The checkpoint's model on the action's device, and its frustum grid."""
    module = load_for_action(cfg, cfg.inference.checkpoint, "inference.checkpoint")
    device = device_for(cfg)
    module.to(device)
    return module, device, get_grid(module.cfg)


@torch.no_grad()
def run_inference(cfg: ExperimentConfig) -> dict:
    results = Path(cfg.results_dir)
    status = StatusWriter(results)
    if cfg.dataset.enable_3d and cfg.dataset.frustum_mask_path:  # optional: the model's grid has its own
        check_frustum_mask(cfg.dataset)
    source = Path(cfg.inference.images_dir)
    if source.is_dir() and detect_format(source):
        return run_scene(cfg, read_posed_folder(source), status)
    images, skipped = list_images(cfg.inference.images_dir, results / "inputs" / "images")
    if skipped:
        status.warn(f"skipped {len(skipped)} file(s) that are not .png / .jpg images, e.g. {skipped[0]}")
    module, device, grid = inference_model(cfg)
    mcfg = module.cfg
    width, height = mcfg.dataset.target_size
    status.write("start", action="inference", images=len(images), mode=cfg.inference.mode)
    out_dir = results / "predictions"
    manifest = []
    for path in tqdm(images, desc="inference", unit="image"):
        fitted = fit_to_model(read_photo(path), (width, height), grid.intrinsics.fx, cfg.inference.horizontal_fov_deg,
                              mcfg.dataset.downsample)
        rgb = fitted.rgb
        image = torch.from_numpy(rgb).permute(2, 0, 1).float()[None].to(device) / 255.0
        out = module.model(image)
        pan2d = panoptic_2d(out.out2d, 0, mcfg, (height, width))
        pan3d = panoptic_3d(out.out2d, out.out3d, 0, mcfg, cfg.inference.mode) if out.out3d is not None else None
        name = path.stem
        written = write_outputs(out_dir, name, rgb, pan2d, pan3d, grid, cfg.inference.save_mesh,
                                cfg.inference.save_previews, cfg.inference.save_previews)
        manifest.append({"image": path.name, **written, "input_size": list(fitted.original_size),
                         "scale_to_model": round(fitted.scale, 6), "offset_in_model": list(fitted.offset),
                         "occupied_voxels": int(len(pan3d.index)) if pan3d is not None else 0})
    fileio.write_bytes(out_dir / "manifest.json", (json.dumps(manifest, indent=1) + "\n").encode())
    status.write("done", action="inference", images=len(images))
    return {"images": len(images), "outputs": str(out_dir)}


def choose_depth_source(requested: str, folder: PosedFolder, status: StatusWriter) -> str:
    """sensor, multiview or predicted, from dataset.depth_source and what the folder carries. auto: the sensor's
    depth where the folder has it, else multi-view stereo (geometry from the poses, which holds on real photos
    where the depth head does not), else (one frame) the prediction."""
    if requested == "sensor" and not folder.has_depth:
        raise DataError(f"dataset.depth_source: sensor, but {folder.root} ({folder.format}) has no depth files; "
                        "use auto, multiview or predicted")
    if requested == "auto":
        requested = "sensor" if folder.has_depth else "multiview"
    if requested == "multiview" and len(folder.frames) < 2:
        status.warn("dataset.depth_source multiview needs two frames or more: lifting the predicted depth")
        return "predicted"
    return requested


def read_depth(frame) -> np.ndarray:
    raw = fileio.load_exr(frame.depth) if frame.depth.suffix == ".exr" else fileio.load_uint16(frame.depth)
    depth = raw.astype(np.float32) * (1.0 if frame.depth.suffix == ".exr" else frame.depth_scale)
    return np.where(np.isfinite(depth), depth, 0.0)


LIVE_EVERY = 25   # frames between the live view's snapshots of the scene fused so far


@torch.no_grad()
def run_scene(cfg: ExperimentConfig, folder: PosedFolder, status: StatusWriter, model=None) -> dict:
    """model: inference_model(cfg) when the caller has it already (several walk-throughs, one model)."""
    module, device, grid = model or inference_model(cfg)
    mcfg = module.cfg
    k = grid.intrinsics
    source = choose_depth_source(cfg.dataset.depth_source, folder, status)
    status.write("start", action="inference", images=len(folder.frames), posed_folder=folder.format,
                 depth_source=source, mode=cfg.inference.mode)
    out_dir = Path(cfg.results_dir) / "predictions"
    fusion = SceneFusion(voxel_size=mcfg.model.frustum3d.voxel_size,
                         depth_range=(mcfg.dataset.depth_min, mcfg.dataset.depth_max))
    manifest, fusion_s, started = [], 0.0, time.perf_counter()

    def in_model_camera(frame) -> torch.Tensor:
        return torch.from_numpy(fit_rgb(read_photo(frame.image), frame.camera, k)).permute(2, 0, 1)

    # multi-view matching reads every frame, so all of them are held in the model's camera (uint8: a 2 000-frame
    # walk-through holds 460 MB); otherwise each frame is fitted as it comes
    frames_rgb = None
    if source == "multiview":
        frames_rgb = [in_model_camera(f) for f in tqdm(folder.frames, desc="fit", unit="frame")]
    poses = [f.camera_to_world for f in folder.frames]
    cameras = [PageCamera(f.camera_to_world, k) for f in folder.frames]
    for index, frame in enumerate(tqdm(folder.frames, desc="frames", unit="frame")):
        chw = frames_rgb[index] if frames_rgb is not None else in_model_camera(frame)
        rgb = chw.permute(1, 2, 0).numpy()
        image = chw.float()[None].to(device) / 255.0
        sensor = None
        if source == "sensor" and frame.depth is not None:
            depth = fit_depth(read_depth(frame), frame.depth_camera or frame.camera, k)
            sensor = torch.from_numpy(depth)[None].to(device)
        elif source == "multiview":
            sensor = plane_sweep(frames_rgb, poses, index, k, mcfg.dataset.depth_min, mcfg.dataset.depth_max,
                                 device=device).depth[None]
        every = torch.ones(1, dtype=torch.bool)
        align = source == "multiview"
        out = module.model(image, gt_depth=sensor, use_given=every if sensor is not None else None, align_fill=align)
        pan2d = panoptic_2d(out.out2d, 0, mcfg, (k.height, k.width))
        pan3d = panoptic_3d(out.out2d, out.out3d, 0, mcfg, cfg.inference.mode)
        written = write_outputs(out_dir, frame.name, rgb, pan2d, pan3d, grid, cfg.inference.save_mesh,
                                cfg.inference.save_previews)
        lifted = F.interpolate(out.lifted_depth[:, None].float(), size=(k.height, k.width), mode="nearest")[0, 0]
        observation = FrameObservation(frame.camera_to_world, grid.grid_to_camera(pan3d.index).cpu().numpy(),
                                       pan3d.semantic.cpu().numpy(), pan3d.instance.cpu().numpy(),
                                       pan3d.probability.float().cpu().numpy(), lifted.cpu().numpy(),
                                       k.fx, k.fy, k.cx, k.cy, frame.name)
        tick = time.perf_counter()
        fusion.integrate(observation)
        fusion_s += time.perf_counter() - tick
        if (index + 1) % LIVE_EVERY == 0 and index + 1 < len(folder.frames):   # what `nvpanoptix3d view` shows
            write_live_scene(out_dir / "scene", fusion.result(), cameras[:index + 1])
        manifest.append({"image": frame.image.name, "frame": frame.name, **written, "depth_source": source,
                         "occupied_voxels": int(len(pan3d.index))})
    tick = time.perf_counter()
    scene = fusion.result()
    fusion_s += time.perf_counter() - tick
    total_s = time.perf_counter() - started
    scene_files = write_scene(out_dir / "scene", scene, cameras)
    fileio.write_bytes(out_dir / "manifest.json", (json.dumps(manifest, indent=1) + "\n").encode())
    summary = {"frames": len(folder.frames), "posed_folder": folder.format, "depth_source": source,
               "scene_voxels": int(len(scene.coords)), "scene_objects": len(scene.objects),
               "seconds": round(total_s, 3), "fusion_seconds": round(fusion_s, 3),
               "scene": {k2: f"scene/{v}" for k2, v in scene_files.items()}}
    fileio.write_bytes(out_dir / "scene" / "summary.json", (json.dumps(summary, indent=1) + "\n").encode())
    status.write("done", action="inference", images=len(folder.frames), scene_voxels=summary["scene_voxels"],
                 scene_objects=summary["scene_objects"])
    return summary
