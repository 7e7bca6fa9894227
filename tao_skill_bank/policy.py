"""Train-action policy: does a train request go through AutoML?"""
from __future__ import annotations

import yaml
from dataclasses import dataclass

from .skill import Skill

OFF_PHRASES = ("turn off automl", "disable automl", "no hpo", "plain training")
POLICIES = ("auto", "off")


@dataclass(frozen=True)
class Route:
    automl: bool
    reason: str


def resolve_policy(explicit: str | None = None, request_text: str | None = None) -> str:
    """An explicit policy wins; the seed's phrases turn AutoML off for this run; otherwise auto."""
    if explicit:
        if explicit not in POLICIES:
            raise ValueError(f"--automl-policy {explicit!r}: use one of {', '.join(POLICIES)}")
        return explicit
    text = " ".join((request_text or "").lower().split())
    return "off" if any(phrase in text for phrase in OFF_PHRASES) else "auto"


def route_train(skill: Skill, policy: str) -> Route:
    if policy == "off":
        return Route(False, "automl_policy is off for this run: training directly")
    info_path = skill.references_dir / "skill_info.yaml"
    info = yaml.safe_load(info_path.read_text()) if info_path.is_file() else {}
    if not (info or {}).get("automl_enabled"):
        return Route(False, f"{skill.name} does not declare automl_enabled: training directly")
    for path in (skill.schema_path("train"), skill.template_path("train")):
        try:
            yaml.safe_load(path.read_text())  # JSON parses as YAML too
        except (OSError, yaml.YAMLError):
            return Route(False, f"AutoML is enabled for {skill.name} but not runnable until schemas are generated "
                                f"({path.name} missing or unreadable; run `make schemas`): training directly")
    return Route(True, f"automl_policy auto and {skill.name} is AutoML-enabled: routing through tao-run-automl")
