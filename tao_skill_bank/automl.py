"""AutoML over a model skill's packaged train schema: an Optuna study whose trials are child train jobs.

The search space, bounds, option weights, math conditions and dependencies all come from
`schemas/train.schema.json`; the metric is read from each child's status.json at every validation, and a
pruned child is cancelled so its GPU serves the next trial. The study lives in a real database (SQLite in the
AutoML job's folder by default), so an interrupted sweep resumes where it stopped.
"""
from __future__ import annotations

import csv
import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

from . import atomic
from .conditions import evaluate_condition, get_dotted
from .data_sources import DatasetRoots
from .errors import SkillBankError
from .jobs import (CANCELLED, DONE, FAILED, FINAL, PRUNED, RUNNING, JobRecord, JobStore, cancel_job,
                   last_error_line, read_status)
from .runner import ActionRequest, launch, prepare
from .skill import load_skill
from .spec import schema_node, set_dotted

ALGORITHMS = ("bayesian", "hyperband", "asha")
REQUEST_FILE = "automl_request.json"   # in the sweep's job folder: what it was asked, for a resume


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


@dataclass
class AutoMLConfig:
    skill_dir: str
    roots: DatasetRoots
    overrides: dict
    jobs_dir: str | None = None
    backend: str = "local"
    backend_options: dict = field(default_factory=dict)
    algorithm: str = "bayesian"
    max_trials: int = 10
    max_concurrent: int = 1
    time_budget_s: float | None = None
    metric: str = "kpi"
    extra_params: list = field(default_factory=list)
    storage: str | None = None
    job_id: str | None = None
    seed: int = 0
    ptm: str | None = None
    parent_job_id: str | None = None
    gpus: list = field(default_factory=list)   # GPU ids shared out among concurrent trials (local backend)
    poll_s: float = 1.0


def _metric_value(event: dict, metric: str):
    value = event.get(metric, event.get("losses", {}).get(metric))
    return float(value) if isinstance(value, (int, float)) else None


