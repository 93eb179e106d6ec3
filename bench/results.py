"""The results store: one folder per run, tidy metric rows, loaded as one DataFrame.

Layout (``<results_dir>`` is ``paths.results_dir`` of bench.toml, ``results/`` by default)::

    <results_dir>/runs/<run_id>/config.toml   the resolved config
                               env.json      torch version, device, git commit, command line
                               log.txt       the run's log
                               metrics.csv   tidy rows, columns ROW_COLUMNS
                               run.json      summary, written last: its presence marks the run complete
    <results_dir>/published/*.csv            published numbers (see load_published)

A run is written under ``<run_id>.partial/`` and renamed to ``<run_id>/`` when it
finishes, and every file goes through :mod:`bench.io`'s atomic writes, so a crash leaves
either a complete run or a ``.partial`` folder that :func:`load` ignores, never a torn
file.  Wide tables (the papers' layouts) are pivots of these rows; nothing here renders.
"""
from __future__ import annotations

import csv
import io
import json
import secrets
import time
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from bench.errors import BenchError
from bench.io import TMP_PREFIX, atomic_write_json, atomic_write_text

PARTIAL_SUFFIX = ".partial"
REPO_ROOT = Path(__file__).resolve().parent.parent
PUBLISHED_DIR = REPO_ROOT / "results" / "published"


@dataclass(frozen=True)
class MetricRow:
    """One measured number, with everything needed to compare it with another."""

    run_id: str
    backbone: str  # zoo name, e.g. solider_swin_s
    arch: str  # swin_t | swin_s | swin_b | test_*
    pretrain_method: str  # sup | dino | dinoclust | solider | clasp | valpat | random
    semantic_weight: float | None  # λ the backbone ran with (None: no controller)
    task: str
    task_version: int  # the task's protocol version
    dataset: str  # catalogue key (bench list datasets)
    split: str
    metric: str
    value: float
    higher_is_better: bool
    profile: str
    seed: int
    data_kind: str  # synthetic | real


ROW_COLUMNS = [f.name for f in fields(MetricRow)]
DATA_KINDS = ("synthetic", "real")


def new_run_id(backbone: str, when: float | None = None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(when))
    return f"{stamp}-{backbone}-{secrets.token_hex(3)}"


def rows_to_csv(rows: Iterable[MetricRow]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=ROW_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        d = asdict(r)
        d["semantic_weight"] = "" if r.semantic_weight is None else repr(r.semantic_weight)
        d["value"] = repr(float(r.value))
        w.writerow(d)
    return buf.getvalue()


class RunWriter:
    """Writes one run into the store; use as a context manager.

    On a clean exit the run is finalised (``run.json`` written, folder renamed from
    ``<run_id>.partial``); on an exception the partial folder stays, marked failed in its
    log, and :func:`load` never sees it.
    """

    def __init__(self, results_dir: str | Path, run_id: str, *, config_toml: str,
                 env: dict, meta: dict | None = None, resume: bool = False):
        self.runs_dir = Path(results_dir) / "runs"
        self.run_id = run_id
        self.final_dir = self.runs_dir / run_id
        self.dir = self.runs_dir / (run_id + PARTIAL_SUFFIX)
        if self.final_dir.exists():
            raise BenchError(f"{self.final_dir}: a finished run with this id already exists")
        self.meta = dict(meta or {})
        self.rows: list[MetricRow] = []
        self._log_lines: list[str] = []
        self.started = time.time()
        if resume:  # an interrupted run: keep its config, rows and log; note the resumption
            if not self.dir.is_dir():
                raise BenchError(f"{self.dir}: no unfinished run to resume")
            if (self.dir / "metrics.csv").is_file():
                self.rows = read_rows(self.dir / "metrics.csv")
            if (self.dir / "log.txt").is_file():
                self._log_lines = (self.dir / "log.txt").read_text().splitlines()
            old = json.loads((self.dir / "env.json").read_text()) if (self.dir / "env.json").is_file() else {}
            env = {**old, "resumed": [*old.get("resumed", []), env]}
            atomic_write_json(self.dir / "env.json", env)
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.dir / "config.toml", config_toml)
        atomic_write_json(self.dir / "env.json", env)

    def log(self, message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self._log_lines.append(f"{stamp} {message}")
        atomic_write_text(self.dir / "log.txt", "\n".join(self._log_lines) + "\n")

    def add_rows(self, rows: Sequence[MetricRow]) -> None:
        for r in rows:
            if r.run_id != self.run_id:
                raise ValueError(f"row for run {r.run_id!r} given to run {self.run_id!r}")
        self.rows.extend(rows)
        atomic_write_text(self.dir / "metrics.csv", rows_to_csv(self.rows))

    def finish(self, status: str = "complete") -> Path:
        atomic_write_text(self.dir / "metrics.csv", rows_to_csv(self.rows))
        summary = {**self.meta, "run_id": self.run_id, "status": status,
                   "started": self.started, "finished": time.time(), "rows": len(self.rows)}
        atomic_write_json(self.dir / "run.json", summary)
        self.dir.rename(self.final_dir)  # same folder, atomic
        self.dir = self.final_dir
        return self.final_dir

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.log(f"run stopped: {exc_type.__name__}: {exc}")


def _empty_runs() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in _DTYPES.items()})


