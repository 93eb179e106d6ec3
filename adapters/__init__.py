"""Downstream task adapters: one module per task, each registered with :func:`register_task`.

A task module (``adapters/reid.py``, ...) reads like its paper's method section: head, loss,
sampler and augmentations, training glue, evaluation.  It registers a class with the
task's frozen :class:`TaskSpec` (datasets, metrics with their direction, protocol version,
the official λ)::

    @register_task(TaskSpec(name="reid", version=1, ...))
    class ReID(Task):
        def run(self, ctx): ...

Registration is lazy: ``import adapters`` imports no task module; the first lookup in
``TASKS`` imports them all (every public module of this package).
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

from bench.registry import Registry

# The six tasks of the SOLIDER tables, in the papers' order; ``--tasks all`` means these.
SOLIDER_TASKS = ("reid", "attribute", "search", "detection", "parsing", "pose")

# Tasks beyond the SOLIDER tables, run only when named (``--tasks reid_unsup``): unsupervised
# reID (adapters/reid_unsup.py), for VAL-PAT's unsupervised numbers, and text-based person
# search (adapters/text_search.py), VAL-PAT's third downstream task.
EXTRA_TASKS = ("reid_unsup", "text_search")

# Tasks still to come, and the issue that delivers each, so that asking for one says so.
PLANNED = {
    "reid": 7, "reid_unsup": 7, "attribute": 8, "search": 9, "detection": 10,
    "parsing": 11, "pose": 12, "text_search": 6,
}

# Modules of this package that are not tasks.
_NOT_TASKS = {"openmmlab"}


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool = True


@dataclass(frozen=True)
class TaskSpec:
    """What a task declares: every result row it produces carries ``name`` and ``version``.

    Bump ``version`` whenever a change could move a number (protocol, split, metric code),
    so rows from different protocols are never compared.
    """

    name: str
    version: int
    title: str
    paper: str  # the head's paper, as the SOLIDER tables cite it
    reference_code: str  # the official code whose behaviour the adapter follows
    datasets: tuple[str, ...]
    metrics: tuple[Metric, ...]
    semantic_weight: float | None = None  # the λ SOLIDER's code uses for this task
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def metric(self, name: str) -> Metric:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(f"task {self.name!r} declares no metric {name!r}")


def _discover() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_") and mod.name not in _NOT_TASKS:
            importlib.import_module(f"{__name__}.{mod.name}")


TASKS = Registry("task", loader=_discover)


def register_task(spec: TaskSpec) -> Callable[[type], type]:
    """Class decorator: register a task implementation under ``spec.name``."""

    def deco(cls: type) -> type:
        cls.spec = spec
        TASKS.add(spec.name, cls, spec=spec)
        return cls

    return deco


__all__ = ["EXTRA_TASKS", "Metric", "PLANNED", "SOLIDER_TASKS", "TASKS", "TaskSpec",
           "register_task"]
