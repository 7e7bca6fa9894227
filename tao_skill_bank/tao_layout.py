"""The public TAO skill bank's skill-folder layout, both ways.

Reading: TAO's schemas name types with their own words (bool, int, float, string, list, categorical,
collection), write open bounds as Infinity and rules as `math_cond`; `json_schema` turns one into JSON Schema
the validator runs, and lists the keywords it leaves unchecked. Writing: `export_skill` writes one of our
skills in that layout (schemas, references and evals inside the skill folder, `metadata.version`, TAO's type
words, a manifest of action objects), so it drops into a TAO skill bank checkout.

    python -m tao_skill_bank.tao_layout skills/tao-train-nvpanoptix3d OUT_DIR
"""
from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
from pathlib import Path

import yaml

from .errors import SkillBankError

TAO_TO_JSON = {"bool": "boolean", "int": "integer", "float": "number", "string": "string", "list": "array",
               "categorical": "string", "collection": "object", "object": "object", "dict": "object"}
JSON_TO_TAO = {"boolean": "bool", "integer": "int", "number": "float", "string": "string", "array": "list",
               "object": "collection"}
# what the SDK reads besides JSON Schema's own keywords (AutoML, the rules, annotations)
SDK_KEYWORDS = {"automl_enabled", "automl_default_parameters", "automl_disabled_parameters", "popular",
                "x_rules", "x_moved_keys", "x_tao_type", "x_tao_schema", "math_cond", "option_weights", "depends_on"}
JSON_KEYWORDS = {"$schema", "title", "description", "type", "properties", "additionalProperties", "required",
                 "default", "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
                 "pattern", "items", "minItems", "maxItems", "anyOf", "oneOf", "const", "format"}
_CONDITION = re.compile(r"^\s*(>=|<=|>|<|/)\s*(-?[0-9.]+(?:e-?[0-9]+)?)\s*$")
_BOUND = {">": "exclusiveMinimum", ">=": "minimum", "<": "exclusiveMaximum", "<=": "maximum", "/": "multipleOf"}


def json_schema(schema: dict) -> tuple[dict, list[str]]:
    """A TAO-layout schema as JSON Schema, and 'keyword (at key)' for each keyword left unchecked.
    Our own schemas pass through unchanged."""
    unknown: dict[str, str] = {}

    def convert(node, path: str):
        if not isinstance(node, dict):
            return node
        out = {}
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                out[key] = {}
                for k, v in value.items():
                    if isinstance(v, dict):
                        out[key][k] = convert(v, f"{path}.{k}" if path else k)
                    else:   # TAO files carry some lists among the properties: not a field
                        unknown.setdefault(f"properties.{k}", path or "<root>")
            elif key == "type" and value in TAO_TO_JSON and value not in ("object", "collection", "dict"):
                out[key], out["x_tao_type"] = TAO_TO_JSON[value], value      # a field keeps its TAO word
            elif key == "type" and value in TAO_TO_JSON:
                out[key] = TAO_TO_JSON[value]
            elif key in ("minimum", "maximum") and isinstance(value, float) and math.isinf(value):
                continue                                            # Infinity: no bound
            elif key == "math_cond" and isinstance(value, str) and _CONDITION.match(value):
                op, number = _CONDITION.match(value).groups()
                out[_BOUND[op]] = float(number) if "." in number or "e" in number else int(number)
            elif key in ("default", "popular", "enum", "x_rules", "x_moved_keys", "automl_default_parameters",
                         "automl_disabled_parameters", "x_tao_schema", "items"):
                out[key] = value
            else:
                if key not in JSON_KEYWORDS and key not in SDK_KEYWORDS:
                    unknown.setdefault(key, path or "<root>")
                out[key] = value
        return out

    converted = convert(schema, "")
    return converted, [f"{k} (at {p})" for k, p in sorted(unknown.items())]


def tao_schema(schema: dict, root: bool = True) -> dict:
    """Our JSON Schema in TAO's words: the field's x_tao_type (or the section word) as its type."""
    out = {}
    for key, value in schema.items():
        if key == "properties":
            out[key] = {k: tao_schema(v, root=False) for k, v in value.items()}
        elif key == "x_tao_type":
            continue
        elif key == "type":
            out[key] = schema.get("x_tao_type") or ("object" if root else JSON_TO_TAO.get(value, value))
        else:
            out[key] = value
    return out


def export_skill(skill_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the skill at skill_dir in the TAO layout under out_dir/<skill name>; returns that folder."""
    from .skill import load_skill
    skill = load_skill(skill_dir)
    target = Path(out_dir) / skill.name
    if target.exists():
        raise SkillBankError(f"{target}: exists; remove it or export to another folder")
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "schemas").mkdir(parents=True)
    front = {k: v for k, v in skill.front_matter.items() if k not in ("schemas", "references", "version")}
    front["metadata"] = {**(skill.front_matter.get("metadata") or {}), "version": skill.front_matter["version"]}
    (tmp / "SKILL.md").write_text("---\n" + yaml.safe_dump(front, sort_keys=False, width=110) + "---\n"
                                  + skill.markdown)
    manifest = {"actions": {}}
    for action in skill.actions:
        schema = json.loads(skill.schema_path(action).read_text())
        (tmp / "schemas" / f"{action}.schema.json").write_text(json.dumps(tao_schema(schema), indent=1) + "\n")
        manifest["actions"][action] = {"schema": f"{action}.schema.json",
                                       "spec_template": f"../references/spec_template_{action}.yaml",
                                       "automl_default_parameters": schema.get("automl_default_parameters", [])}
    (tmp / "schemas" / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.copytree(skill.references_dir, tmp / "references")
    info_path = tmp / "references" / "skill_info.yaml"
    if info_path.is_file() and skill.pretrained_model():          # a path that still resolves once moved
        info = yaml.safe_load(info_path.read_text()) or {}
        info["pretrained_model"] = skill.pretrained_model()
        info_path.write_text(yaml.safe_dump(info, sort_keys=False))
    for extra in ("evals", "BENCHMARK.md", "skill-card.md"):
        source = skill.directory / extra
        if source.is_dir():
            shutil.copytree(source, tmp / extra)
        elif source.is_file():
            shutil.copy2(source, tmp / extra)
    tmp.rename(target)                                            # whole, or not there
    return target


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Write a skill in the public TAO skill bank's folder layout.")
    p.add_argument("skill_dir")
    p.add_argument("out_dir")
    a = p.parse_args(argv)
    try:
        print(export_skill(a.skill_dir, a.out_dir))
    except SkillBankError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
