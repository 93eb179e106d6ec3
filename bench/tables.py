"""The SOLIDER paper's tables rebuilt: published numbers beside the measured ones.

``ablation``: rows task x dataset x metric; columns the four pretraining methods of the
paper's ablation (Sup/ImageNet, DINO, +Clustering, +Clustering&Controller on LUP1M, all
Swin-T), filled from runs of ``sup_swin_t``, ``dino_swin_t``, ``dinoclust_swin_t`` and
``solider_swin_t``.  ``sota``: one block per task, columns the paper's peer methods then
SOLIDER Swin-T/S/B, filled from runs of ``solider_swin_{t,s,b}``.

Every cell shows the published number and, where runs exist, the measured mean (of runs at
the task's official λ, the one the paper's numbers use) with the data kind it was measured on (a synthetic number is shown but never compared with a
published one).  The best published number of each row is marked (respecting the metric's
direction).  Tables are pivots of the tidy rows of :mod:`bench.results`; the renderers
below only format.
"""
from __future__ import annotations

import csv
import html
import io
import math
from dataclasses import dataclass, field

import pandas as pd

from bench.data import DATASETS

TASK_TITLES = {
    "reid": "Person re-identification (TransReID)", "attribute": "Attribute recognition (RethinkPAR)",
    "search": "Person search (SeqNet)", "detection": "Pedestrian detection (CSP)",
    "parsing": "Human parsing (SCHP)", "pose": "Pose estimation (HRFormer)",
}
ABLATION_COLUMNS = (  # (pretrain method, header, pretraining data)
    ("sup", "Sup", "ImageNet"), ("dino", "DINO", "LUP1M"),
    ("dinoclust", "+Clustering", "LUP1M"), ("solider", "+Clustering&Controller", "LUP1M"),
)
SOLIDER_ARCHS = (("swin_t", "SOLIDER Swin-T"), ("swin_s", "SOLIDER Swin-S"),
                 ("swin_b", "SOLIDER Swin-B"))


@dataclass
class Cell:
    published: float | None = None
    measured: float | None = None
    data_kind: str = ""
    runs: int = 0
    best: bool = False

    def text(self, digits: int) -> str:
        pub = "-" if self.published is None else f"{self.published:.{digits}f}"
        if self.measured is None:
            return pub
        return f"{pub} | {self.measured:.{digits}f} ({self.data_kind})"


@dataclass
class Row:
    task: str
    dataset: str
    metric: str
    higher_is_better: bool
    cells: list[Cell]
    digits: int = 1

    @property
    def label(self) -> str:
        arrow = "↑" if self.higher_is_better else "↓"
        return f"{DATASETS.get(self.dataset).meta['display']} {self.metric} {arrow}"


@dataclass
class Block:
    title: str
    columns: list[str]
    rows: list[Row] = field(default_factory=list)


def _digits(values) -> int:
    """As many decimals as the paper prints for this row (74.20 keeps two)."""
    return max((len(f"{v}".split(".")[1]) if "." in f"{v}" else 0) for v in values)


def _official_lambda(task: str) -> float | None:
    import adapters

    return adapters.TASKS.get(task).meta["spec"].semantic_weight if task in adapters.TASKS else None


def _measured(runs: pd.DataFrame, **match) -> tuple[float | None, str, int]:
    """Mean of the matching rows, at the task's official λ: the paper's numbers use it, so a
    run at another λ (a sweep, say) does not count here."""
    if runs is None or runs.empty:
        return None, "", 0
    sel = runs
    for k, v in match.items():
        sel = sel[sel[k] == v]
    lam = _official_lambda(match["task"])
    if lam is not None:
        sel = sel[sel["semantic_weight"].isna() | ((sel["semantic_weight"] - lam).abs() < 1e-9)]
    if sel.empty:
        return None, "", 0
    # prefer real data over synthetic when both exist; never mix them in one mean
    kind = "real" if (sel["data_kind"] == "real").any() else "synthetic"
    sel = sel[sel["data_kind"] == kind]
    return float(sel["value"].mean()), kind, int(sel["run_id"].nunique())


def _mark_best(row: Row) -> None:
    vals = [c.published for c in row.cells if c.published is not None]
    if not vals:
        return
    best = max(vals) if row.higher_is_better else min(vals)
    for c in row.cells:
        c.best = c.published is not None and math.isclose(c.published, best)


def ablation(published: pd.DataFrame, runs: pd.DataFrame | None = None) -> list[Block]:
    pub = published[(published["table"] == "ablation")
                     & published["source"].str.startswith("SOLIDER")]
    block = Block("SOLIDER ablation (Swin-T)",
                  [f"{h} ({d})" for _, h, d in ABLATION_COLUMNS])
    for (task, dataset, metric), grp in pub.groupby(["task", "dataset", "metric"], sort=False):
        higher = bool(grp["higher_is_better"].iloc[0])
        cells = []
        for method, _, _ in ABLATION_COLUMNS:
            hit = grp[grp["pretrain_method"] == method]
            value, kind, n = _measured(runs, task=task, dataset=dataset, metric=metric,
                                       backbone=f"{method}_swin_t")
            cells.append(Cell(float(hit["value"].iloc[0]) if len(hit) else None, value, kind, n))
        row = Row(task, dataset, metric, higher, cells, _digits(grp["value"]))
        _mark_best(row)
        block.rows.append(row)
    return [block]


