#!/usr/bin/env python3
"""Run one action of a skill: resolve the spec, data sources and parent model, create the job, wait for it.

    python runners/tao_run_action.py --skill skills/tao-train-nvpanoptix3d --action inference \
        --inference-dataset examples/front3d_tiny [--override key=value ...] [--dry-run] [--json]

Exit code 0 only when the job succeeded (or the dry run resolved).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tao_skill_bank import jobs as job_api  # noqa: E402
from tao_skill_bank.data_sources import DatasetRoots  # noqa: E402
from tao_skill_bank.errors import SkillBankError  # noqa: E402
from tao_skill_bank.policy import resolve_policy, route_train  # noqa: E402
from tao_skill_bank.runner import (ActionRequest, launch, overrides_from_args, parse_backend_options,  # noqa: E402
                                  prepare)
from tao_skill_bank.skill import load_skill  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skill", default="skills/tao-train-nvpanoptix3d", help="skill folder (holds SKILL.md)")
    p.add_argument("--action", help="train | evaluate | inference | export")
    p.add_argument("--list-jobs", action="store_true", help="print the job store's jobs and exit")
    p.add_argument("--status", metavar="JOB_ID", help="print one job's record and exit")
    p.add_argument("--logs", metavar="JOB_ID", help="print one job's log (engine and backend output) and exit")
    p.add_argument("--cancel", metavar="JOB_ID", help="stop a job (any backend: scancel on Slurm, the Job "
                                                      "deleted on Kubernetes) and exit")
    p.add_argument("--no-wait", action="store_true", help="submit and return at once with the job id")
    p.add_argument("--train-dataset", help="train data root: local folder or s3://bucket/prefix")
    p.add_argument("--eval-dataset", help="evaluation data root (defaults to the train root)")
    p.add_argument("--inference-dataset", help="inference data root (defaults to the eval root)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="dotted spec override")
    p.add_argument("--parent-job-id", help="job whose checkpoint feeds parent_model")
    p.add_argument("--ptm", help="pretrained model: local file, s3:// or https:// URL, or none "
                                  "(default: shipped weights)")
    p.add_argument("--ptm-sha256", help="expected SHA-256 of --ptm")
    p.add_argument("--backend", default="local", help="local | docker | slurm | kubernetes")
    p.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE",
                   help="slurm: partition, account, nodes, gpus_per_node, cpus_per_task, mem_per_cpu, time_limit, "
                        "container, container_runtime (pyxis | apptainer), mounts, requeue, warn_seconds, extra; "
                        "kubernetes: image, namespace, pvc, store_path, cpu, memory, service_account, backoff_limit")
    p.add_argument("--nodes", type=int, help="slurm / kubernetes: nodes (train: sets train.num_nodes)")
    p.add_argument("--gpus-per-node", type=int, help="slurm / kubernetes: GPUs per node (train: sets train.num_gpus)")
    p.add_argument("--partition", help="slurm: the partition")
    p.add_argument("--namespace", help="kubernetes: the namespace")
    p.add_argument("--pvc", help="kubernetes: the PersistentVolumeClaim that holds the job store and the data")
    p.add_argument("--image", help="the engine's image: docker and kubernetes; slurm: the container (Pyxis or "
                                   "Apptainer)")
    p.add_argument("--mount", action="append", default=[], help="extra docker bind host:container[:ro]")
    p.add_argument("--docker-env", action="append", default=[], metavar="NAME=VALUE", help="container env")
    p.add_argument("--host-python", action="store_true",
                   help="docker: run a bare image on this host's Python and repo (docker/build_host_image.sh)")
    p.add_argument("--jobs-dir", help="job store: a folder or s3://bucket/prefix (default $TAO_SKILL_BANK_JOBS "
                                      "or ./jobs)")
    p.add_argument("--job-id", help="reuse a job id (resume a train job in place)")
    p.add_argument("--automl-policy", choices=["auto", "off"], help="train only; default from --request")
    p.add_argument("--request", default="", help="the user's words, e.g. 'plain training, no HPO'")
    p.add_argument("--timeout", type=float, help="seconds to wait for the job")
    p.add_argument("--dry-run", action="store_true", help="print the resolved spec and command; launch nothing")
    p.add_argument("--json", action="store_true", help="print a machine-readable result")
    return p


def backend_options(args) -> dict:
    options = parse_backend_options(args.backend_option)
    flags = {"nodes": args.nodes, "gpus_per_node": args.gpus_per_node, "partition": args.partition,
             "namespace": args.namespace, "pvc": args.pvc,
             ("container" if args.backend == "slurm" else "image"): args.image}
    for key, value in flags.items():
        if value is not None:
            if args.backend not in ("slurm", "kubernetes") and key != "image":
                raise SkillBankError(f"--{key.replace('_', '-')}: an option of the slurm and kubernetes backends, "
                                     f"not {args.backend}")
            options[key] = value
    if args.backend == "docker":
        if args.host_python:
            from tao_skill_bank.backends.docker_backend import host_python_options
            options = {**host_python_options(), **options}
        options["mounts"] = options.get("mounts", []) + args.mount
        options["env"] = {**options.get("env", {}), **dict(kv.split("=", 1) for kv in args.docker_env)}
    return options


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (SkillBankError, ValueError) as exc:
        return _error(args, str(exc), 2)
    except OSError as exc:  # a read-only or full job store, a vanished folder
        return _error(args, f"{exc.filename or 'job store'}: {exc.strerror or exc}; check the --jobs-dir "
                            "(free space, permissions)", 1)


def _error(args, message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    if args.json:
        print(json.dumps({"ok": False, "error": message}))
    return code


def run(args) -> int:
    store = job_api.JobStore(args.jobs_dir)
    if args.list_jobs:
        problems: list[str] = []
        for r in store.list(problems):
            print(json.dumps({"job_id": r.job_id, "action": r.action, "status": r.status, "kpi": r.kpi,
                              "parent_job_id": r.parent_job_id}) if args.json else
                  f"{r.job_id:<40} {r.action:<9} {r.status:<9} kpi={r.kpi}")
        for problem in problems:
            print(f"skipped: {problem}", file=sys.stderr)
        return 0
    if args.status or args.logs or args.cancel:
        return _job_verb(store, args)
    if not args.action:
        print("error: --action is required (train | evaluate | inference | export)", file=sys.stderr)
        return 2
    if args.action == "train":  # the engine's world is the backend's: --nodes and --gpus-per-node set both
        args.override += [f"{key}={value}" for key, value in (("train.num_nodes", args.nodes),
                                                              ("train.num_gpus", args.gpus_per_node))
                          if value is not None]
    resuming = _existing_action(store, args.job_id)
    if resuming == "automl":  # a sweep resumes its own study, never a new one
        print(f"[resume] {args.job_id} is an AutoML job: resuming its study", file=sys.stderr)
        from runners.tao_run_automl import main as automl_main
        return automl_main(_automl_argv(args))
    if resuming:
        print(f"[resume] {args.job_id}: its stored spec and last checkpoint; new overrides apply on top",
              file=sys.stderr)
    elif args.action == "train":
        skill = load_skill(args.skill)
        route = route_train(skill, resolve_policy(args.automl_policy, args.request))
        print(f"[policy] {route.reason}", file=sys.stderr)
        if route.automl:
            from runners.tao_run_automl import main as automl_main
            return automl_main(_automl_argv(args))
    request = ActionRequest(args.skill, args.action, DatasetRoots(args.train_dataset, args.eval_dataset,
                                                                  args.inference_dataset),
                            overrides_from_args(args.override), args.parent_job_id, args.backend,
                            backend_options(args), args.ptm, args.ptm_sha256, args.job_id)
    prepared = prepare(request, store, dry_run=args.dry_run)
    for note in prepared.skill.notes:   # what the skill's files say that the SDK does not check or fill in
        print(f"[skill] {note}", file=sys.stderr)
    if args.dry_run:
        import yaml
        result = {"dry_run": True, "job_id": prepared.job_id, "command": prepared.command,
                  "backend": prepared.backend, "spec": prepared.spec, "notes": prepared.skill.notes}
        print(json.dumps(result, indent=2) if args.json else
              yaml.safe_dump(prepared.spec, sort_keys=False) + "\ncommand: " + prepared.describe())
        return 0
    record = launch(prepared, store)
    print(f"[job] {record.job_id} started ({record.backend}); logs: {store.log_path(record.job_id)}",
          file=sys.stderr)
    if args.no_wait:
        print(json.dumps({"ok": True, "job_id": record.job_id, "status": record.status}) if args.json
              else record.job_id)
        return 0
    record = job_api.wait(store, record.job_id, timeout=args.timeout)
    ok = record.status == job_api.DONE
    warnings = [e.get("message", "") for e in job_api.read_status(store.results_dir(record.job_id))
                if e.get("event") == "warning"]
    report = store.results_dir(record.job_id) / "report.html"
    result = {"ok": ok, "job_id": record.job_id, "status": record.status, "exit_code": record.exit_code,
              "kpi": record.kpi, "results_dir": str(store.results_dir(record.job_id)), "error": record.error,
              "warnings": warnings, "report": str(report) if report.is_file() else None}
    for warning in warnings:
        print(f"[warning] {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"[job] {record.job_id} {record.status}" + (f": {record.error}" if record.error else "")
              + f"; results in {result['results_dir']}" + (f"; report: {report}" if report.is_file() else ""))
        if not ok:
            tail = store.log_path(record.job_id).read_text(errors="replace").splitlines()[-15:]
            print("\n".join(tail), file=sys.stderr)
    return 0 if ok else 1


def _job_verb(store, args) -> int:
    """--status, --logs, --cancel: the same for every backend, through the job store."""
    job_id = args.status or args.logs or args.cancel
    record = job_api.cancel_job(store, job_id) if args.cancel else store.get(job_id)
    if args.logs:
        path = store.log_path(job_id)
        sys.stdout.write(path.read_text(errors="replace") if path.is_file() else "")
        return 0
    info = {"job_id": record.job_id, "action": record.action, "backend": record.backend, "status": record.status,
            "kpi": record.kpi, "error": record.error, "results_dir": str(store.results_dir(job_id))}
    print(json.dumps(info) if args.json else " ".join(f"{k}={v}" for k, v in info.items()))
    return 0


def _existing_action(store, job_id: str | None) -> str | None:
    """The action of an existing job (a resume), None for a new job id."""
    if not job_id or not (store.job_dir(job_id) / "job.json").is_file():
        return None
    return store.get(job_id).action


def _automl_argv(args) -> list[str]:
    argv = ["--skill", args.skill]
    for flag in ("train_dataset", "eval_dataset", "jobs_dir", "backend", "ptm", "ptm_sha256", "parent_job_id",
                 "job_id"):
        value = getattr(args, flag)
        if value:
            argv += ["--" + flag.replace("_", "-"), value]
    for kv in args.override:
        argv += ["--override", kv]
    for key, value in backend_options(args).items():   # as the direct route would hand them to the backend
        argv += ["--backend-option", f"{key}={json.dumps(value)}"]
    if args.json:
        argv.append("--json")
    if args.dry_run:
        argv.append("--dry-run")
    return argv


if __name__ == "__main__":
    sys.exit(main())
