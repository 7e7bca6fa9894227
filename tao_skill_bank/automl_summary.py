"""What an AutoML sweep writes as it goes: the trials as rows, summary.json / best_rec.json / summary.csv, the
metric-over-trials plot, and the table the runner prints."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import optuna

from . import atomic

_ATTRS = ("job_id", "rung", "rejected_by", "seconds", "error")   # trial bookkeeping, not searched values


def trial_rows(study: optuna.Study, metric: str) -> list[dict]:
    rows = []
    for t in study.trials:
        params = {k: v for k, v in t.params.items() if not k.endswith("#u")}
        params.update({k: v for k, v in t.user_attrs.items() if k not in _ATTRS})
        rows.append({"trial": t.number, "job_id": t.user_attrs.get("job_id"), "state": t.state.name.lower(),
                     "rung": t.user_attrs.get("rung", 0), metric: t.value, "params": params,
                     "seconds": t.user_attrs.get("seconds", 0.0),
                     "note": t.user_attrs.get("rejected_by") or t.user_attrs.get("error")})
    return rows


def pruning_savings(rows: list[dict], epochs: int) -> dict:
    """Trial-seconds spent, and those a pruned trial would have spent running to the last epoch at its own pace
    (what pruning saved; one trial holds one GPU, so these are GPU-seconds)."""
    spent = sum(r["seconds"] for r in rows)
    saved = sum(r["seconds"] / r["rung"] * (epochs - r["rung"]) for r in rows
                if r["state"] == "pruned" and r["rung"] and r["seconds"])
    return {"epochs_per_trial": epochs, "trial_seconds": round(spent, 1),
            "trial_seconds_saved_by_pruning": round(saved, 1)}


def write_summary(results: Path, summary: dict) -> None:
    """summary.json, best_rec.json (once a trial completed) and summary.csv, each written atomically."""
    metric, rows = summary["metric"], summary["trials"]
    atomic.write_json(results / "summary.json", summary)
    if summary["best_trial"] is not None:
        atomic.write_json(results / "best_rec.json", {"best_job_id": summary["best_job_id"],
                                                      "trial": summary["best_trial"], metric: summary["best_value"],
                                                      "params": rows[summary["best_trial"]]["params"]})
    with open(results / "summary.csv.tmp", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["trial", "state", "rung", metric, "job_id", "params"])
        for r in rows:
            writer.writerow([r["trial"], r["state"], r["rung"], r[metric], r["job_id"],
                             json.dumps(r["params"], sort_keys=True)])
    os.replace(results / "summary.csv.tmp", results / "summary.csv")


def plot_trials(path: Path, rows: list[dict], metric: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for state, marker in (("complete", "o"), ("pruned", "x"), ("fail", "s")):
        pts = [(r["trial"], r[metric]) for r in rows if r["state"] == state and r[metric] is not None]
        if pts:
            ax.scatter(*zip(*pts), marker=marker, label=state)
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name("." + path.name)
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, path)


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
