"""How long a large scene page takes to open: an apartment-sized voxel scene written as a page and opened in
headless Chromium until it is drawn.

    python bench/scene_page.py

A 12 x 9 x 3 m room at 3 cm (walls, floor, 60 furniture boxes: about 940 000 voxels, what a long walk-through
fuses) with 200 camera frusta. Prints the page's size, the voxels drawn and the seconds from opening the file
to the first full drawing. Headless Chromium here draws with SwiftShader (software WebGL on the CPU); a browser
with a GPU draws faster.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nvpanoptix3d.geometry import Intrinsics  # noqa: E402
from nvpanoptix3d.viewer.page import PageCamera, write_scene_page  # noqa: E402


def apartment(rng: np.random.Generator, side=(400, 100, 300), boxes: int = 60):
    x, y, z = side
    grid = lambda *axes: np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)  # noqa: E731
    parts = [(grid(np.arange(x), [y - 1], np.arange(z)), 11, 0),
             (grid(np.arange(x), np.arange(y), [0, z - 1]), 10, 0),
             (grid([0, x - 1], np.arange(y), np.arange(z)), 10, 0)]
    for i in range(boxes):
        x0, z0 = rng.integers(10, x - 40), rng.integers(10, z - 40)
        w, d, h = rng.integers(10, 35, 3)
        parts.append((grid(np.arange(x0, x0 + w), np.arange(y - 1 - h, y - 1), np.arange(z0, z0 + d)),
                      int(rng.integers(1, 10)), i + 1))
    return (np.concatenate([p[0] for p in parts]), np.concatenate([np.full(len(p[0]), p[1]) for p in parts]),
            np.concatenate([np.full(len(p[0]), p[2]) for p in parts]))


def main() -> int:
    from playwright.sync_api import sync_playwright
    coords, semantic, instance = apartment(np.random.default_rng(0))
    cameras = [PageCamera(np.eye(4), Intrinsics(277.0, 277.0, 160.0, 120.0, 320, 240))] * 200
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scene.html"
        tick = time.perf_counter()
        write_scene_page(path, coords, 0.03, semantic, instance, cameras, "apartment")
        written = time.perf_counter() - tick
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=[
                "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"])
            page = browser.new_page(viewport={"width": 1100, "height": 700})
            tick = time.perf_counter()
            page.goto(path.as_uri())
            page.wait_for_selector("body[data-ready=true]", timeout=600_000)
            opened = time.perf_counter() - tick
            drawn = page.inner_text("#summary")
            browser.close()
        print(f"voxels={len(coords)} page_mb={path.stat().st_size / 1e6:.1f} write_s={written:.1f} "
              f"open_to_drawn_s={opened:.1f} ({drawn}; software WebGL)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
