"""Load a skill: its front matter and the tables of its markdown, which are the single source of truth."""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import SkillBankError
from .safe_yaml import clip as safe_clip
from .tao_layout import json_schema

SOURCES = ("train_datasets", "eval_dataset", "inference_dataset")
INFERENCE_FUNCTIONS = ("parent_model", "parent_model_or_ptm", "ptm", "resume_model", "output_dir", "key",
                       "create_onnx_file", "create_engine_file", "create_onnx_file_2d", "create_onnx_file_3d")


@dataclass(frozen=True)
class DataRequirement:
    """A row of the requirements table. Its Files cell may list alternatives ("images.tar.gz or ."; the first
    that exists wins) and end in "(optional)" (none there: the key keeps the spec's default); a cell that is one
    of the key's allowed values (TAO's "coco_panoptic" for dataset.*.type) is that value, not a file."""
    action: str
    spec_key: str
    source: str
    relative_path: str
    is_list: bool
    alternatives: tuple = ()
    optional: bool = False


@dataclass(frozen=True)
class SpecParam:
    action: str
    spec_key: str
    function: str
    meaning: str


@dataclass
class Skill:
    directory: Path
    front_matter: dict
    markdown: str
    actions: dict[str, str]                       # action -> command template
    data_requirements: list[DataRequirement]
    spec_params: list[SpecParam]
    typical_overrides: dict[str, dict]
    shorthand_keys: dict[str, str]
    important_parameters: list[dict]
    multi_gpu: list[dict]
    error_patterns: dict[str, str]
    schemas_dir: Path = field(default=None)
    references_dir: Path = field(default=None)
    info: dict | None = None                                 # references/skill_info.yaml (None: no such file)
    inputs: dict[str, dict] = field(default_factory=dict)   # action -> {spec key: {type, optional}} (skill_info)
    notes: list[str] = field(default_factory=list)          # what the loader read but does not check

    @property
    def name(self) -> str:
        return self.front_matter["name"]

    def requirements_for(self, action: str) -> list[DataRequirement]:
        return [r for r in self.data_requirements if r.action == action]

    def spec_params_for(self, action: str) -> list[SpecParam]:
        return [p for p in self.spec_params if p.action == action]

    def error_fix(self, error: str) -> str:
        try:
            return self.error_patterns[error]
        except KeyError:
            raise SkillBankError(f"{self.directory}/SKILL.md: no error pattern named {error!r}") from None

    def schema_path(self, action: str) -> Path:
        return self.schemas_dir / f"{action}.schema.json"

    def template_path(self, action: str) -> Path:
        return self.references_dir / f"spec_template_{action}.yaml"

    def load_schema(self, action: str) -> dict:
        """The action's schema as JSON Schema (a TAO-layout schema converted; keywords left unchecked are
        noted once in `notes`)."""
        self.require_action(action)
        path = self.schema_path(action)
        if not path.is_file():
            raise SkillBankError(f"{path}: schema missing; run `make schemas` to generate it")
        schema, unknown = json_schema(json.loads(path.read_text()))
        note = f"{path.name}: not checked: {', '.join(unknown)}" if unknown else ""
        if note and note not in self.notes:
            self.notes.append(note)
        return schema

    def load_template(self, action: str) -> dict:
        path = self.template_path(action)
        if not path.is_file():
            raise SkillBankError(f"{path}: spec template missing; run `make schemas` to generate it")
        return yaml.safe_load(path.read_text()) or {}

    def pretrained_model(self) -> str:
        """The skill's shipped weights (skill_info.yaml `pretrained_model`, relative to references/); "" when it
        ships none or the file is absent."""
        relative = (self.info or {}).get("pretrained_model")
        if not relative:
            return ""
        weights = (self.references_dir / relative).resolve()
        return str(weights) if weights.is_file() else ""

    def container_image(self) -> str | None:
        return (self.info or {}).get("container_image")

    def resume_keys(self, action: str) -> set[str]:
        """Spec keys a resume re-infers (the job's own last checkpoint); everything else keeps its stored value."""
        return {p.spec_key for p in self.spec_params_for(action) if p.function == "resume_model"}

    def require_action(self, action: str) -> None:
        if action not in self.actions:
            raise SkillBankError(f"action {action!r} is not one of {', '.join(self.actions)} "
                                 f"(skill {self.name})")


