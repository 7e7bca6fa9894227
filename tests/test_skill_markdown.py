"""The skill markdown is the source of truth: these tests keep it and the generated files true."""
from __future__ import annotations

import ast

import yaml
from conftest import SKILL

from tao_skill_bank import schema_gen
from tao_skill_bank.skill import load_skill
from tao_skill_bank.spec import get_dotted, resolve_spec


def test_generated_files_are_current():
    assert schema_gen.main(["--check"]) == 0, "run `make schemas` and commit"


def test_front_matter_and_triggers():
    skill = load_skill(SKILL)
    fm = skill.front_matter
    assert fm["name"] == "tao-train-nvpanoptix3d" and fm["license"] == "Apache-2.0"
    for phrase in ("train NVPanoptix3D", "panoptic 3D reconstruction", "3D scene segmentation", "occupancy completion"):
        assert phrase in fm["description"]
    automl = load_skill(SKILL.parent / "tao-run-automl")
    assert automl.name == "tao-run-automl" and "AutoML" in automl.front_matter["description"]


def test_requirements_table_parsed_and_every_action_has_data():
    skill = load_skill(SKILL)
    assert set(skill.actions) == {"train", "evaluate", "inference", "export"}
    for action in ("train", "evaluate", "inference"):
        keys = {r.spec_key for r in skill.requirements_for(action)}
        assert {"dataset.frustum_mask_path", "dataset.label_map"} <= keys
    inference = {r.spec_key: r for r in skill.requirements_for("inference")}
    assert inference["inference.images_dir"].relative_path == "images.tar.gz"


def test_important_parameters_match_schema_defaults_and_options():
    skill = load_skill(SKILL)
    for action in ("train", "evaluate", "inference", "export"):
        schema = skill.load_schema(action)
        for row in skill.important_parameters:
            node = schema
            for part in row["Spec Key"].split("."):
                node = node.get("properties", {}).get(part)
                if node is None:
                    break
            if node is None:
                continue  # the key belongs to another action's sections
            text = row["Default"]
            documented = ast.literal_eval(text) if text[:1] in "[0123456789" or text in ("True", "False") else text
            assert documented == node["default"], row
            if row["Options"]:
                assert [o.strip() for o in row["Options"].split(",")] == node["enum"], row


def test_multi_gpu_table_matches_train_defaults():
    skill = load_skill(SKILL)
    template = skill.load_template("train")
    for row in skill.multi_gpu:
        assert str(get_dotted(template, row["Spec Key"])) == row["Default"], row


def test_typical_overrides_validate_for_every_action():
    skill = load_skill(SKILL)
    assert set(skill.typical_overrides) == {"train", "evaluate", "inference", "export"}
    for action, overrides in skill.typical_overrides.items():
        spec = resolve_spec(skill, action, overrides)
        for key, value in overrides.items():
            assert get_dotted(spec, key) == value


def test_skill_info_mirrors_the_tables():
    skill = load_skill(SKILL)
    info = yaml.safe_load((skill.references_dir / "skill_info.yaml").read_text())
    assert info["automl_enabled"] is True
    for req in skill.data_requirements:
        assert info["data_sources"][req.action][req.spec_key]["path"] == req.relative_path
    for p in skill.spec_params:
        assert info["spec_params"][p.action][p.spec_key] == p.function
    assert info["spec_shorthand_keys"] == skill.shorthand_keys


def test_error_patterns_used_by_the_sdk_exist():
    skill = load_skill(SKILL)
    for name in ("Missing frustum mask", "Downsample factor mismatch", "3D occupancy OOM", "fsdp requested"):
        assert skill.error_fix(name)
