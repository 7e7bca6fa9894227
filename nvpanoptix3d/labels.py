"""The 3D-FRONT label set used by Dahnert et al. and NVPanoptix3D (0 = void / free space)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

THING_CLASSES = ("cabinet", "bed", "chair", "sofa", "table", "desk", "dresser", "lamp", "other furniture")
STUFF_CLASSES = ("wall", "floor", "ceiling")
NAMES = ("void",) + THING_CLASSES + STUFF_CLASSES
WALL, FLOOR, CEILING = 10, 11, 12
NUM_CLASSES = len(NAMES)  # 13
IGNORE = 255
COLORS = [(0, 0, 0), (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
          (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207), (174, 199, 232), (152, 223, 138),
          (199, 199, 199)]


def is_thing(label: int) -> bool:
    return 1 <= label <= len(THING_CLASSES)


@dataclass(frozen=True)
class Category:
    id: int
    trainId: int
    name: str
    color: tuple
    isthing: bool


def default_categories() -> list[Category]:
    return [Category(i, i, n, COLORS[i], is_thing(i)) for i, n in enumerate(NAMES)]


def write_colormap(path: Path) -> None:
    cats = [{"id": c.id, "trainId": c.trainId, "name": c.name, "color": list(c.color), "isthing": int(c.isthing)}
            for c in default_categories()]
    path.write_text(json.dumps(cats, indent=1) + "\n")


def read_colormap(path: str | Path) -> list[Category]:
    try:
        rows = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"dataset.label_map {path}: not found; point it at meta/colormap.json") from None
    return [Category(int(r["id"]), int(r.get("trainId", r["id"])), r["name"], tuple(r["color"]), bool(r["isthing"]))
            for r in rows]
