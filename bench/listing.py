"""``bench list``: the registries and the config's profiles as rows (dicts), then as tables."""
from __future__ import annotations

import fnmatch
from typing import Any, Callable

from bench.config import Config
from bench.console import Output

Rows = list[dict[str, Any]]


def backbones(cfg: Config, pattern: str | None) -> Rows:
    from backbones import BACKBONES

    rows = []
    for name in BACKBONES.names(pattern):
        meta = BACKBONES.get(name).meta
        rows.append({
            "name": name, "arch": meta.get("arch", ""),
            "pretrain": meta.get("pretrain_method", ""),
            "controller": bool(meta.get("semantic_controller", False)),
            "weights": cfg.backbone(name).weights,
            "paper": meta.get("paper", ""),
        })
    return rows


def tasks(cfg: Config, pattern: str | None) -> Rows:
    from adapters import TASKS

    rows = []
    for name in TASKS.names(pattern):
        spec = TASKS.get(name).meta["spec"]
        rows.append({
            "name": name, "version": spec.version, "title": spec.title, "head": spec.paper,
            "datasets": list(spec.datasets),
            "metrics": [m.name + (" ↑" if m.higher_is_better else " ↓") for m in spec.metrics],
            "lambda": spec.semantic_weight,
        })
    return rows


def datasets(cfg: Config, pattern: str | None) -> Rows:
    from bench.data import DATASETS

    rows = []
    for key in DATASETS.names(pattern):
        spec = DATASETS.get(key).obj
        conf = cfg.data.datasets.get(key)
        rows.append({
            "key": key, "name": spec.display, "task": spec.task, "format": spec.format,
            "root": conf.root if conf and conf.root else "(synthetic)",
            "reader": "yes" if spec.load_reader() else "not yet",
        })
    return rows


def profiles(cfg: Config, pattern: str | None) -> Rows:
    return [{"name": name, "precision": p.precision, "synthetic": p.synthetic_size,
             "budget_min": p.budget_minutes, "description": p.description}
            for name, p in sorted(cfg.profiles.items())
            if not pattern or fnmatch.fnmatchcase(name, pattern)]


SECTIONS: dict[str, Callable[[Config, str | None], Rows]] = {
    "backbones": backbones, "tasks": tasks, "datasets": datasets, "profiles": profiles,
}

_EMPTY = {
    "backbones": "no backbone is registered yet (the zoo lands with issue 4)",
    "tasks": "no task is registered yet (the adapters land with issues 7-12)",
}


def render(out: Output, section: str, rows: Rows) -> None:
    if not rows:
        out.out.print(f"[bold]{section}[/]: {_EMPTY.get(section, 'none')}")
        return
    columns = list(rows[0])
    out.table(section, columns, ([_cell(r[c]) for c in columns] for r in rows))


def _cell(v: Any) -> str:
    if isinstance(v, list):
        return ", ".join(map(str, v))
    if isinstance(v, bool):
        return "yes" if v else "no"
    return "" if v is None else str(v)
