"""``bench report <run>``: one self-contained HTML page for one run.

The page holds the run's summary (backbone, profile, tasks, environment, git commit), its
metric rows as a table with the published numbers of the same task, dataset and metric
beside them (labelled as published; synthetic runs are shown, not compared), one bar chart
per task (PNG, embedded as base64, so the file can be mailed or attached to CI), the
resolved config and the log.  Nothing is computed here that the results store does not hold.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import pandas as pd

from bench import results
from bench.errors import BenchError
from bench.io import atomic_write_text


def find_run(results_dir: Path, run: str) -> Path:
    """A run folder by path, full id or unique id prefix."""
    p = Path(run)
    if p.is_dir() and (p / "run.json").is_file():
        return p
    runs_dir = Path(results_dir) / "runs"
    hits = sorted(d for d in runs_dir.glob(f"{run}*") if d.is_dir() and (d / "run.json").is_file())
    if len(hits) != 1:
        raise BenchError(f"{runs_dir}: {'no' if not hits else len(hits)} finished run(s) match "
                         f"{run!r}" + ("" if not hits else f" ({', '.join(h.name for h in hits)})"))
    return hits[0]


def _plot(task: str, rows: pd.DataFrame) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 2.8), dpi=100)
    labels = [f"{d}\n{m} {'↑' if h else '↓'}" for d, m, h in
              zip(rows["dataset"], rows["metric"], rows["higher_is_better"])]
    ax.bar(range(len(rows)), rows["value"], color="#3b7dd8")
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_title(task)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def build(run_dir: Path) -> str:
    summary = results.read_run_summary(run_dir)
    env = json.loads((run_dir / "env.json").read_text())
    rows = results._read_run(run_dir)
    pub = results.load_published()
    esc = html.escape
    parts = [
        "<!doctype html><meta charset='utf-8'>",
        f"<title>hcbench run {esc(run_dir.name)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:"
        "collapse}td,th{border:1px solid #ccc;padding:3px 8px}td.n{text-align:right}"
        "pre{background:#f6f6f6;padding:8px;overflow:auto;max-height:400px}</style>",
        f"<h1>Run {esc(run_dir.name)}</h1>",
        "<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in [
            ("backbone", summary.get("backbone")), ("profile", summary.get("profile")),
            ("tasks", ", ".join(summary.get("tasks", []))), ("seed", summary.get("seed")),
            ("status", summary.get("status")), ("rows", summary.get("rows")),
            ("torch", env.get("torch")), ("device", env.get("device")),
            ("git commit", (env.get("git") or {}).get("commit")),
            ("data", ", ".join(sorted(rows["data_kind"].unique())) if len(rows) else "")]) +
        "</table>",
        "<h2>Metrics</h2><table><tr><th>task</th><th>dataset</th><th>split</th><th>metric</th>"
        "<th>value</th><th>λ</th><th>data</th><th>published (paper, real data)</th></tr>",
    ]
    for r in rows.itertuples(index=False):
        p = pub[(pub["task"] == r.task) & (pub["dataset"] == r.dataset) & (pub["metric"] == r.metric)
                & (pub["pretrain_method"] == r.pretrain_method) & (pub["arch"] == r.arch)]
        pub_text = ", ".join(f"{v:g} ({t})" for v, t in zip(p["value"], p["table"])) or "-"
        lam = "" if pd.isna(r.semantic_weight) else f"{r.semantic_weight:g}"
        parts.append(f"<tr><td>{esc(r.task)}</td><td>{esc(r.dataset)}</td><td>{esc(r.split)}</td>"
                     f"<td>{esc(r.metric)} {'↑' if r.higher_is_better else '↓'}</td>"
                     f"<td class=n>{r.value:.4g}</td><td>{lam}</td><td>{esc(r.data_kind)}</td>"
                     f"<td>{esc(pub_text)}</td></tr>")
    parts.append("</table><p><em>Synthetic numbers are shown beside published ones, never "
                 "compared with them.</em></p>")
    for task, g in rows.groupby("task", sort=False):
        parts.append(f"<h3>{esc(task)}</h3><img alt='{esc(task)}' "
                     f"src='data:image/png;base64,{_plot(task, g)}'>")
    for name, title in (("config.toml", "Resolved config"), ("log.txt", "Log")):
        f = run_dir / name
        if f.is_file():
            parts.append(f"<h2>{title}</h2><pre>{esc(f.read_text())}</pre>")
    return "\n".join(parts)


def write(run_dir: Path, dest: Path | None = None) -> Path:
    dest = dest or run_dir / "report.html"
    return atomic_write_text(dest, build(run_dir))
