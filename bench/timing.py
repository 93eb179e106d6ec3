"""Where a run's wall time goes: phases timed by the code that does the work.

The runner opens a :func:`recording` for a ``bench run`` and times each task; the synthetic
world's writer and the pretraining that ``bench run`` starts time themselves with
:func:`phase`, which does nothing when no recording is open (``bench data make`` or
``bench pretrain`` on their own).  Phases nest: a phase's time is its own, less the phases
inside it, so the world written during pretraining counts as data generation and both are
taken out of the task that needed them.  ``run.json`` keeps the result as ``phases``
(``bench perf e2e`` reports it next to the wall time)::

    [{"phase": "data generation", "seconds": 41.2}, {"phase": "pretraining", "seconds": 310.0},
     {"phase": "task reid", "seconds": 95.3}, ...]
"""
from __future__ import annotations

import contextlib
import time
from typing import Iterator

DATA = "data generation"
PRETRAIN = "pretraining"


class Recorder:
    """Exclusive seconds per phase label, in the order labels first appear (data generation
    and pretraining always first, 0 if they did not happen)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {DATA: 0.0, PRETRAIN: 0.0}
        self._stack: list[list] = []  # [label, start, seconds of phases inside]

    @contextlib.contextmanager
    def phase(self, label: str) -> Iterator[None]:
        frame = [label, time.perf_counter(), 0.0]
        self._stack.append(frame)
        try:
            yield
        finally:
            self._stack.pop()
            total = time.perf_counter() - frame[1]
            if self._stack:
                self._stack[-1][2] += total
            self.seconds[label] = self.seconds.get(label, 0.0) + total - frame[2]

    def rows(self) -> list[dict]:
        return [{"phase": k, "seconds": round(v, 2)} for k, v in self.seconds.items()]


_open: list[Recorder] = []


@contextlib.contextmanager
def recording() -> Iterator[Recorder]:
    """Record the phases timed (anywhere in this process) until the block ends."""
    rec = Recorder()
    _open.append(rec)
    try:
        yield rec
    finally:
        _open.remove(rec)


@contextlib.contextmanager
def phase(label: str) -> Iterator[None]:
    """Time the block as ``label`` in every open recording (none open: nothing happens)."""
    with contextlib.ExitStack() as stack:
        for rec in list(_open):
            stack.enter_context(rec.phase(label))
        yield
