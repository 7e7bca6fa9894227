"""The SDK's front: resolve an action request into a job (spec, data, parent model) and launch it."""
from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field

from .backends import get_backend
from .data_sources import DatasetRoots, data_overrides
from .errors import SkillBankError
from .jobs import JobRecord, JobStore, create_job
from .skill import Skill, load_skill
from .conditions import get_dotted
from .spec import parse_override, resolve_spec
from .spec_params import SpecContext, infer_spec_params


@dataclass
class ActionRequest:
    skill_dir: str
    action: str
    roots: DatasetRoots = field(default_factory=DatasetRoots)
    overrides: dict[str, str] = field(default_factory=dict)
    parent_job_id: str | None = None
    backend: str = "local"
    backend_options: dict = field(default_factory=dict)
    ptm: str | None = None
    ptm_sha256: str | None = None
    job_id: str | None = None        # reuse an id to resume a job in place


@dataclass
class PreparedJob:
    job_id: str
    action: str
    skill: Skill
    spec: dict
    command: list[str]
    backend: str
    backend_options: dict
    parent_job_id: str | None

    def describe(self) -> str:
        return " ".join(shlex.quote(c) for c in self.command)


def overrides_from_args(pairs: list[str]) -> dict[str, str]:
    return dict(parse_override(p) for p in pairs)


def parse_backend_options(items: list[str]) -> dict:
    """--backend-option KEY=VALUE items; each value read as YAML (numbers, booleans, lists)."""
    import yaml
    options: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SkillBankError(f"--backend-option {item!r}: write it as key=value")
        options[key.strip()] = yaml.safe_load(value) if value else None
    return options


def engine_command(skill: Skill, action: str, backend: str, spec_path: str, results_dir: str,
                   container: bool = False) -> list[str]:
    """The skill's command for the action; without a container (local, or Slurm on storage the nodes share) the
    entry point runs under this interpreter."""
    words = shlex.split(skill.actions[action].replace("{config_path}", spec_path))
    if backend == "local" or (backend == "slurm" and not container):
        words = [sys.executable, "-m", words[0]] + words[1:]
    return words + [f"results_dir={results_dir}"]


def prepare(request: ActionRequest, store: JobStore, dry_run: bool = False) -> PreparedJob:
    """dry_run: resolve and validate everything that needs no network (s3:// roots stay URLs)."""
    skill = load_skill(request.skill_dir)
    skill.require_action(request.action)
    get_backend(request.backend)  # an unknown backend fails before any work
    job_id = request.job_id or store.new_id(request.action)
    stored = _stored_spec(store, request) if request.job_id else None
    if request.parent_job_id:
        store.get(request.parent_job_id)  # fail early on an unknown parent
    user_keys = {skill.shorthand_keys.get(k, k) for k in request.overrides}
    ctx = SpecContext(store, job_id, request.parent_job_id, request.ptm, request.ptm_sha256,
                      skill.pretrained_model(), (skill.info or {}).get("network_arch", "model"))
    if stored is not None:
        # a resume: the job's own spec (the user's first overrides included), its last checkpoint, and only what
        # the user says now on top; data roots given again replace the stored ones
        overrides = dict(data_overrides(skill, request.action, request.roots, fetch=not dry_run)) \
            if any(vars(request.roots).values()) else {}
        overrides.update({k: v for k, v in infer_spec_params(skill, request.action, ctx, user_keys).items()
                          if k in skill.resume_keys(request.action)})
    else:
        overrides = dict(data_overrides(skill, request.action, request.roots, fetch=not dry_run))
        overrides.update(infer_spec_params(skill, request.action, ctx, user_keys))
    overrides.update(request.overrides)
    spec = resolve_spec(skill, request.action, overrides, base=stored)
    _check_inputs(skill, request.action, spec)
    results_dir = str(store.results_dir(job_id).resolve())
    spec["results_dir"] = results_dir
    command = engine_command(skill, request.action, request.backend, str(store.spec_path(job_id).resolve()),
                             results_dir, container=bool(request.backend_options.get("container")))
    options = dict(request.backend_options)
    train = request.action == "train"   # the job's world: the train spec's nodes and GPUs, one process otherwise
    nodes = int(get_dotted(spec, "train.num_nodes", 1) or 1) if train else 1
    gpus = int(get_dotted(spec, "train.num_gpus", 0) or 0) if train else 0
    if nodes > 1 and request.backend in ("local", "docker"):
        raise SkillBankError(f"train.num_nodes={nodes}: the {request.backend} backend runs on this machine alone; use "
                             "--backend slurm or kubernetes for several nodes, or set train.num_nodes=1")
    if request.backend == "kubernetes":
        options.setdefault("image", skill.container_image())
    if request.backend in ("slurm", "kubernetes"):
        options.setdefault("input_paths", _local_paths(spec))
        options.setdefault("gpus_per_node", gpus)
        options.setdefault("nodes", nodes)
    if request.backend == "docker":
        options.setdefault("image", skill.container_image())
        options.setdefault("input_paths", _local_paths(spec))
        options.setdefault("gpus", gpus)
    get_backend(request.backend, **options).check()
    return PreparedJob(job_id, request.action, skill, spec, command, request.backend, options,
                       request.parent_job_id)


def _check_inputs(skill: Skill, action: str, spec: dict) -> None:
    """An action without dataset rows in SKILL.md (a TAO-layout skill) still needs the files its skill_info.yaml
    lists as inputs: each one not optional must be set."""
    if skill.requirements_for(action):
        return
    missing = [(key, (entry or {}).get("type", "path")) for key, entry in skill.inputs.get(action, {}).items()
               if not (entry or {}).get("optional") and not get_dotted(spec, key, "")]
    if missing:
        key, kind = missing[0]
        more = f" (and {len(missing) - 1} more: {', '.join(k for k, _ in missing[1:])})" if len(missing) > 1 else ""
        raise SkillBankError(f"spec key {key}: the {action} action reads this {kind} and it is not set{more}; "
                             f"give it with --override {key}=PATH")


def _stored_spec(store: JobStore, request: ActionRequest) -> dict | None:
    """The spec a job already ran with (None for a new job id); refused while the job runs."""
    store.ensure_not_running(request.job_id)
    path = store.spec_path(request.job_id)
    if not path.is_file():
        return None
    record = store.get(request.job_id)
    if record.backend != request.backend:
        raise SkillBankError(f"job {request.job_id} ran on the {record.backend} backend; resume it with --backend "
                             f"{record.backend} (its checkpoints are where that backend wrote them)")
    if record.action != request.action:
        raise SkillBankError(f"job {request.job_id} is a {record.action} job; resume it with --action "
                             f"{record.action}")
    import yaml
    return yaml.safe_load(path.read_text()) or {}


def _local_paths(spec: dict, out: list | None = None) -> list[str]:
    out = [] if out is None else out
    for value in spec.values():
        if isinstance(value, dict):
            _local_paths(value, out)
        elif isinstance(value, str) and value.startswith("/"):
            out.append(value)
    return out


def launch(prepared: PreparedJob, store: JobStore) -> JobRecord:
    return create_job(store, prepared.action, prepared.skill.name, prepared.spec, prepared.backend,
                      prepared.command, prepared.backend_options, prepared.parent_job_id, prepared.job_id)
