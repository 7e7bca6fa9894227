"""TAO's skill-folder layout both ways: a folder written here in that format dry-runs all four actions through
the runner, NVIDIA's own Mask2Former skill folder loads, and our skill exported in that layout reads back the
same."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import EXAMPLE, REPO, SKILL

from runners.tao_run_action import main as run_action
from tao_skill_bank.skill import load_skill
from tao_skill_bank.spec import resolve_spec
from tao_skill_bank.tao_layout import export_skill, json_schema

MASK2FORMER = REPO.parent / "shared" / "anchors" / "tao-skill-bank" / "skills" / "models" / "tao-train-mask2former"
ACTIONS = ("train", "evaluate", "inference", "export")


def _field(tao_type, default, **extra):
    return {"type": tao_type, "default": default, "title": "", "description": "", **extra}


def _tao_skill(root: Path) -> Path:
    """A skill folder the way the public TAO skill bank writes one: metadata.version, actions and their inputs in
    references/skill_info.yaml, TAO's type words, Infinity bounds, math_cond, popular as a dict."""
    folder = root / "tao-train-toy"
    (folder / "schemas").mkdir(parents=True)
    (folder / "references").mkdir()
    (folder / "evals").mkdir()
    (folder / "SKILL.md").write_text(
        "---\nname: tao-train-toy\ndescription: a toy segmenter\nlicense: Apache-2.0\ncompatibility: docker\n"
        "metadata:\n  version: \"0.3.0\"\n  author: someone\ntags:\n- segmentation\n---\n\n# Toy\n")
    info = {"name": "tao-train-toy", "automl_enabled": False, "actions": {}}
    for action in ACTIONS:
        inputs = {"dataset.images": {"type": "folder"}, f"{action}.checkpoint": {"type": "file",
                                                                                 "optional": action == "train"}}
        info["actions"][action] = {"command": f"toy {action} -e {{config_path}}", "config_format": "yaml",
                                   "inputs": inputs}
        schema = {"type": "object", "x_tao_schema": {"action": action}, "popular": {"train": {"lr": 0.1}},
                  "properties": {
                      "results_dir": _field("string", ""),
                      "dataset": {"type": "collection", "properties": {
                          "images": _field("string", ""),
                          "batch_size": _field("int", 8, minimum=1, maximum=float("inf"), math_cond="/ 8"),
                          "kind": _field("categorical", "coco", enum=["coco", "ade"])}},
                      action: {"type": "collection", "properties": {
                          "checkpoint": _field("string", ""),
                          "lr": _field("float", 0.1, minimum=0.0, maximum=float("inf"), math_cond="> 0.0",
                                       automl_enabled=True),
                          "flip": _field("bool", True, popular=True),
                          "sizes": _field("list", [1, 2]),
                          "odd_keyword": _field("int", 3, x_mystery=1)}},
                      "automl_disabled_parameters": ["dataset"]}}
        (folder / "schemas" / f"{action}.schema.json").write_text(json.dumps(schema))   # Infinity, as TAO's
        template = {"results_dir": "", "dataset": {"images": "", "batch_size": 8, "kind": "coco"},
                    action: {"checkpoint": "", "lr": 0.1, "flip": True, "sizes": [1, 2], "odd_keyword": 3}}
        (folder / "references" / f"spec_template_{action}.yaml").write_text(yaml.safe_dump(template))
    (folder / "references" / "skill_info.yaml").write_text(yaml.safe_dump(info))
    (folder / "schemas" / "manifest.json").write_text(json.dumps({"actions": {a: {} for a in ACTIONS}}))
    (folder / "evals" / "evals.json").write_text("[]")
    return folder


