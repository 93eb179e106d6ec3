"""Paired bootstrap of two predictions of the same test items (``bench eval --baseline``).

Both predictions are scored on the same resamples of the items (drawn with replacement), so
the interval is that of their difference, not of either score.  Every task that compares
runs this way returns the rows :func:`summarize` builds, which the CLI prints.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np


def resamples_of(n: int, resamples: int, seed: int = 0) -> np.ndarray:
    """``(resamples, n)`` item indices, each row one resample with replacement."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def summarize(full_a: Mapping[str, float], full_b: Mapping[str, float],
              diffs: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """``{metric: {a, b, diff, lo, hi}}`` in percent from fractions: a and b on all items,
    (lo, hi) the 2.5 and 97.5 percentiles of the per-resample differences a − b."""
    out = {}
    for k in full_a:
        lo, hi = np.percentile(diffs[k], [2.5, 97.5])
        out[k] = {"a": 100 * float(full_a[k]), "b": 100 * float(full_b[k]),
                  "diff": 100 * float(full_a[k] - full_b[k]),
                  "lo": 100 * float(lo), "hi": 100 * float(hi)}
    return out


__all__ = ["resamples_of", "summarize"]