def load_skill(directory: str | Path) -> Skill:
    directory = Path(directory).resolve()
    path = directory / "SKILL.md"
    if not path.is_file():
        raise SkillBankError(f"{path}: no SKILL.md; pass --skill pointing at a folder under skills/")
    text = path.read_text()
    match = re.match(r"^---\n(.*?)\n---\n(.*)$", text, re.S)
    if not match:
        raise SkillBankError(f"{path}: front matter (--- yaml ---) missing")
    front = yaml.safe_load(match.group(1))
    body = match.group(2)
    for key in ("name", "description", "license", "compatibility", "tags"):
        if key not in front:
            raise SkillBankError(f"{path}: front matter lacks {key!r}")
    front.setdefault("version", (front.get("metadata") or {}).get("version"))   # TAO's layout: metadata.version
    if not front["version"]:
        raise SkillBankError(f"{path}: front matter lacks 'version' (or 'metadata: version:')")
    sections = _sections(body)
    skill = Skill(
        directory=directory, front_matter=front, markdown=body,
        actions={r["Action"]: r["Command"].strip("`") for r in _table(sections, "Actions", required=False)},
        data_requirements=[_requirement(r, path) for r in _table(sections, "Per-Action Dataset Requirements",
                                                                 required=False)],
        spec_params=[],
        typical_overrides=_override_blocks(sections.get("Typical Spec Overrides", ""), path),
        shorthand_keys={r["Shorthand"]: r["Spec Key"] for r in _table(sections, "Shorthand Keys", required=False)},
        important_parameters=_table(sections, "Important Parameters", required=False),
        multi_gpu=_table(sections, "Multi-GPU / Multi-Node", required=False),
        error_patterns={r["Error"]: r["Fix"] for r in _table(sections, "Error Patterns", required=False)},
    )
    for row in _table(sections, "Spec Param / Parent Model Inference", required=False):
        function = row["Inference Function"].strip("`")
        if function in INFERENCE_FUNCTIONS:
            skill.spec_params.append(SpecParam(row["Action"], row["Spec Field"].strip("`"), function, row["Meaning"]))
        else:   # e.g. TAO's download descriptors: the user gives that key
            skill.notes.append(f"SKILL.md: {row['Action']} {row['Spec Field']}: inference function "
                               f"{safe_clip(function)} is not one the SDK knows; that key is not filled in")
    skill.schemas_dir = (directory / front.get("schemas", "schemas")).resolve()
    skill.references_dir = (directory / front.get("references", "references")).resolve()
    info_path = skill.references_dir / "skill_info.yaml"
    skill.info = (yaml.safe_load(info_path.read_text()) or {}) if info_path.is_file() else None
    for action, entry in ((skill.info or {}).get("actions") or {}).items():   # TAO's layout: actions live here
        if isinstance(entry, dict):
            skill.actions.setdefault(action, entry.get("command", ""))
            skill.inputs[action] = entry.get("inputs") or {}
    return skill


def _sections(body: str) -> dict[str, str]:
    """Heading text -> the text under it up to the next heading of any level."""
    parts = re.split(r"^#{1,6} +(.+?)\s*$", body, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _table(sections: dict[str, str], heading: str, required: bool = True) -> list[dict]:
    text = sections.get(heading)
    if text is None:
        if required:
            raise SkillBankError(f"SKILL.md: section {heading!r} missing")
        return []
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("|")]
    if len(lines) < 2:
        return []
    cells = lambda ln: [c.strip() for c in ln.strip("|").split("|")]  # noqa: E731
    header = cells(lines[0])
    return [dict(zip(header, cells(ln))) for ln in lines[2:]]


def _requirement(row: dict, path: Path) -> DataRequirement:
    if row["Source"] not in SOURCES:
        raise SkillBankError(f"{path}: dataset source {row['Source']!r} for {row['Spec Key']} is not one of {SOURCES}")
    files = row["Files"].strip()
    optional = files.endswith("(optional)")
    files = files.removesuffix("(optional)")
    if ";" in files:   # TAO's per-format files, "coco_panoptic: a.json; *: b.json": whichever is there
        files = " or ".join(part.split(":", 1)[-1] for part in files.split(";"))
    alternatives = tuple(a.strip() for a in files.split(" or ") if a.strip())
    return DataRequirement(row["Action"], row["Spec Key"], row["Source"], alternatives[0], row["List?"] == "Yes",
                           alternatives, optional)


def _override_blocks(text: str, path: Path) -> dict[str, dict]:
    blocks = {}
    for action, code in re.findall(r"```python (\w+)\n(.*?)```", text, re.S):
        try:
            blocks[action] = ast.literal_eval(code)
        except (ValueError, SyntaxError) as exc:
            raise SkillBankError(f"{path}: typical overrides of {action} do not parse: {exc}") from None
    return blocks
