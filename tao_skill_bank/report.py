"""A job's report: one self-contained HTML page (no script, no network) beside its results.

    results/report.html: the job's record, its status timeline, its metrics (per class where the engine
    wrote them), training curves from status.json (losses, KPI, images/s per epoch) and, for an AutoML
    job, its trials (KPI by trial, pruned ones marked, the best one's parameters).

Generic over skills: it reads the job store's files (job.json, status.json, metrics.json, summary.json), not
the engine.
"""
from __future__ import annotations

import html
import json
import time
from pathlib import Path

from . import atomic
from .jobs import JobStore, read_status

STYLE = """body{font:14px system-ui,sans-serif;margin:24px;color:#222}h1{font-size:20px}
h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}.failed,.cancelled{color:#b00}.done{color:#070}.pruned{color:#888}.best{background:#eef8ee}
svg{border:1px solid #ddd;margin:4px 12px 4px 0}.muted{color:#777}"""


def write_report(store: JobStore, job_id: str, record=None) -> Path:
    """record: the job's final record when it is not saved yet (the supervisor writes the report first)."""
    record = record or store.get(job_id)
    results = store.results_dir(job_id)
    events = read_status(results)
    parts = [f"<h1>{_e(record.job_id)}</h1>", _record_table(record)]
    metrics = _read_json(results / "metrics.json")
    if metrics:
        parts.append("<h2>Metrics</h2>" + _metrics(metrics))
    epochs = [e for e in events if e.get("event") == "epoch"]
    if epochs:
        parts.append("<h2>Training</h2>" + _curves(epochs))
    summary = _read_json(results / "summary.json")
    if summary and "trials" in summary:
        parts.append("<h2>Trials</h2>" + _trials(summary))
    pages = sorted((results / "predictions").glob("**/*.html")) if (results / "predictions").is_dir() else []
    if pages:   # the scene pages an inference job wrote, relative links: the results dir moves as one
        links = "".join(f"<li><a href='{_e(p.relative_to(results).as_posix())}'>{_e(p.relative_to(results))}</a></li>"
                        for p in pages[:200])
        more = f"<p>and {len(pages) - 200} more in predictions/</p>" if len(pages) > 200 else ""
        parts.append(f"<h2>Scene pages</h2><ul>{links}</ul>{more}")
    if events:
        parts.append("<h2>Status timeline</h2>" + _timeline(events))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(job_id)}</title><style>{STYLE}</style>"
            f"</head><body>{''.join(parts)}</body></html>\n")
    path = results / "report.html"
    atomic.write_text(path, page)
    return path


def _e(value) -> str:
    return html.escape(str(value))


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _when(t) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else ""


def _record_table(record) -> str:
    duration = (record.finished_at - record.started_at) if record.finished_at and record.started_at else None
    rows = [("action", record.action), ("status", f"<span class='{_e(record.status)}'>{_e(record.status)}</span>"),
            ("backend", _e(record.backend)), ("parent", _e(record.parent_job_id or "")),
            ("created", _when(record.created_at)), ("started", _when(record.started_at)),
            ("finished", _when(record.finished_at)),
            ("duration", f"{duration:.0f} s" if duration is not None else ""), ("KPI", _e(record.kpi)),
            ("error", _e(record.error or ""))]
    return "<table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _number(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else _e(v)


def _metrics(metrics: dict) -> str:
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    out = "<table><tr><th>metric</th><th>value</th></tr>" + "".join(
        f"<tr><td>{_e(k)}</td><td>{_number(v)}</td></tr>" for k, v in scalars.items()) + "</table>"
    for key, table in metrics.items():
        if isinstance(table, dict) and table and all(isinstance(v, dict) for v in table.values()):
            columns = list(next(iter(table.values())))
            out += f"<p><b>{_e(key)}</b></p><table><tr><th>class</th>" + "".join(
                f"<th>{_e(c)}</th>" for c in columns) + "</tr>" + "".join(
                f"<tr><td>{_e(name)}</td>" + "".join(f"<td>{_number(row.get(c))}</td>" for c in columns) + "</tr>"
                for name, row in table.items()) + "</table>"
    return out


