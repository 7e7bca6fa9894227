"""Generate JSON schemas, spec templates and skill_info.yaml from an engine's typed configs and its skill markdown.

    python -m tao_skill_bank.schema_gen [--engine nvpanoptix3d] [--check]

The engine package provides `config` (ExperimentConfig of `param` leaves, ACTIONS, ACTION_SECTIONS, RULES,
MOVED_KEYS) and `skill_facts` (its skill folder, image, shipped weights, data format). --check exits 1 when a
committed file differs from what would be generated.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

import yaml

from .conditions import keys_of
from .skill import load_skill

REPO = Path(__file__).resolve().parent.parent
SCHEMA_VERSION = 1
_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}
_TAO_TYPES = {bool: "bool", int: "int", float: "float", str: "string", list: "list"}


def _default(f: dataclasses.Field):
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _leaf_schema(f: dataclasses.Field) -> dict:
    default = _default(f)
    meta = f.metadata
    node = {"type": _JSON_TYPES[type(default)], "title": f.name, "description": meta["description"],
            "default": default, "x_tao_type": _TAO_TYPES[type(default)],
            "automl_enabled": bool(meta.get("automl", False))}
    if isinstance(default, list):
        item = type(default[0]) if default else float
        node["items"] = {"type": "number" if item is float else _JSON_TYPES[item]}
    for key in ("minimum", "maximum"):
        if key in meta:
            node[key] = meta[key]
    if "options" in meta:
        node["enum"] = list(meta["options"])
        if "option_weights" in meta:
            node["option_weights"] = list(meta["option_weights"])
    for key in ("math_cond", "depends_on"):
        if key in meta:
            node[key] = meta[key]
    return node


def _object_schema(cls, prefix: str, only: tuple | None, collect: dict, searched: bool = True) -> dict:
    props = {}
    for f in dataclasses.fields(cls):
        if only is not None and f.name not in only:
            continue
        dotted = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(f.default_factory) and f.default is dataclasses.MISSING:   # a section
            props[f.name] = _object_schema(f.default_factory, dotted + ".", None, collect,
                                           searched and f.metadata.get("searched", True))
            props[f.name]["description"] = f.metadata["description"]
            continue
        props[f.name] = _leaf_schema(f)
        meta = f.metadata
        if meta.get("automl") and searched:
            collect["automl"].append(dotted)
        elif "minimum" in meta or "options" in meta:
            collect["disabled"].append(dotted)
        if meta.get("popular"):
            collect["popular"].append(dotted)
    return {"type": "object", "additionalProperties": False, "properties": props}


def _defaults(node: dict) -> dict:
    return {k: _defaults(v) if v.get("type") == "object" else v["default"] for k, v in node["properties"].items()}


def action_schema(engine_config: ModuleType, model: str, action: str) -> dict:
    collect = {"automl": [], "disabled": [], "popular": []}
    body = _object_schema(engine_config.ExperimentConfig, "", engine_config.ACTION_SECTIONS[action], collect)
    if action != "train":  # only training is searched
        collect["automl"], collect["disabled"] = [], []
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"{model} {action}",
        **body,
        "default": _defaults(body),
        "automl_default_parameters": collect["automl"],
        "automl_disabled_parameters": collect["disabled"],
        "popular": collect["popular"],
        "x_rules": [r for r in engine_config.RULES
                    if all(k.split(".")[0] in engine_config.ACTION_SECTIONS[action] for k in keys_of(r["require"]))],
        # keys an earlier version of the skill had, and where they went: a user's old spec gets one line
        "x_moved_keys": engine_config.MOVED_KEYS,
        "x_tao_schema": {"action": action, "model": model, "schema_version": SCHEMA_VERSION},
    }


def skill_info(facts: ModuleType, schemas: dict[str, dict]) -> dict:
    skill = load_skill(REPO / facts.SKILL_DIR)
    actions = {}
    for action, command in skill.actions.items():
        inputs = {}
        for r in skill.requirements_for(action):
            kind = "folder" if r.relative_path == "data" or r.relative_path.endswith(".tar.gz") else "file"
            inputs[r.spec_key] = {"type": kind, **({"optional": True} if r.optional else {})}
        for p in skill.spec_params_for(action):
            if p.function in ("parent_model", "parent_model_or_ptm", "ptm", "resume_model"):
                inputs[p.spec_key] = {"type": "file", "optional": action == "train"}
        outputs = {"results_dir": {"type": "folder"}}
        outputs.update({p.spec_key: {"type": "file"} for p in skill.spec_params_for(action)
                        if p.function.startswith("create_onnx")})
        actions[action] = {"command": command, "config_format": "yaml", "mode": "config",
                           "inputs": inputs, "outputs": outputs}
    data_sources = {}
    for r in skill.data_requirements:
        entry = {"source": r.source, "path": r.relative_path}
        if r.relative_path.endswith(".tar.gz"):
            entry["runtime"] = "extracted_folder"
        data_sources.setdefault(r.action, {})[r.spec_key] = entry
    spec_params = {}
    for p in skill.spec_params:
        spec_params.setdefault(p.action, {})[p.spec_key] = p.function
    return {
        "name": skill.name, "network_arch": facts.MODEL, "automl_enabled": True,
        "container_image": facts.CONTAINER_IMAGE, "pretrained_model": facts.PRETRAINED_MODEL,
        "data_format": facts.DATA_FORMAT, "gpu_spec_key": facts.GPU_SPEC_KEY,
        "monitoring_metric": facts.MONITORING_METRIC,
        "actions": actions, "data_sources": data_sources, "spec_params": spec_params,
        "spec_shorthand_keys": skill.shorthand_keys,
        "spec_templates": {a: f"spec_template_{a}.yaml" for a in schemas},
        "description": " ".join(skill.front_matter["description"].split()),
    }


def generate(engine: str = "nvpanoptix3d") -> dict[Path, str]:
    """Every generated file, path -> text."""
    engine_config = importlib.import_module(f"{engine}.config")
    facts = importlib.import_module(f"{engine}.skill_facts")
    files: dict[Path, str] = {}
    schemas = {a: action_schema(engine_config, facts.MODEL, a) for a in engine_config.ACTIONS}
    for action, schema in schemas.items():
        files[REPO / "schemas" / f"{action}.schema.json"] = json.dumps(schema, indent=2) + "\n"
        files[REPO / "references" / f"spec_template_{action}.yaml"] = yaml.safe_dump(schema["default"],
                                                                                      sort_keys=False)
    manifest = {"model": facts.MODEL, "schema_version": SCHEMA_VERSION,
                "actions": {a: f"{a}.schema.json" for a in schemas}}
    files[REPO / "schemas" / "manifest.json"] = json.dumps(manifest, indent=2) + "\n"
    files[REPO / "references" / "skill_info.yaml"] = yaml.safe_dump(skill_info(facts, schemas), sort_keys=False)
    return files


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="nvpanoptix3d", help="the engine package (config, skill_facts)")
    parser.add_argument("--check", action="store_true", help="fail if committed files are stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in generate(args.engine).items():
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(str(path.relative_to(REPO)))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(REPO)}")
    if stale:
        print(f"stale generated files: {', '.join(stale)}; run `make schemas` and commit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
