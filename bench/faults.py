"""Fault injection for the resume tests: die with SIGKILL at a named point of a run.

``HCBENCH_FAULT_KILL`` holds comma-separated points; the process kills itself (SIGKILL, no
cleanup, as a crash or an out-of-memory kill would) when it reaches one.  Points:

* ``<task>:step:<k>``   fine-tuning, right after optimizer step ``k`` (1-based, counted over
  the whole schedule of one dataset), before the epoch's state is saved;
* ``<task>:epoch:<e>``  fine-tuning, right after the state of epoch ``e`` is saved;
* ``<task>:eval``       after the task's training and evaluation, before its rows reach the
  results store;
* ``pretrain:step:<k>`` pretraining, right after optimizer step ``k`` (and its log line; the
  state is saved every ``save_every`` steps, so the point may fall before or after a save).

The legacy ``HCBENCH_FAULT_KILL_AFTER_EPOCH="<task>:<e>"`` means ``<task>:epoch:<e>``.
"""
from __future__ import annotations

import os
import signal

ENV = "HCBENCH_FAULT_KILL"
LEGACY_AFTER_EPOCH = "HCBENCH_FAULT_KILL_AFTER_EPOCH"


def _points() -> set[str]:
    points = {p.strip() for p in os.environ.get(ENV, "").split(",") if p.strip()}
    legacy = os.environ.get(LEGACY_AFTER_EPOCH)
    if legacy and ":" in legacy:
        task, _, epoch = legacy.rpartition(":")
        points.add(f"{task}:epoch:{epoch}")
    return points


def maybe_kill(point: str) -> None:
    """SIGKILL this process if ``point`` is one of the injected faults."""
    if (ENV in os.environ or LEGACY_AFTER_EPOCH in os.environ) and point in _points():
        os.kill(os.getpid(), signal.SIGKILL)
