"""Spec overrides: dotted keys merged into a skill's template and validated against its schema."""
from __future__ import annotations

import copy
from typing import Any

import jsonschema
import yaml

from . import safe_yaml
from .conditions import broken_rule
from .errors import SkillBankError
from .skill import Skill


def parse_override(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise SkillBankError(f"override {text!r}: write it as dotted.key=value")
    key, value = text.split("=", 1)
    return key.strip(), value


def schema_node(schema: dict, dotted: str) -> dict | None:
    """The schema node of a dotted key, or None when the key is not in the schema."""
    node = schema
    for part in dotted.split("."):
        node = node.get("properties", {}).get(part)
        if node is None:
            return None
    return node


def _schema_node(schema: dict, dotted: str) -> dict:
    """Like schema_node, but an unknown key is an error naming the first wrong part and the valid ones."""
    moved = schema.get("x_moved_keys", {})
    if dotted in moved:
        raise SkillBankError(f"override {dotted}: moved to {moved[dotted]}; write it there")
    node = schema
    for part in dotted.split("."):
        props = node.get("properties")
        if props is None or part not in props:
            valid = ", ".join(sorted(props)) if props else "none (a leaf)"
            raise SkillBankError(f"override {dotted}: unknown key {part!r}; valid keys there: {valid}")
        node = props[part]
    return node


def coerce_value(schema: dict, dotted: str, value: Any) -> Any:
    """Turn a CLI string into the schema's type: strings stay verbatim, everything else is read as YAML."""
    node = _schema_node(schema, dotted)
    if not isinstance(value, str):
        return value
    if len(value) > safe_yaml.MAX_VALUE_BYTES:
        raise SkillBankError(f"override {dotted}: a value of {len(value)} bytes, over the "
                             f"{safe_yaml.MAX_VALUE_BYTES}-byte limit for one override")
    if node.get("type") == "string":
        return value
    try:
        return safe_yaml.load(value, safe_yaml.MAX_VALUE_BYTES)
    except safe_yaml.BoundError as exc:
        raise SkillBankError(f"override {dotted}: refused: {exc}") from None
    except yaml.YAMLError:
        raise SkillBankError(f"override {dotted}={safe_yaml.clip(value)}: not a valid {node.get('type')} "
                             "value") from None


def set_dotted(spec: dict, dotted: str, value: Any) -> None:
    node = spec
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def resolve_spec(skill: Skill, action: str, overrides: dict[str, Any], base: dict | None = None) -> dict:
    """The action's template (or `base`, a stored spec being resumed) + overrides (shorthand keys expanded),
    validated; the inputs are not modified."""
    schema = skill.load_schema(action)
    spec = copy.deepcopy(skill.load_template(action) if base is None else base)
    for key, value in overrides.items():
        dotted = skill.shorthand_keys.get(key, key)
        set_dotted(spec, dotted, coerce_value(schema, dotted, value))
    validate_spec(skill, action, spec, schema)
    return spec


def validate_spec(skill: Skill, action: str, spec: dict, schema: dict | None = None) -> None:
    schema = schema or skill.load_schema(action)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(spec), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        path = ".".join(str(p) for p in err.absolute_path)
        if err.validator == "additionalProperties":
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            key = ".".join(filter(None, [path, extra[0] if extra else ""]))
            if key in schema.get("x_moved_keys", {}):
                raise SkillBankError(f"spec key {key}: moved to {schema['x_moved_keys'][key]}; write it there")
            raise SkillBankError(f"spec key {key}: unknown key; valid keys there: "
                                 f"{', '.join(sorted(err.schema.get('properties', {})))}")
        message = err.message if len(err.message) <= 200 else f"{safe_yaml.clip(err.instance)} is not valid " \
            f"here ({err.validator}: {safe_yaml.clip(err.validator_value)})"
        raise SkillBankError(f"spec key {path or '<root>'}: {message}")
    broken = broken_rule(schema.get("x_rules", []), spec)
    if broken:
        raise SkillBankError(f"spec key {broken}")