def _runner(capsys, *argv) -> tuple[int, dict | None, str]:
    code = run_action([*argv, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip() else None, captured.err


def test_tao_types_infinity_and_math_cond_become_json_schema():
    schema, unknown = json_schema({"type": "object", "properties": {"n": _field("int", 8, minimum=1,
                                   maximum=float("inf"), math_cond="/ 8"), "x": _field("float", 1.0,
                                   math_cond="> 0.0", x_mystery=2), "junk": ["a"]}})
    n, x = schema["properties"]["n"], schema["properties"]["x"]
    assert n["type"] == "integer" and n["multipleOf"] == 8 and "maximum" not in n and n["x_tao_type"] == "int"
    assert x["type"] == "number" and x["exclusiveMinimum"] == 0.0 and "junk" not in schema["properties"]
    assert unknown == ["properties.junk (at <root>)", "x_mystery (at x)"]


def test_a_tao_layout_skill_dry_runs_all_four_actions(capsys, tmp_path):
    folder = _tao_skill(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    for action in ACTIONS:
        argv = ["--skill", str(folder), "--action", action, "--dry-run", "--jobs-dir", str(tmp_path / "jobs"),
                "--override", f"dataset.images={images}", "--automl-policy", "off"]
        code, result, err = _runner(capsys, *argv)
        if action != "train":                                                   # its checkpoint is not optional
            assert code == 2 and f"spec key {action}.checkpoint: the {action} action reads this file" in err
            argv += ["--override", f"{action}.checkpoint={images}"]
            code, result, err = _runner(capsys, *argv)
        assert code == 0, err
        assert result["command"][-4:-1] == [action, "-e", result["command"][-2]]
        assert result["spec"]["dataset"]["images"] == str(images)
        assert any("x_mystery (at " in n for n in result["notes"])             # reported, not fatal
    code, result, err = _runner(capsys, "--skill", str(folder), "--action", "evaluate", "--dry-run",
                                "--jobs-dir", str(tmp_path / "jobs"), "--override", "dataset.batch_size=12",
                                "--override", f"dataset.images={images}", "--override", f"evaluate.checkpoint={images}")
    assert code == 2 and "dataset.batch_size" in result["error"] and "multiple of 8" in result["error"]


@pytest.mark.skipif(not MASK2FORMER.is_dir(), reason="the TAO anchor is not beside this checkout")
def test_nvidias_mask2former_skill_folder_loads_and_validates_its_templates():
    skill = load_skill(MASK2FORMER)
    assert skill.front_matter["version"] == "0.1.0" and set(ACTIONS) <= set(skill.actions)
    for action in ACTIONS:
        resolve_spec(skill, action, {})                    # TAO's types, Infinity and all: its templates are valid
    assert any("not one the SDK knows" in n for n in skill.notes)   # its download descriptor is reported


def test_our_skill_exported_in_the_tao_layout_reads_back_the_same(capsys, tmp_path):
    bundle = export_skill(SKILL, tmp_path)
    assert (bundle / "schemas" / "train.schema.json").is_file() and (bundle / "references").is_dir()
    assert (bundle / "evals" / "evals.json").is_file()
    front = yaml.safe_load((bundle / "SKILL.md").read_text().split("---")[1])
    assert "version" not in front and front["metadata"]["version"] and "schemas" not in front
    exported = json.loads((bundle / "schemas" / "train.schema.json").read_text())
    assert exported["properties"]["train"]["properties"]["num_epochs"]["type"] == "int"
    ours, theirs = load_skill(SKILL), load_skill(bundle)
    assert theirs.actions == ours.actions and theirs.data_requirements == ours.data_requirements
    for action in ACTIONS:
        assert resolve_spec(theirs, action, {}) == resolve_spec(ours, action, {})
        assert theirs.load_schema(action) == ours.load_schema(action)
    assert theirs.pretrained_model() == ours.pretrained_model()
    assert ours.notes == [] and theirs.notes == []          # every keyword of our schemas is one the SDK reads
    code, result, err = _runner(capsys, "--skill", str(bundle), "--action", "inference", "--dry-run",
                                "--inference-dataset", str(EXAMPLE), "--jobs-dir", str(tmp_path / "jobs"))
    assert code == 0, err
    assert result["spec"]["inference"]["checkpoint"] == ours.pretrained_model()
