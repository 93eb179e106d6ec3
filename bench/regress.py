"""``bench regress``: measured rows against reference rows, respecting each metric's direction.

Two kinds of reference:

- **golden** (``results/golden/*.csv``): numbers of our own suite at a fixed seed, written
  on purpose with ``bench regress --update-golden``.  A measured row is compared with the
  golden row of the same task, protocol version, dataset, split, metric, backbone, λ,
  profile, seed and data kind.  CI regresses the smoke suite against these.
- **published** (``results/published/*.csv``): the papers' numbers.  A measured row is
  compared with the published row of the same task, dataset, metric, pretraining method and
  architecture, and only when it was measured on real data: a synthetic number is never
  compared with a published one.

When several runs measured the same thing, the latest run counts.  A row regresses when it
is worse than its reference by more than the tolerance (absolute, in the metric's units);
being better never fails.

Golden numbers hold exactly only on the kind of CPU that wrote them (another kernel family
sums in another order, and a near-chance number on a few dozen test images moves by
points), so ``--update-golden`` writes the writer's machine (:func:`machine`) beside the file
as ``<name>.machine.json``, and :func:`golden_machine_differs` says when this one is another.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.errors import BenchError
from bench.io import atomic_write_json, atomic_write_text
from bench.results import REPO_ROOT, ROW_COLUMNS

GOLDEN_DIR = REPO_ROOT / "results" / "golden"
GOLDEN_KEYS = ["task", "task_version", "dataset", "split", "metric", "backbone",
               "semantic_weight", "profile", "seed", "data_kind"]
PUBLISHED_KEYS = ["task", "dataset", "metric", "pretrain_method", "arch"]
GOLDEN_COLUMNS = GOLDEN_KEYS + ["arch", "pretrain_method", "higher_is_better", "value"]


@dataclass(frozen=True)
class Comparison:
    table: pd.DataFrame  # one row per compared pair: keys, reference, measured, diff, status
    regressions: int

    @property
    def ok(self) -> bool:
        return self.regressions == 0


def latest(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per key: the one of the latest run (run ids start with a UTC timestamp)."""
    if runs.empty:
        return runs
    return (runs.sort_values("run_id").groupby(keys, dropna=False, sort=False).tail(1)
            .reset_index(drop=True))


def golden_files(path: str | Path | None = None) -> list[Path]:
    """``path``, or every golden file of the repository."""
    return [Path(path)] if path else sorted(GOLDEN_DIR.glob("*.csv"))


def load_golden(path: str | Path | None = None) -> pd.DataFrame:
    files = golden_files(path)
    if not files or not all(f.is_file() for f in files):
        raise BenchError(f"{path or GOLDEN_DIR}: no golden numbers found")
    frames = []
    for f in files:
        df = pd.read_csv(f)
        missing = [c for c in GOLDEN_COLUMNS if c not in df.columns]
        if missing:
            raise BenchError(f"{f}: missing columns {missing}")
        frames.append(df[GOLDEN_COLUMNS])
    return pd.concat(frames, ignore_index=True)


def compare(runs: pd.DataFrame, against: str = "golden", tolerance: float = 0.5,
            golden: str | Path | None = None, published: pd.DataFrame | None = None) -> Comparison:
    if runs.empty:
        raise BenchError("no finished run in the results store to compare")
    if against == "golden":
        ref, keys = load_golden(golden), GOLDEN_KEYS
        measured = latest(runs, keys)
    elif against == "published":
        from bench.results import load_published

        ref = published if published is not None else load_published()
        keys = PUBLISHED_KEYS
        measured = latest(runs[runs["data_kind"] == "real"], keys + ["data_kind"])
        ref = ref[ref["data_kind"] == "real"]
    else:
        raise BenchError(f"--against must be golden or published, got {against!r}")
    ref = ref.copy()
    measured = measured.copy()
    for df in (ref, measured):
        if "semantic_weight" in df:
            df["semantic_weight"] = pd.to_numeric(df["semantic_weight"]).round(6)
    merged = measured.merge(ref[keys + ["value", "higher_is_better"]], on=keys,
                            suffixes=("", "_ref"), how="inner")
    if merged.empty:
        raise BenchError(f"no measured row matches a {against} row (matched on "
                         f"{', '.join(keys)}{'; only real-data runs count' if against == 'published' else ''})")
    higher = merged["higher_is_better_ref"].astype(bool)
    diff = merged["value"] - merged["value_ref"]
    worse = (-diff).where(higher, diff)  # how much worse than the reference
    merged["diff"] = diff
    merged["status"] = ["regressed" if w > tolerance else "ok" for w in worse]
    cols = [k for k in keys if k in merged] + ["value_ref", "value", "diff", "status"]
    table = merged[cols].rename(columns={"value_ref": "reference", "value": "measured"})
    return Comparison(table, int((merged["status"] == "regressed").sum()))


def golden_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """The latest measured rows, as a golden file holds them."""
    return latest(runs, GOLDEN_KEYS)[GOLDEN_COLUMNS].sort_values(GOLDEN_KEYS)


def write_golden(runs: pd.DataFrame, path: str | Path) -> Path:
    """Write the golden rows and, beside them, the machine they were measured on (run the
    suite and this on the same machine)."""
    if runs.empty:
        raise BenchError("no finished run to write golden numbers from")
    out = atomic_write_text(path, golden_rows(runs).to_csv(index=False))
    atomic_write_json(machine_path(path), machine())
    return out


def machine() -> dict[str, str]:
    """What golden numbers depend on besides the code: the CPU kernel family torch
    dispatches to (AVX2, AVX512, ...) and the torch version."""
    import torch

    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__}


def machine_path(golden: str | Path) -> Path:
    return Path(golden).with_suffix(".machine.json")


def golden_machine_differs(golden: str | Path) -> str | None:
    """None when this machine is the kind that wrote ``golden``; else a sentence saying how
    they differ (also when the file has no machine record)."""
    path = machine_path(golden)
    try:
        theirs = json.loads(path.read_text())
    except FileNotFoundError:
        return f"{path}: no record of the machine that wrote {Path(golden).name}"
    except (OSError, json.JSONDecodeError) as e:
        raise BenchError(f"{path}: unreadable machine record ({e})") from None
    mine = machine()
    diff = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
    if not diff:
        return None
    return ("golden numbers written on " + ", ".join(f"{k} {a}" for k, (a, _) in diff.items())
            + "; this machine has " + ", ".join(f"{k} {b}" for k, (_, b) in diff.items()))


__all__ = ["Comparison", "GOLDEN_DIR", "ROW_COLUMNS", "compare", "golden_files",
           "golden_machine_differs", "golden_rows", "latest", "load_golden", "machine",
           "machine_path", "write_golden"]