class AutoMLRunner:
    def __init__(self, cfg: AutoMLConfig):
        if cfg.algorithm not in ALGORITHMS:
            raise SkillBankError(f"--algorithm {cfg.algorithm!r}: use one of {', '.join(ALGORITHMS)}")
        if cfg.max_trials < 1 or cfg.max_concurrent < 1:
            raise SkillBankError(f"--max-trials {cfg.max_trials} / --max-concurrent {cfg.max_concurrent}: give at "
                                 "least 1")
        self.cfg = cfg
        self.skill = load_skill(cfg.skill_dir)
        self.store = JobStore(cfg.jobs_dir)
        self.schema = self.skill.load_schema("train")
        user_keys = {self.skill.shorthand_keys.get(k, k) for k in cfg.overrides}
        self.space = SearchSpace.from_schema(self.schema, cfg.extra_params, exclude=user_keys)
        self.direction = "minimize" if "loss" in cfg.metric else "maximize"
        self.job_id = cfg.job_id or self.store.new_id("automl")
        self._gpu_lock = threading.Lock()
        self._summary_lock = threading.Lock()
        self._free_gpus = list(cfg.gpus)

    def base_request(self) -> ActionRequest:
        """The train request every trial starts from: the user's overrides, data and parent, nothing searched."""
        return ActionRequest(self.cfg.skill_dir, "train", self.cfg.roots, dict(self.cfg.overrides),
                             self.cfg.parent_job_id, self.cfg.backend, dict(self.cfg.backend_options), self.cfg.ptm)

    def check(self, dry_run: bool = False):
        """Resolve and validate the base spec and its data sources as a direct train would (schema, the skill's
        rules, required files), before any trial; returns the prepared base job."""
        return prepare(self.base_request(), self.store, dry_run=dry_run)

    # -------------------------------------------------------------- study
    def _study(self) -> optuna.Study:
        self.results.mkdir(parents=True, exist_ok=True)
        storage = self.cfg.storage or f"sqlite:///{self.results / 'study.db'}"
        sampler = optuna.samplers.TPESampler(seed=self.cfg.seed, n_startup_trials=max(2, self.cfg.max_trials // 4))
        epochs = self._epochs()
        pruner = {"bayesian": optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0),
                  "hyperband": optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3),
                  "asha": optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2),
                  }[self.cfg.algorithm]
        study = optuna.create_study(study_name=self.job_id, storage=storage, direction=self.direction,
                                    sampler=sampler, pruner=pruner, load_if_exists=True)
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # left over by an interruption
            if t.user_attrs.get("job_id"):  # its training may still run: stop it before the next trial starts
                cancel_job(self.store, t.user_attrs["job_id"])
            study.tell(t.number, state=TrialState.FAIL)
        if study.trials:
            # a resumed sweep draws new values: the same seed would repeat the first sweep's start-up draws
            study.sampler = optuna.samplers.TPESampler(seed=self.cfg.seed + len(study.trials),
                                                       n_startup_trials=max(2, self.cfg.max_trials // 4))
        return study

    @property
    def results(self) -> Path:
        return self.store.results_dir(self.job_id)

    # -------------------------------------------------------------- one trial = one child train job
    def _objective(self, trial: optuna.Trial) -> float:
        base = self.skill.load_template("train")
        for k, v in self.cfg.overrides.items():
            set_dotted(base, self.skill.shorthand_keys.get(k, k), v)
        values = self.space.sample(trial, base)
        if values is None:
            raise optuna.TrialPruned(f"breaks {trial.user_attrs['rejected_by']}")
        overrides = {**self.cfg.overrides, **values, "train.validation_interval": 1}
        gpu = self._take_gpu()
        if gpu is not None:
            overrides.update({"train.gpu_ids": [gpu], "train.num_gpus": 1})
        try:
            request = self.base_request()
            request.overrides = overrides
            prepared = prepare(request, self.store)
            prepared.parent_job_id = self.job_id  # the child's record names the sweep as its parent
            record = launch(prepared, self.store)
            trial.set_user_attr("job_id", record.job_id)
            try:
                return self._follow(trial, record.job_id)
            except KeyboardInterrupt:  # the sweep is cancelled: its running trial goes with it
                cancel_job(self.store, record.job_id)
                raise
        finally:
            self._give_gpu(gpu)

    def _follow(self, trial: optuna.Trial, job_id: str) -> float:
        reported, last = set(), None
        while True:
            record = self.store.get(job_id)
            for event in read_status(self.store.results_dir(job_id)):
                if event.get("event") != "epoch" or event["epoch"] in reported:
                    continue
                value = _metric_value(event, self.cfg.metric)
                if value is None:
                    continue
                reported.add(event["epoch"])
                last = value
                trial.report(value, event["epoch"])
                trial.set_user_attr("rung", event["epoch"])
                trial.set_user_attr("seconds", float(event.get("elapsed_s", 0.0)))
                if trial.should_prune():
                    cancel_job(self.store, job_id, reason=PRUNED)
                    raise optuna.TrialPruned(f"pruned at epoch {event['epoch']}")
            if record.status in FINAL:
                break
            time.sleep(self.cfg.poll_s)
        if record.status != DONE:
            trial.set_user_attr("error", last_error_line(self.store.log_path(job_id)) or record.error)
            raise RuntimeError(f"child job {job_id} {record.status}: {record.error}")
        if last is None:
            raise RuntimeError(f"child job {job_id} reported no {self.cfg.metric}")
        return last

    def _take_gpu(self):
        with self._gpu_lock:
            return self._free_gpus.pop(0) if self._free_gpus else None

    def _give_gpu(self, gpu) -> None:
        if gpu is not None:
            with self._gpu_lock:
                self._free_gpus.append(gpu)

    # -------------------------------------------------------------- the sweep
    def run(self) -> dict:
        self.check()
        record = self._record()
        study = self._study()
        done = len([t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)])
        remaining = max(0, self.cfg.max_trials - done)
        cancelled = False
        try:
            if remaining:
                # the summary after every trial: a sweep killed mid-way is still usable as a parent
                study.optimize(self._objective, n_trials=remaining, n_jobs=self.cfg.max_concurrent,
                               timeout=self.cfg.time_budget_s, catch=(Exception,), gc_after_trial=False,
                               callbacks=[self._after_trial])
        except KeyboardInterrupt:
            cancelled = True
        summary = self._summarise(study)
        if cancelled:
            record.status, record.error = CANCELLED, "interrupted; resume with --job-id " + self.job_id
        elif self._stopped_for:
            record.status = FAILED
            record.error = f"stopped: the first {self.FAILURES_TO_STOP} trials failed alike: {self._stopped_for}"
        else:
            record.status = DONE if summary["best_job_id"] else FAILED
            record.error = None if summary["best_job_id"] else "no trial completed"
        record.kpi = summary.get("best_value")
        record.finished_at = time.time()
        self.store.save(record)
        from .report import write_report
        write_report(self.store, self.job_id)
        return {**summary, "status": record.status, "error": record.error}

    FAILURES_TO_STOP = 2  # the first trials failing with one error: every trial would

    def _after_trial(self, study: optuna.Study, _trial) -> None:
        self._summarise(study)
        states = [t for t in study.trials if t.state != TrialState.RUNNING]
        first = states[:self.FAILURES_TO_STOP]
        errors = {t.user_attrs.get("error") for t in first}
        if len(first) == self.FAILURES_TO_STOP and all(t.state == TrialState.FAIL for t in first) and \
                len(errors) == 1 and None not in errors:
            self._stopped_for = errors.pop()
            study.stop()

    _stopped_for: str | None = None

    def _record(self) -> JobRecord:
        try:
            record = self.store.get(self.job_id)
        except SkillBankError:
            record = JobRecord(self.job_id, "automl", self.skill.name, self.cfg.backend, created_at=time.time())
        record.status, record.started_at, record.supervisor_pid = RUNNING, time.time(), os.getpid()
        record.command = ["tao_run_automl", self.cfg.algorithm, f"max_trials={self.cfg.max_trials}"]
        self.store.job_dir(self.job_id).mkdir(parents=True, exist_ok=True)
        self.store.save(record)
        return record

    def _summarise(self, study: optuna.Study) -> dict:
        with self._summary_lock:  # concurrent trials finish on their own threads
            return self._write_summary(study)

    def _write_summary(self, study: optuna.Study) -> dict:
        rows = []
        for t in study.trials:
            params = {k: v for k, v in t.params.items() if not k.endswith("#u")}
            params.update({k: v for k, v in t.user_attrs.items() if k not in ("job_id", "rung", "rejected_by",
                                                                               "seconds", "error")})
            rows.append({"trial": t.number, "job_id": t.user_attrs.get("job_id"), "state": t.state.name.lower(),
                         "rung": t.user_attrs.get("rung", 0), self.cfg.metric: t.value, "params": params,
                         "seconds": t.user_attrs.get("seconds", 0.0),
                         "note": t.user_attrs.get("rejected_by") or t.user_attrs.get("error")})
        completed = [t for t in study.trials if t.state == TrialState.COMPLETE]
        best = study.best_trial if completed else None
        summary = {"automl_job_id": self.job_id, "algorithm": self.cfg.algorithm, "metric": self.cfg.metric,
                   "direction": self.direction, "trials": rows,
                   "best_job_id": best.user_attrs.get("job_id") if best else None,
                   "best_trial": best.number if best else None, "best_value": best.value if best else None,
                   **self._pruning_savings(rows)}
        atomic.write_json(self.results / "summary.json", summary)
        if best:
            atomic.write_json(self.results / "best_rec.json", {"best_job_id": summary["best_job_id"],
                                                               "trial": best.number, self.cfg.metric: best.value,
                                                               "params": rows[best.number]["params"]})
        with open(self.results / "summary.csv.tmp", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["trial", "state", "rung", self.cfg.metric, "job_id", "params"])
            for r in rows:
                writer.writerow([r["trial"], r["state"], r["rung"], r[self.cfg.metric], r["job_id"],
                                 json.dumps(r["params"], sort_keys=True)])
        os.replace(self.results / "summary.csv.tmp", self.results / "summary.csv")
        self._plot(rows)
        return summary

    def _pruning_savings(self, rows: list[dict]) -> dict:
        """Trial-seconds spent, and those a pruned trial would have spent running to the last epoch at its own
        pace (what pruning saved; one trial holds one GPU, so these are GPU-seconds)."""
        epochs = self._epochs()
        spent = sum(r["seconds"] for r in rows)
        saved = sum(r["seconds"] / r["rung"] * (epochs - r["rung"]) for r in rows
                    if r["state"] == "pruned" and r["rung"] and r["seconds"])
        return {"epochs_per_trial": epochs, "trial_seconds": round(spent, 1),
                "trial_seconds_saved_by_pruning": round(saved, 1)}

    def _epochs(self) -> int:
        return int(self.cfg.overrides.get("train.num_epochs", self.cfg.overrides.get("num_epochs", 0)) or
                   get_dotted(self.skill.load_template("train"), "train.num_epochs"))

    def _plot(self, rows: list[dict]) -> None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for state, marker in (("complete", "o"), ("pruned", "x"), ("fail", "s")):
            pts = [(r["trial"], r[self.cfg.metric]) for r in rows
                   if r["state"] == state and r[self.cfg.metric] is not None]
            if pts:
                ax.scatter(*zip(*pts), marker=marker, label=state)
        ax.set_xlabel("trial")
        ax.set_ylabel(self.cfg.metric)
        ax.set_title(f"{self.job_id}: {self.cfg.metric} over trials")
        ax.legend()
        fig.tight_layout()
        tmp = self.results / ".prq_over_trials.png"
        fig.savefig(tmp, format="png")
        plt.close(fig)
        os.replace(tmp, self.results / "prq_over_trials.png")


def summary_table(summary: dict) -> str:
    metric = summary["metric"]
    lines = [f"{'trial':>5}  {'state':<9} {'rung':>4}  {metric:>10}  params"]
    for r in summary["trials"]:
        value = "" if r[metric] is None else f"{r[metric]:.4f}"
        lines.append(f"{r['trial']:>5}  {r['state']:<9} {r['rung']:>4}  {value:>10}  "
                     f"{json.dumps(r['params'], sort_keys=True)}")
    lines.append(f"best: trial {summary['best_trial']} job {summary['best_job_id']} {metric}={summary['best_value']}")
    if "trial_seconds" in summary:
        lines.append(f"trial time {summary['trial_seconds']:.0f} s; pruning saved "
                     f"{summary['trial_seconds_saved_by_pruning']:.0f} s")
    return "\n".join(lines)
