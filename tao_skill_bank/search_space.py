"""The search space of an AutoML sweep, read from a skill's packaged train schema: each searchable key's kind,
bounds, option weights and dependency, and the math conditions every trial must satisfy."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import optuna

from .conditions import evaluate_condition, get_dotted
from .errors import SkillBankError
from .spec import schema_node, set_dotted


@dataclass(frozen=True)
class Parameter:
    key: str
    kind: str                     # float, int, bool, categorical
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    weights: tuple = ()
    depends_on: tuple | None = None  # (key, required value)
    log: bool = False

    def suggest(self, trial: optuna.Trial):
        if self.kind == "categorical" and self.weights:
            # weighted choice through a uniform draw, so TPE can still model it
            u = trial.suggest_float(self.key + "#u", 0.0, 1.0)
            total, acc = sum(self.weights), 0.0
            for choice, w in zip(self.choices, self.weights):
                acc += w / total
                if u < acc:
                    trial.set_user_attr(self.key, choice)
                    return choice
            trial.set_user_attr(self.key, self.choices[-1])
            return self.choices[-1]
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "bool":
            return trial.suggest_categorical(self.key, [True, False])
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)


@dataclass
class SearchSpace:
    parameters: list[Parameter]
    conditions: list[str] = field(default_factory=list)   # Python expressions over dotted keys

    @classmethod
    def from_schema(cls, schema: dict, extra: list[str] = (), exclude: set[str] = frozenset()) -> "SearchSpace":
        keys = [k for k in list(schema.get("automl_default_parameters", [])) + list(extra) if k not in exclude]
        params, conditions = [], []
        for key in dict.fromkeys(keys):
            node = schema_node(schema, key)
            if node is None:
                raise SkillBankError(f"--params {key}: not a key of the train schema")
            dep = tuple(node["depends_on"].split("=", 1)) if "depends_on" in node else None
            if "enum" in node:
                params.append(Parameter(key, "categorical", choices=tuple(node["enum"]),
                                        weights=tuple(node.get("option_weights", ())), depends_on=dep))
            elif node["type"] == "boolean":
                params.append(Parameter(key, "bool", depends_on=dep))
            elif node["type"] in ("integer", "number"):
                low, high = node.get("minimum", -math.inf), node.get("maximum", math.inf)
                default = node.get("default")
                if (math.isinf(low) or math.isinf(high)) and not (isinstance(default, (int, float)) and default > 0):
                    raise SkillBankError(f"{key}: the schema gives no bounds and no positive default; it cannot "
                                         "be searched (add minimum and maximum, or leave it out of --params)")
                # search around the default: a decade each way for positive floats, within the bounds
                if node["type"] == "number" and default and default > 0:
                    low, high = max(low, default / 10), min(high, default * 10)
                elif node["type"] == "integer":
                    low, high = max(low, math.floor(default / 2)), min(high, max(default * 2, default + 2))
                log = node["type"] == "number" and low > 0 and high / low >= 20
                params.append(Parameter(key, "int" if node["type"] == "integer" else "float", low, high,
                                        depends_on=dep, log=log))
            else:
                raise SkillBankError(f"{key}: type {node['type']} cannot be searched")
        for node_key in _all_leaves(schema):  # conditions bind every trial, searched keys or not
            node = schema_node(schema, node_key)
            if "math_cond" in node and node["math_cond"] not in conditions:
                conditions.append(node["math_cond"])
        return cls(params, conditions)

    def sample(self, trial: optuna.Trial, base_spec: dict) -> dict[str, object] | None:
        """Values for this trial, or None when they break a math condition (the trial is never launched)."""
        values: dict[str, object] = {}
        spec = json.loads(json.dumps(base_spec))
        for p in self.parameters:
            if p.depends_on:
                dep_key, required = p.depends_on
                current = values.get(dep_key, get_dotted(spec, dep_key))
                if str(current) != required:
                    continue
            values[p.key] = p.suggest(trial)
            set_dotted(spec, p.key, values[p.key])
        for cond in self.conditions:
            if not evaluate_condition(cond, spec):
                trial.set_user_attr("rejected_by", cond)
                return None
        return values


def _all_leaves(schema: dict, prefix: str = ""):
    for name, node in schema.get("properties", {}).items():
        if node.get("type") == "object":
            yield from _all_leaves(node, prefix + name + ".")
        else:
            yield prefix + name