def sota(published: pd.DataFrame, runs: pd.DataFrame | None = None) -> list[Block]:
    pub = published[(published["table"] == "sota") & published["source"].str.startswith("SOLIDER")]
    blocks = []
    for task, tgrp in pub.groupby("task", sort=False):
        peers = [m for m in dict.fromkeys(tgrp["method"]) if m != "SOLIDER"]
        block = Block(TASK_TITLES.get(task, task), peers + [t for _, t in SOLIDER_ARCHS])
        for (dataset, metric), grp in tgrp.groupby(["dataset", "metric"], sort=False):
            higher = bool(grp["higher_is_better"].iloc[0])
            cells = []
            for peer in peers:
                hit = grp[grp["method"] == peer]
                cells.append(Cell(float(hit["value"].iloc[0]) if len(hit) else None))
            for arch, _ in SOLIDER_ARCHS:
                hit = grp[(grp["method"] == "SOLIDER") & (grp["arch"] == arch)]
                value, kind, n = _measured(runs, task=task, dataset=dataset, metric=metric,
                                           backbone=f"solider_{arch}")
                cells.append(Cell(float(hit["value"].iloc[0]) if len(hit) else None, value, kind, n))
            row = Row(task, dataset, metric, higher, cells, _digits(grp["value"]))
            _mark_best(row)
            block.rows.append(row)
        blocks.append(block)
    return blocks


TABLES = {"ablation": ablation, "sota": sota}
LEGEND = ("cells: published | measured (data kind); ↑/↓ the metric's direction; "
          "the best published number of each row is marked")


# --------------------------------------------------------------------------------------
# Renderers
# --------------------------------------------------------------------------------------
def to_markdown(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        out.append(f"### {b.title}\n")
        out.append("| task | dataset / metric | " + " | ".join(b.columns) + " |")
        out.append("|---|---|" + "---|" * len(b.columns))
        for r in b.rows:
            cells = [(f"**{c.text(r.digits)}**" if c.best else c.text(r.digits)).replace("|", "\\|")
                     for c in r.cells]
            out.append(f"| {r.task} | {r.label} | " + " | ".join(cells) + " |")
        out.append("")
    out.append(f"_{LEGEND}_\n")
    return "\n".join(out)


def to_csv(blocks: list[Block]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["table", "task", "dataset", "metric", "higher_is_better", "column",
                "published", "measured", "data_kind", "runs", "best_published"])
    for b in blocks:
        for r in b.rows:
            for col, c in zip(b.columns, r.cells):
                w.writerow([b.title, r.task, r.dataset, r.metric, r.higher_is_better, col,
                            "" if c.published is None else c.published,
                            "" if c.measured is None else c.measured, c.data_kind, c.runs,
                            c.best])
    return buf.getvalue()


def to_html(blocks: list[Block]) -> str:
    parts = ["<!doctype html><meta charset='utf-8'><title>hcbench tables</title>",
             "<style>body{font-family:sans-serif}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
             "td:first-child,td:nth-child(2){text-align:left}.best{font-weight:bold}"
             ".m{color:#05a}</style>"]
    for b in blocks:
        parts.append(f"<h3>{html.escape(b.title)}</h3><table><tr><th>task</th>"
                     "<th>dataset / metric</th>"
                     + "".join(f"<th>{html.escape(c)}</th>" for c in b.columns) + "</tr>")
        for r in b.rows:
            tds = []
            for c in r.cells:
                pub = "-" if c.published is None else f"{c.published:.{r.digits}f}"
                m = ("" if c.measured is None else
                     f"<br><span class='m'>{c.measured:.{r.digits}f} ({c.data_kind})</span>")
                tds.append(f"<td class='{'best' if c.best else ''}'>{pub}{m}</td>")
            parts.append(f"<tr><td>{r.task}</td><td>{html.escape(r.label)}</td>{''.join(tds)}</tr>")
        parts.append("</table>")
    parts.append(f"<p><em>{html.escape(LEGEND)}</em></p>")
    return "\n".join(parts)


def render_rich(out, blocks: list[Block]) -> None:
    from rich.table import Table

    for b in blocks:
        t = Table(title=b.title, title_justify="left", caption=LEGEND)
        t.add_column("dataset / metric", no_wrap=True)
        for c in b.columns:
            t.add_column(c, justify="right")
        for r in b.rows:
            t.add_row(r.label, *[(f"[bold]{c.text(r.digits)}[/]" if c.best else c.text(r.digits))
                                 for c in r.cells])
        out.out.print(t)
