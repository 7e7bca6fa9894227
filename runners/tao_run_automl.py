#!/usr/bin/env python3
"""AutoML for a model skill: an Optuna study over its packaged train schema, trials as child train jobs.

    python runners/tao_run_automl.py --skill skills/tao-train-nvpanoptix3d --train-dataset DATA \
        --max-trials 8 --algorithm bayesian|hyperband|asha [--override key=value ...] [--job-id ID to resume]
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tao_skill_bank import atomic  # noqa: E402
from tao_skill_bank.automl import ALGORITHMS, REQUEST_FILE, AutoMLConfig, AutoMLRunner  # noqa: E402
from tao_skill_bank.automl_summary import summary_table  # noqa: E402
from tao_skill_bank.jobs import JobStore  # noqa: E402
from tao_skill_bank.data_sources import DatasetRoots  # noqa: E402
from tao_skill_bank.errors import SkillBankError  # noqa: E402
from tao_skill_bank.runner import overrides_from_args, parse_backend_options  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skill", default="skills/tao-train-nvpanoptix3d")
    p.add_argument("--train-dataset", help="required for a new sweep; a resumed one (--job-id) keeps its own")
    p.add_argument("--eval-dataset")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="kept in every trial and never searched")
    p.add_argument("--params", action="append", default=[], help="extra dotted keys to search")
    p.add_argument("--algorithm", choices=ALGORITHMS, help="default bayesian (a resumed sweep keeps its own)")
    p.add_argument("--max-trials", type=int, help="default 10 (a resumed sweep keeps its own)")
    p.add_argument("--max-concurrent", type=int, default=1)
    p.add_argument("--gpu-ids", default="", help="comma list shared out among concurrent trials (local backend)")
    p.add_argument("--time-budget", type=float, help="seconds for the whole sweep")
    p.add_argument("--metric", help="status.json key, default kpi; names with 'loss' are minimised")
    p.add_argument("--storage", help="Optuna RDB URL (default sqlite in the AutoML job folder; postgresql://... works)")
    p.add_argument("--jobs-dir")
    p.add_argument("--job-id", help="resume this AutoML job")
    p.add_argument("--backend", default="local")
    p.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE",
                   help="each trial's backend option (see tao_run_action.py --help)")
    p.add_argument("--ptm")
    p.add_argument("--ptm-sha256")
    p.add_argument("--parent-job-id")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="print the search space; launch nothing")
    return p


# what a sweep was started with; a resume (--job-id) takes every value the command line leaves out
_STORED = {"train_dataset": None, "eval_dataset": None, "override": [], "params": [], "algorithm": "bayesian",
           "max_trials": 10, "metric": "kpi", "ptm": None, "parent_job_id": None, "storage": None,
           "backend_option": []}


def _fill_from_stored_request(args) -> None:
    stored = {}
    if args.job_id:
        path = JobStore(args.jobs_dir).job_dir(args.job_id) / REQUEST_FILE
        stored = json.loads(path.read_text()) if path.is_file() else {}
    for key, default in _STORED.items():
        if key == "override":
            args.override = list(stored.get("override", [])) + args.override  # later ones win
        elif getattr(args, key) in (None, []):
            setattr(args, key, stored.get(key, default))
    if not args.train_dataset:
        raise SkillBankError("--train-dataset is required for a new sweep (or --job-id of an existing AutoML job)")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM (docker stop, a scheduler) cancels the sweep as Ctrl-C does: the running trial is stopped with it
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        _fill_from_stored_request(args)
        cfg = AutoMLConfig(args.skill, DatasetRoots(args.train_dataset, args.eval_dataset),
                           overrides_from_args(args.override), args.jobs_dir, args.backend,
                           parse_backend_options(args.backend_option), args.algorithm,
                           args.max_trials, args.max_concurrent, args.time_budget, args.metric, args.params,
                           args.storage, args.job_id, args.seed, args.ptm, args.parent_job_id,
                           [int(g) for g in args.gpu_ids.split(",") if g.strip()])
        runner = AutoMLRunner(cfg)
        if args.dry_run:  # everything a real sweep checks first, and what it would search
            base = runner.check(dry_run=True)
            plan = {"dry_run": True, "job_id": runner.job_id, "base_spec": base.spec, "command": base.command,
                    "search_space": {"parameters": [p.__dict__ for p in runner.space.parameters],
                                     "conditions": runner.space.conditions, "direction": runner.direction}}
            print(json.dumps(plan, indent=2, default=str))
            return 0
        atomic.write_json(runner.store.job_dir(runner.job_id) / REQUEST_FILE,
                          {key: getattr(args, key) for key in _STORED})
        print(f"[automl] job {runner.job_id}: {args.algorithm}, {args.max_trials} trials, metric {args.metric} "
              f"({runner.direction})", file=sys.stderr)
        summary = runner.run()
    except (SkillBankError, ValueError, OSError) as exc:
        message = str(exc) if not isinstance(exc, OSError) else \
            f"{exc.filename or 'job store'}: {exc.strerror or exc}; check the --jobs-dir (free space, permissions)"
        print(f"error: {message}", file=sys.stderr)
        if args.json:
            print(json.dumps({"ok": False, "error": message}))
        return 2
    ok = summary["status"] == "done"
    print(json.dumps({"ok": ok, "job_id": runner.job_id, "status": summary["status"], "error": summary["error"], **{
        k: summary[k] for k in ("best_job_id", "best_trial", "best_value")}}) if args.json else summary_table(summary))
    if not ok:
        print(f"[automl] job {runner.job_id} {summary['status']}: {summary['error']}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
