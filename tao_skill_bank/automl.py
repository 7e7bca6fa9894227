"""AutoML over a model skill's packaged train schema: an Optuna study whose trials are child train jobs.

The search space, bounds, option weights, math conditions and dependencies all come from
`schemas/train.schema.json`; the metric is read from each child's status.json at every validation, and a
pruned child is cancelled so its GPU serves the next trial. The study lives in a real database (SQLite in the
AutoML job's folder by default), so an interrupted sweep resumes where it stopped.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

from .automl_summary import plot_trials, pruning_savings, trial_rows, write_summary
from .conditions import get_dotted
from .data_sources import DatasetRoots
from .errors import SkillBankError
from .jobs import (CANCELLED, DONE, FAILED, FINAL, PRUNED, RUNNING, JobRecord, JobStore, cancel_job,
                   last_error_line, read_status)
from .runner import ActionRequest, launch, prepare
from .search_space import SearchSpace
from .skill import load_skill
from .spec import set_dotted

ALGORITHMS = ("bayesian", "hyperband", "asha")
REQUEST_FILE = "automl_request.json"   # in the sweep's job folder: what it was asked, for a resume


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
        rows = trial_rows(study, self.cfg.metric)
        completed = [t for t in study.trials if t.state == TrialState.COMPLETE]
        best = study.best_trial if completed else None
        summary = {"automl_job_id": self.job_id, "algorithm": self.cfg.algorithm, "metric": self.cfg.metric,
                   "direction": self.direction, "trials": rows,
                   "best_job_id": best.user_attrs.get("job_id") if best else None,
                   "best_trial": best.number if best else None, "best_value": best.value if best else None,
                   **pruning_savings(rows, self._epochs())}
        write_summary(self.results, summary)
        plot_trials(self.results / "prq_over_trials.png", rows, self.cfg.metric,
                    f"{self.job_id}: {self.cfg.metric} over trials")
        return summary

    def _epochs(self) -> int:
        return int(self.cfg.overrides.get("train.num_epochs", self.cfg.overrides.get("num_epochs", 0)) or
                   get_dotted(self.skill.load_template("train"), "train.num_epochs"))
