"""Posed walk-throughs reconstructed into scenes and scored against each scene's true surfaces.

    python bench/scene_fusion.py --scenes 20 --frames 100 --depth sensor      # targets: F-score@5cm 0.90,
    python bench/scene_fusion.py --scenes 20 --frames 100 --depth noisy       # scene PRQ 0.55, <= 1.2 IDs per
    python bench/scene_fusion.py --scenes 20 --frames 100 --depth predicted   # object; noisy within 0.05
    python bench/scene_fusion.py --scenes 20 --frames 100 --depth multiview   # RGB and poses only

Each walk-through is a synthetic room (seed 7000 + i: never used in training) in nerfstudio's layout, run by
the inference action as a user's posed folder would be, with the shipped weights. `noisy` degrades the sensor
depth as a structured-light camera does: noise of 1.2 mm + 1.9 mm x (z - 0.4 m)^2 (Nguyen et al. 2012), 1 mm
quantisation, and dropouts at depth edges. Prints one line per scene, then means with ratios to the targets,
fusion speed beyond the network and the peak RSS.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nvpanoptix3d import fileio  # noqa: E402
from nvpanoptix3d.cli import apply_overrides  # noqa: E402
from nvpanoptix3d.config import ExperimentConfig, from_dict  # noqa: E402
from nvpanoptix3d.engine.evaluate import score_walkthrough  # noqa: E402
from nvpanoptix3d.engine.inference import run_inference  # noqa: E402
from nvpanoptix3d.inputs.posed import read_posed_folder  # noqa: E402
from nvpanoptix3d.synth.multiview import write_multiview  # noqa: E402

from engine_common import WEIGHTS  # noqa: E402  (bench/ is on sys.path)

TARGETS = {"fscore": 0.90, "prq": 0.55}


def add_sensor_noise(scene_dir: Path, rng: np.random.Generator) -> None:
    for path in sorted((scene_dir / "depth").glob("*.png")):
        z = fileio.load_uint16(path).astype(np.float64) / 1000
        valid = z > 0
        noisy = z + rng.normal(size=z.shape) * (0.0012 + 0.0019 * (z - 0.4) ** 2)
        edge = np.zeros_like(valid)
        jump = np.abs(np.diff(z, axis=1)) > 0.1
        edge[:, 1:] |= jump
        edge[:, :-1] |= jump
        drop = edge & (rng.random(z.shape) < 0.7)
        noisy = np.where(valid & ~drop, noisy, 0.0)
        fileio.save_png(path, np.clip(np.round(noisy * 1000), 0, 65535).astype(np.uint16))


def run(scene_dir: Path, results: Path, depth: str) -> dict:
    spec = apply_overrides({}, [f"results_dir={results}", f"inference.images_dir={scene_dir}",
                                f"inference.checkpoint={WEIGHTS}", "inference.save_mesh=false",
                                "inference.save_previews=false",
                                f"dataset.depth_source={'sensor' if depth == 'noisy' else depth}"])
    summary = run_inference(from_dict(ExperimentConfig, spec))
    # the true depth (before any noise) decides what was seen
    score = score_walkthrough(read_posed_folder(scene_dir), results / "predictions" / "scene" / "scene.npz",
                              lambda frame: fileio.load_uint16(scene_dir / "depth_true" / frame.depth.name)
                              .astype(np.float32) / 1000)
    network_s = summary["seconds"] - summary["fusion_seconds"]
    return {**score.as_dict(), "frames": summary["frames"], "fusion_fps": summary["frames"] / summary["fusion_seconds"],
            "network_fps": summary["frames"] / max(network_s, 1e-9)}


def summarise(rows: list[dict], depth: str, frames: int, peak_gb: float) -> str:
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    return (f"mean depth={depth} scenes={len(rows)} frames={frames} fscore={mean['fscore']:.4f} "
            f"target={TARGETS['fscore']} ratio={mean['fscore'] / TARGETS['fscore']:.2f} prq={mean['prq']:.4f} "
            f"target={TARGETS['prq']} ratio={mean['prq'] / TARGETS['prq']:.2f} rsq={mean['rsq']:.4f} "
            f"rrq={mean['rrq']:.4f} ids_per_object={mean['ids_per_object']:.3f} (target <= 1.2) "
            f"accuracy_m={mean['accuracy_m']:.4f} completeness_m={mean['completeness_m']:.4f} "
            f"fusion_fps={mean['fusion_fps']:.1f} network_fps={mean['network_fps']:.2f} peak_rss_gb={peak_gb:.2f}")


def row_line(i: int, depth: str, row: dict) -> str:
    return f"scene={i} depth={depth} " + " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                                  for k, v in row.items())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", type=int, default=2)
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--depth", choices=["sensor", "noisy", "multiview", "predicted"], default="sensor")
    p.add_argument("--seed", type=int, default=7000)
    p.add_argument("--json", help="also write the rows and means to this file")
    p.add_argument("--merge", nargs="+", metavar="JSON",
                   help="print the rows and means of runs written with --json (scenes run as separate processes)")
    a = p.parse_args()
    if a.merge:
        runs = [json.loads(Path(f).read_text()) for f in a.merge]
        rows = [r for run in runs for r in run["rows"]]
        for i, row in enumerate(rows):
            print(row_line(i, runs[0]["depth"], row))
        peak_gb = max(run["peak_rss_gb"] for run in runs)
        print(summarise(rows, runs[0]["depth"], runs[0]["frames"], peak_gb))
        if a.json:
            Path(a.json).write_text(json.dumps({"depth": runs[0]["depth"], "frames": runs[0]["frames"], "rows": rows,
                                                "peak_rss_gb": peak_gb}, indent=1) + "\n")
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.scenes):
            root = write_multiview(Path(tmp) / f"walk{i}", 1, a.frames, a.seed + i)
            scene_dir = next(root.iterdir())
            (scene_dir / "depth_true").mkdir()
            for png in (scene_dir / "depth").glob("*.png"):
                (scene_dir / "depth_true" / png.name).write_bytes(png.read_bytes())
            if a.depth == "noisy":
                add_sensor_noise(scene_dir, np.random.default_rng(a.seed + i))
            row = run(scene_dir, Path(tmp) / f"out{i}", a.depth)
            rows.append(row)
            print(row_line(i, a.depth, row), flush=True)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(summarise(rows, a.depth, a.frames, peak_gb))
    if a.json:
        Path(a.json).write_text(json.dumps({"depth": a.depth, "frames": a.frames, "rows": rows,
                                            "peak_rss_gb": peak_gb}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
