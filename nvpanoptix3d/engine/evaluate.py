"""The evaluate action: 2D PQ / depth and 3D PRQ / RSQ / RRQ, mIoU and occupancy IoU on a split; or, on posed
walk-throughs with scene ground truth, each reconstructed into one scene and scored against its true surfaces."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..config import ExperimentConfig, SpecError
from ..data import collate, get_dataset
from ..fileio import write_bytes
from ..inputs.posed import PosedFolder, read_posed_folder
from ..metrics.scene import SceneScore, in_frusta, score_scene, visible_truth
from .inference import inference_model, read_depth, run_scene
from .predictor import device_for, load_for_action
from .status import StatusWriter

SCENE_TRUTH = "scene_truth.npz"   # points, semantic, instance of the true surfaces, world metres (synth multiview)


def walkthroughs(root: str) -> list[Path]:
    """The walk-throughs under evaluate.scenes_dir: the folder itself when it has scene ground truth, else its
    sub-folders that have it."""
    if not root or not Path(root).is_dir():
        return []
    if (Path(root) / SCENE_TRUTH).is_file():
        return [Path(root)]
    return sorted(p for p in Path(root).iterdir() if (p / SCENE_TRUTH).is_file())


def score_walkthrough(folder: PosedFolder, scene_npz: Path, depth_for=read_depth) -> SceneScore:
    """A fused scene against the walk-through's truth, cut to the frames' frusta; the frames' own depth (their
    sensor, or `depth_for`) decides which true surfaces were seen, all of them when the folder has no depth."""
    volume, truth = np.load(scene_npz), np.load(folder.root / SCENE_TRUTH)
    views = []
    for frame in folder.frames:
        camera = frame.depth_camera or frame.camera
        depth = depth_for(frame) if frame.depth is not None else np.zeros((camera.height, camera.width), np.float32)
        views.append((frame.camera_to_world, depth, camera.fx, camera.fy, camera.cx, camera.cy))
    inside = in_frusta(truth["points"], views)
    seen = visible_truth(truth["points"][inside], views) if folder.has_depth else None
    return score_scene(volume["coords"], volume["semantic"], volume["instance"], float(volume["voxel_size"]),
                       truth["points"][inside], truth["semantic"][inside], truth["instance"][inside], seen)


def run_scene_evaluation(cfg: ExperimentConfig, scenes: list[Path], status: StatusWriter) -> dict:
    """Each walk-through through the posed-folder inference (its scene outputs under scenes/<name>), scored; the
    means over the walk-throughs, kpi = scene PRQ."""
    results = Path(cfg.results_dir)
    status.write("start", action="evaluate", scenes=len(scenes), depth_source=cfg.dataset.depth_source)
    inference = dataclasses.replace(cfg.inference, checkpoint=cfg.evaluate.checkpoint, save_mesh=False,
                                    save_previews=False)
    model = inference_model(dataclasses.replace(cfg, inference=inference))   # loaded once for every walk-through
    rows = []
    for scene_dir in scenes:
        folder = read_posed_folder(scene_dir)
        one = dataclasses.replace(cfg, results_dir=str(results / "scenes" / scene_dir.name),
                                  inference=dataclasses.replace(inference, images_dir=str(scene_dir)))
        summary = run_scene(one, folder, StatusWriter(one.results_dir), model)
        score = score_walkthrough(folder, Path(one.results_dir) / "predictions" / "scene" / "scene.npz")
        rows.append({"scene": scene_dir.name, "frames": summary["frames"], "depth_source": summary["depth_source"],
                     **score.as_dict()})
        status.write("scene", **rows[-1])
    numeric = [k for k, v in rows[0].items() if isinstance(v, float)]
    metrics = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in numeric}
    metrics = {**metrics, "kpi": metrics["prq"], "scenes": rows}
    write_bytes(results / "metrics.json", (json.dumps(metrics, indent=1) + "\n").encode())
    status.write("done", action="evaluate", **{k: v for k, v in metrics.items() if not isinstance(v, list)})
    for key in ("kpi", "fscore", "prq", "rsq", "rrq", "ids_per_object", "accuracy_m", "completeness_m"):
        print(f"{key:>14}: {metrics[key]:.4f}")
    return metrics


@torch.no_grad()
def run_evaluate(cfg: ExperimentConfig) -> dict:
    status = StatusWriter(cfg.results_dir)
    scenes = walkthroughs(cfg.evaluate.scenes_dir)
    if scenes:
        return run_scene_evaluation(cfg, scenes, status)
    split = cfg.evaluate.split
    if cfg.dataset.name != "synthetic" and not getattr(cfg.dataset, split).json_path:
        where = cfg.evaluate.scenes_dir or "the evaluation root"
        raise SpecError(f"evaluate: {where} holds neither walk-throughs (posed folders with {SCENE_TRUTH}) nor a "
                        f"split (dataset.{split}.json_path, meta/{split}.json); give --eval-dataset one of them")
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
