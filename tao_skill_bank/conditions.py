"""Cross-key rules written as Python expressions over dotted spec keys, e.g.
`dataset.depth_min < dataset.depth_max`: AutoML's math conditions and a skill's semantic rules (the schema's
`x_rules`), evaluated the same way by the engine and the SDK."""
from __future__ import annotations

import re

_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
_BUILTINS = {"min": min, "max": max, "abs": abs, "len": len}


def get_dotted(spec: dict, dotted: str, default=None):
    """The value at a dotted key of a nested spec, or `default` where a part is missing."""
    node = spec
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def keys_of(expression: str) -> list[str]:
    return _DOTTED.findall(expression)


def evaluate_condition(expression: str, spec: dict) -> bool:
    """Evaluate the expression with its dotted keys read from the spec (no builtins beyond min/max/abs/len)."""
    names = {}

    def repl(match):
        value = get_dotted(spec, match.group(0))
        if value is None:
            return match.group(0)
        var = f"_v{len(names)}"
        names[var] = value
        return var

    code = _DOTTED.sub(repl, expression)
    return bool(eval(code, {"__builtins__": _BUILTINS}, names))  # noqa: S307 - expressions from our own schema


def broken_rule(rules: list[dict], spec: dict) -> str | None:
    """The error of the first rule ({"require": expression, "error": message}) the spec breaks; rules whose keys
    the spec lacks are skipped."""
    for rule in rules:
        if any(get_dotted(spec, key) is None for key in keys_of(rule["require"])):
            continue
        if not evaluate_condition(rule["require"], spec):
            return rule["error"]
    return None
