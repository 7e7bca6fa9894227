"""The skill markdown is the source of truth: these tests keep it and the generated files true."""
from __future__ import annotations

import ast

import yaml
from helpers import SKILL

from tao_skill_bank import schema_gen
from tao_skill_bank.skill import load_skill
from tao_skill_bank.conditions import get_dotted
from tao_skill_bank.spec import resolve_spec


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


def test_evals_name_real_skills_runners_flags_and_keys():
    """evals/evals.json (the public TAO bank's format): every expected skill and runner exists, every --flag is
    one its runner takes, every dotted key one the schemas know; refusals name what SKILL.md rules out."""
    import json
    import re

    from runners.tao_run_action import build_parser as action_parser
    from runners.tao_run_automl import build_parser as automl_parser
    from tao_skill_bank.spec import schema_node
    repo = SKILL.parent.parent
    flags = {"runners/tao_run_action.py": action_parser(), "runners/tao_run_automl.py": automl_parser()}
    skill = load_skill(SKILL)
    schemas = [skill.load_schema(a) for a in skill.actions]
    not_for = skill.markdown.split("Do not use it for:")[1].split("\n\n")[0].lower()
    for folder in sorted((repo / "skills").iterdir()):
        items = json.loads((folder / "evals" / "evals.json").read_text())
        assert items and {"id", "question", "expected_skill", "expected_script", "ground_truth",
                          "expected_behavior"} <= set(items[0])
        for item in items:
            text = item["ground_truth"] + " " + " ".join(item["expected_behavior"])
            if item["expected_skill"] is None:
                assert item["expected_script"] is None
                assert any(word in not_for for word in ("driving", "video", "open-vocabulary")), item["id"]
                continue
            assert (repo / "skills" / item["expected_skill"] / "SKILL.md").is_file(), item["id"]
            parser = flags[item["expected_script"]]
            known = {opt for action in parser._actions for opt in action.option_strings}
            for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]+", text):
                assert flag in known, (item["id"], flag)
            for key in re.findall(r"\b(?:train|model|dataset|inference|export|evaluate)\.[a-z0-9_.]+[a-z0-9_]", text):
                assert any(schema_node(s, key) is not None for s in schemas), (item["id"], key)


def test_the_platform_skills_list_every_option_their_backend_takes():
    import inspect

    from tao_skill_bank.backends.kubernetes import KubernetesBackend
    from tao_skill_bank.backends.slurm import SlurmBackend
    from tao_skill_bank.skill import _sections, _table
    internal = {"self", "poll_s", "input_paths", "gpus_per_node", "nodes"}   # set by the runner from the spec
    for folder, backend in (("tao-run-on-slurm", SlurmBackend), ("tao-run-on-kubernetes", KubernetesBackend)):
        skill = load_skill(SKILL.parent / folder)
        assert skill.error_patterns and "four verbs" in skill.markdown
        rows = _table(_sections(skill.markdown), "Options (`--backend-option KEY=VALUE`)")
        documented = {key.strip() for row in rows for key in row["Key"].split(",")} - internal
        taken = set(inspect.signature(backend.__init__).parameters) - internal
        assert documented == taken, (folder, documented ^ taken)
        for verb in ("--no-wait", "--status", "--logs", "--cancel"):
            assert verb in skill.markdown