def _series(epochs: list[dict]) -> dict[str, list[tuple[float, float]]]:
    series: dict[str, list] = {}
    for e in epochs:
        values = {**{f"loss: {k}": v for k, v in (e.get("losses") or {}).items()},
                  **{k: e.get(k) for k in ("kpi", "images_per_s")}}
        for name, value in values.items():
            if isinstance(value, (int, float)):
                series.setdefault(name, []).append((float(e["epoch"]), float(value)))
    return series


def _curves(epochs: list[dict]) -> str:
    series = _series(epochs)
    wanted = [k for k in ("loss: loss", "kpi", "images_per_s") if k in series] or list(series)[:3]
    return "".join(svg_line(name, series[name]) for name in wanted)


def svg_line(title: str, points: list[tuple[float, float]], width: int = 320, height: int = 180,
             marks: list[str] | None = None) -> str:
    """A small chart: a line through the points (or dots, one class per mark when marks are given)."""
    pad = 34
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

    def at(x, y):
        return (pad + (x - x0) / (x1 - x0) * (width - 2 * pad),
                height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad))

    coords = [at(x, y) for x, y in points]
    body = f"<text x='{pad}' y='16'>{_e(title)}</text>"
    body += (f"<text x='4' y='{pad}' class='muted'>{y1:.3g}</text><text x='4' y='{height - pad}' class='muted'>"
             f"{y0:.3g}</text><text x='{pad}' y='{height - 8}' class='muted'>{x0:g}</text>"
             f"<text x='{width - pad}' y='{height - 8}' class='muted'>{x1:g}</text>")
    if marks is None:
        body += "<polyline fill='none' stroke='#1f77b4' stroke-width='2' points='" + " ".join(
            f"{x:.1f},{y:.1f}" for x, y in coords) + "'/>"
    for (x, y), mark in zip(coords, marks or ["point"] * len(coords)):
        colour = {"pruned": "#999", "best": "#2a2", "fail": "#b00"}.get(mark, "#1f77b4")
        body += f"<circle class='{_e(mark)}' cx='{x:.1f}' cy='{y:.1f}' r='3.5' fill='{colour}'/>"
    return f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}'>{body}</svg>"


def _trials(summary: dict) -> str:
    metric = summary.get("metric", "kpi")
    best = summary.get("best_trial")
    rows = summary["trials"]
    scored = [(float(r["trial"]), r[metric]) for r in rows if isinstance(r.get(metric), (int, float))]
    marks = ["best" if r["trial"] == best else r["state"] for r in rows if isinstance(r.get(metric), (int, float))]
    chart = svg_line(f"{metric} by trial", scored, marks=marks) if scored else ""
    table = f"<table><tr><th>trial</th><th>state</th><th>rung</th><th>{_e(metric)}</th><th>job</th><th>params</th></tr>"
    for r in rows:
        cls = "best" if r["trial"] == best else r["state"]
        table += (f"<tr class='{_e(cls)}'><td>{r['trial']}</td><td>{_e(r['state'])}</td><td>{_e(r.get('rung', ''))}"
                  f"</td><td>{_number(r.get(metric))}</td><td>{_e(r.get('job_id') or '')}</td>"
                  f"<td>{_e(json.dumps(r.get('params', {}), sort_keys=True))}</td></tr>")
    return chart + table + "</table>" + (f"<p>best: trial {best}, {_e(metric)} = {_number(summary.get('best_value'))}"
                                         "</p>" if best is not None else "")


def _timeline(events: list[dict], limit: int = 300) -> str:
    rows = events[-limit:]
    out = "<table><tr><th>time</th><th>event</th><th>details</th></tr>"
    for e in rows:
        details = {k: v for k, v in e.items() if k not in ("event", "time", "elapsed_s") and not isinstance(v, dict)}
        out += (f"<tr class='{_e(e.get('event', ''))}'><td>{_when(e.get('time'))}</td><td>{_e(e.get('event', ''))}"
                f"</td><td>{_e(json.dumps(details, sort_keys=True)[:300])}</td></tr>")
    return out + "</table>"