_DTYPES = {
    "run_id": "string", "backbone": "string", "arch": "string", "pretrain_method": "string",
    "semantic_weight": "float64", "task": "string", "task_version": "int64",
    "dataset": "string", "split": "string", "metric": "string", "value": "float64",
    "higher_is_better": "bool", "profile": "string", "seed": "int64", "data_kind": "string",
}


def load(results_dir: str | Path | None = None) -> pd.DataFrame:
    """Every finished run in the store as one tidy DataFrame (columns ``ROW_COLUMNS``).

    Unfinished (``.partial``) runs are ignored; a damaged run folder is reported with a
    warning and skipped; ``df.attrs["skipped"]`` lists them.
    """
    runs_dir = Path(results_dir if results_dir is not None else REPO_ROOT / "results") / "runs"
    frames, skipped = [], []
    if runs_dir.is_dir():
        for d in sorted(runs_dir.iterdir()):
            if (not d.is_dir() or d.name.endswith(PARTIAL_SUFFIX)
                    or d.name.startswith((TMP_PREFIX, "."))):
                continue
            try:
                frames.append(_read_run(d))
            except BenchError as e:
                skipped.append(str(d))
                warnings.warn(str(e), stacklevel=2)
    df = pd.concat(frames, ignore_index=True) if frames else _empty_runs()
    df.attrs["skipped"] = skipped
    return df


def _read_run(d: Path) -> pd.DataFrame:
    if not (d / "run.json").is_file():
        raise BenchError(f"{d}: damaged run (no run.json), skipped")
    path = d / "metrics.csv"
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise BenchError(f"{path}: unreadable metrics ({e}), run skipped") from None
    missing = [c for c in ROW_COLUMNS if c not in df.columns]
    if missing:
        raise BenchError(f"{path}: missing columns {missing}, run skipped")
    df = df[ROW_COLUMNS].copy()
    try:
        df["semantic_weight"] = pd.to_numeric(df["semantic_weight"].replace("", None))
        df["value"] = pd.to_numeric(df["value"])
        df["task_version"] = pd.to_numeric(df["task_version"]).astype("int64")
        df["seed"] = pd.to_numeric(df["seed"]).astype("int64")
        bools = df["higher_is_better"].map({"True": True, "False": False})
        if bools.isna().any():
            raise ValueError("higher_is_better must be True or False")
        df["higher_is_better"] = bools.astype(bool)
    except ValueError as e:
        raise BenchError(f"{path}: malformed value ({e}), run skipped") from None
    return df.astype(_DTYPES)


def read_rows(path: Path) -> list[MetricRow]:
    """The metric rows of one metrics.csv, as written by :class:`RunWriter`."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    out = []
    for r in df.to_dict("records"):
        out.append(MetricRow(
            run_id=r["run_id"], backbone=r["backbone"], arch=r["arch"],
            pretrain_method=r["pretrain_method"],
            semantic_weight=None if r["semantic_weight"] == "" else float(r["semantic_weight"]),
            task=r["task"], task_version=int(r["task_version"]), dataset=r["dataset"],
            split=r["split"], metric=r["metric"], value=float(r["value"]),
            higher_is_better=r["higher_is_better"] == "True", profile=r["profile"],
            seed=int(r["seed"]), data_kind=r["data_kind"]))
    return out


def unfinished_runs(results_dir: str | Path) -> list[Path]:
    """Partial run folders, oldest first (run ids start with a UTC timestamp)."""
    runs_dir = Path(results_dir) / "runs"
    return sorted(runs_dir.glob(f"*{PARTIAL_SUFFIX}")) if runs_dir.is_dir() else []


def read_run_summary(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / "run.json").read_text())


# --------------------------------------------------------------------------------------
# Published numbers
# --------------------------------------------------------------------------------------
PUBLISHED_COLUMNS = [
    "source", "table", "task", "dataset", "metric", "higher_is_better", "method",
    "pretrain_method", "arch", "pretrain_data", "head", "value", "data_kind", "note",
]


def load_published(published_dir: str | Path | None = None) -> pd.DataFrame:
    """Published numbers from ``results/published/*.csv`` as one tidy DataFrame.

    Columns ``PUBLISHED_COLUMNS``; ``task``, ``dataset``, ``metric``, ``value``,
    ``higher_is_better``, ``arch``, ``pretrain_method`` and ``data_kind`` mean the same as
    in :func:`load`, so measured and published rows join on them.
    """
    d = Path(published_dir) if published_dir is not None else PUBLISHED_DIR
    files = sorted(d.glob("*.csv"))
    if not files:
        raise BenchError(f"{d}: no published numbers found (expected *.csv files)")
    frames = []
    for f in files:
        df = pd.read_csv(f, dtype=str, keep_default_na=False)
        missing = [c for c in PUBLISHED_COLUMNS if c not in df.columns]
        if missing:
            raise BenchError(f"{f}: missing columns {missing}")
        frames.append(df[PUBLISHED_COLUMNS])
    df = pd.concat(frames, ignore_index=True)
    df["value"] = pd.to_numeric(df["value"])
    df["higher_is_better"] = df["higher_is_better"].map({"True": True, "False": False}).astype(bool)
    return df
