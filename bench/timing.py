"""Where a run's wall time goes: phases timed by the code that does the work.

The runner opens a :func:`recording` for a ``bench run`` and times each task; the synthetic
world's writer and the pretraining that ``bench run`` starts time themselves with
:func:`phase`, which does nothing when no recording is open (``bench data make`` or
``bench pretrain`` on their own).  Phases nest: a phase's time is its own, less the phases
inside it, so the world written during pretraining counts as data generation and both are
taken out of the task that needed them.  ``run.json`` keeps the result as ``phases``
(``bench perf e2e`` reports it next to the wall time)::

    [{"phase": "data generation", "seconds": 41.2, "peak_rss_mb": 812.4},
     {"phase": "pretraining", "seconds": 310.0, "peak_rss_mb": 7102.9}, ...]

Each phase also records the peak resident memory of the process during its own time
(``peak_rss_mb``, on Linux: the kernel's high-water mark ``VmHWM``, reset through
``/proc/self/clear_refs`` when a phase starts or ends, so a phase inside another is not
counted in the outer one), and on CUDA the peak allocated GPU memory (``peak_gpu_mb``).
Where the process cannot read or reset its high-water mark the field is left out.
"""
from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Iterator

DATA = "data generation"
PRETRAIN = "pretraining"


class Recorder:
    """Exclusive seconds and peak memory per phase label, in the order labels first appear
    (data generation and pretraining always first, 0 s if they did not happen)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {DATA: 0.0, PRETRAIN: 0.0}
        self.peaks: dict[str, dict[str, float]] = {}
        self._stack: list[list] = []  # [label, start, seconds of phases inside, peaks so far]

    @contextlib.contextmanager
    def phase(self, label: str) -> Iterator[None]:
        if self._stack:  # the outer phase's own peak so far, before the inner one resets it
            _fold(self._stack[-1][3], peak_memory(reset=True))
        else:
            peak_memory(reset=True)
        frame = [label, time.perf_counter(), 0.0, {}]
        self._stack.append(frame)
        try:
            yield
        finally:
            self._stack.pop()
            total = time.perf_counter() - frame[1]
            if self._stack:
                self._stack[-1][2] += total
            self.seconds[label] = self.seconds.get(label, 0.0) + total - frame[2]
            _fold(frame[3], peak_memory(reset=True))
            _fold(self.peaks.setdefault(label, {}), frame[3])

    def rows(self) -> list[dict]:
        return [{"phase": k, "seconds": round(v, 2),
                 **{m: round(x, 1) for m, x in self.peaks.get(k, {}).items()}}
                for k, v in self.seconds.items()]


def _fold(into: dict[str, float], peaks: dict[str, float]) -> None:
    for k, v in peaks.items():
        into[k] = max(into.get(k, 0.0), v)


def peak_memory(reset: bool = False) -> dict[str, float]:
    """The process's peak memory (MB) since the last reset: ``peak_rss_mb`` (Linux
    ``VmHWM``) and, once CUDA is in use, ``peak_gpu_mb`` (allocated on the current device);
    ``reset`` starts the next interval.  What cannot be read is left out."""
    out: dict[str, float] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                out["peak_rss_mb"] = int(line.split()[1]) / 1024  # kB
        if reset:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    except (OSError, ValueError, IndexError):
        out.pop("peak_rss_mb", None)
    torch = sys.modules.get("torch")  # never import torch (or start CUDA) just to ask
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        if reset:
            torch.cuda.reset_peak_memory_stats()
    return out


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
