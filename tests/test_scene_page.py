"""The scene page: surface-only drawing, and the page as headless Chromium renders it (WebGL through
SwiftShader): the voxels drawn in the class colours, an object clicked in the list highlighted."""
from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import nvpanoptix3d.viewer
from nvpanoptix3d.geometry import Intrinsics
from nvpanoptix3d.labels import COLORS
from nvpanoptix3d.viewer.page import SCRIPT, PageCamera, coarsen, surface, write_scene_page


def test_only_the_surface_of_a_solid_block_is_drawn():
    block = np.stack(np.meshgrid(*[np.arange(5)] * 3, indexing="ij"), -1).reshape(-1, 3)
    assert surface(block).sum() == 125 - 27
    coarse, sem, inst = coarsen(block, np.zeros(125), np.zeros(125))
    assert len(coarse) == 27 and len(sem) == len(inst) == 27


def test_the_shipped_bundle_is_built_from_the_pinned_three_js():
    web = Path(nvpanoptix3d.viewer.__file__).parent / "web"
    pinned = json.loads((web / "package-lock.json").read_text())["packages"]["node_modules/three"]["version"]
    assert json.loads((web / "package.json").read_text())["devDependencies"]["three"] == pinned
    bundle = SCRIPT.read_text()
    assert f'"{pinned.split(".")[1]}"' in bundle              # three.js's REVISION, in the bundle we ship
    assert "Three.js Authors" in bundle and "SPDX-License-Identifier: MIT" in bundle   # its licence travels


def _box_room():
    """A 3 x 3 m room (walls, floor, ceiling at 5 cm) with a chair (id 1) and a table (id 2)."""
    g = np.stack(np.meshgrid(np.arange(60), np.arange(50), np.arange(60), indexing="ij"), -1).reshape(-1, 3)
    x, y, z = g.T
    wall = (x == 0) | (x == 59) | (z == 0) | (z == 59)
    floor, ceiling = y == 49, y == 0
    chair = (x >= 12) & (x < 24) & (z >= 30) & (z < 42) & (y >= 35)
    table = (x >= 34) & (x < 50) & (z >= 15) & (z < 35) & (y >= 30)
    keep = wall | floor | ceiling | chair | table
    semantic = np.select([chair, table, floor, ceiling], [3, 5, 11, 12], 10)[keep]
    instance = np.select([chair, table], [1, 2], 0)[keep]
    pose = np.eye(4)
    pose[:3, 3] = [1.5, 1.2, 0.4]
    return g[keep], semantic, instance, [PageCamera(pose, Intrinsics(100, 100, 80, 60, 160, 120))]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("REQUIRE_CHROMIUM"):
            pytest.fail("REQUIRE_CHROMIUM is set but chromium is not installed")
        pytest.skip("chromium not installed (CI installs it and sets REQUIRE_CHROMIUM=1)")
    return path


def _open(p, url: str, selector: str = "body[data-ready=true]"):
    """Headless Chromium (WebGL through SwiftShader) on url, waited until selector matches; fails at once with
    the page's script error if it throws. Returns (browser, page)."""
    browser = p.chromium.launch(executable_path=_chromium(), args=[
        "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"])
    page = browser.new_page(viewport={"width": 900, "height": 600})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.add_init_script("window.addEventListener('error', () => { window.__failed = true; })")
    page.goto(url)
    page.wait_for_function(f"document.querySelector({selector!r}) !== null || window.__failed === true",
                           timeout=60_000)
    assert errors == [], errors
    assert page.query_selector(selector) is not None
    return browser, page


def _share_near(shot: bytes, colour, degrees=6.0) -> float:
    """Share of the canvas's pixels whose hue is that colour's: shading scales a colour, so compare directions."""
    rgb = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"), np.float64)
    target = np.asarray(colour, np.float64)
    norm = np.linalg.norm(rgb, axis=-1, keepdims=True).clip(1e-6)
    cos = (rgb / norm) @ (target / np.linalg.norm(target))
    return float((cos > np.cos(np.radians(degrees))).mean())


@pytest.mark.slow
def test_the_scene_page_draws_the_classes_and_highlights_a_clicked_object(tmp_path):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    coords, semantic, instance, cameras = _box_room()
    page_path = write_scene_page(tmp_path / "scene.html", coords, 0.05, semantic, instance, cameras, "box <room>")
    html = page_path.read_text()
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html   # nothing fetched
    with sync_playwright() as p:
        browser, page = _open(p, page_path.as_uri())
        assert page.title() == "box <room>"
        assert page.locator("#objects li").all_inner_texts()[0].startswith("#1 chair")
        legend = page.locator("#legend li").all_inner_texts()
        assert "chair" in legend and "table" in legend and "ceiling" not in legend   # the ceiling is not drawn
        canvas = page.locator("#view")
        before = canvas.screenshot()
        chair, table = _share_near(before, COLORS[3]), _share_near(before, COLORS[5])
        assert chair > 0.002 and table > 0.002            # not a blank canvas: the objects in their class colours
        page.click("#objects li[data-id='1']")
        assert page.get_attribute("body", "data-selected") == "1"
        assert "selected" in page.get_attribute("#objects li[data-id='1']", "class")
        after = canvas.screenshot()
        assert _share_near(after, COLORS[3]) > 0.5 * chair     # the chair keeps its colour
        assert _share_near(after, COLORS[5]) < 0.2 * table     # the rest fades
        assert _share_near(after, (255, 0, 255), 3) > 0        # and the chair's box is drawn
        page.click("#mode")
        assert page.get_attribute("body", "data-mode") == "instance"
        browser.close()


@pytest.mark.slow
def test_the_live_view_follows_the_scene_a_job_rewrites(tmp_path):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    from nvpanoptix3d.viewer.page import scene_data, write_live
    from nvpanoptix3d.viewer.serve import LIVE, serve_in_thread
    coords, semantic, instance, cameras = _box_room()
    live = tmp_path / LIVE
    live.parent.mkdir(parents=True)
    chair_only = instance != 2
    write_live(live, scene_data(coords[chair_only], 0.05, semantic[chair_only], instance[chair_only], cameras),
               version=25, frames=25, done=False)
    httpd = serve_in_thread(tmp_path)
    try:
        with sync_playwright() as p:
            browser, page = _open(p, f"http://127.0.0.1:{httpd.server_address[1]}/", "body[data-version='25']")
            assert page.locator("#objects li").count() == 1
            assert page.get_attribute("body", "data-live") == "running"
            page.click("#objects li[data-id='1']")                       # a selection survives the redraw
            write_live(live, scene_data(coords, 0.05, semantic, instance, cameras), version=50, frames=50, done=True)
            page.wait_for_selector("body[data-version='50'][data-live='done']", timeout=60_000)
            assert page.locator("#objects li").count() == 2
            assert page.get_attribute("body", "data-selected") == "1"
            assert "50 frames" in page.inner_text("#summary")
            browser.close()
    finally:
        httpd.shutdown()
