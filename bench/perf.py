"""``bench perf``: speed measurements, each printed side by side with what it is compared to.

Only ``bench perf data`` exists so far (synthetic generation and image decoding); the
backbone, evaluator and end-to-end benchmarks arrive with the performance issue.
"""
from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

from bench.data.base import read_image
from bench.data.synth import world as world_mod

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _images_under(folder: Path) -> list[Path]:
    """Image files, not label maps (LIP's segmentations are PNGs too)."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                  and "segmentation" not in p.parent.name)


def perf_data(size: str = "smoke", seed: int = 0, formats: list[str] | None = None,
              progress=None) -> dict:
    """Write the synthetic world from scratch into a temporary folder, timing each writer,
    then decode (and flip/normalise) the written images, timing that."""
    import numpy as np

    rows = []
    with tempfile.TemporaryDirectory(prefix="hcbench-perf-") as tmp:
        out = Path(tmp) / "world"
        t_all = time.perf_counter()
        before: set[Path] = set()
        names = formats or [n for n, _ in world_mod.WRITERS]
        for name in names:
            if progress:
                progress(name)
            t0 = time.perf_counter()
            world_mod.make(out, size, seed, formats=[name])
            dt = time.perf_counter() - t0
            now = set(_images_under(out))
            n = len(now - before)
            before = now
            rows.append({"stage": f"generate {name}", "images": n, "seconds": round(dt, 3),
                         "images_per_s": round(n / dt, 1) if dt > 0 else None})
        total = time.perf_counter() - t_all
        rows.append({"stage": "generate all", "images": len(before), "seconds": round(total, 3),
                     "images_per_s": round(len(before) / total, 1)})
        sample = sorted(before)[:2000]
        t0 = time.perf_counter()
        for p in sample:
            img = read_image(p).astype(np.float32)[:, ::-1] / 255.0  # decode, flip, scale
            img -= 0.5
        dt = time.perf_counter() - t0
        rows.append({"stage": "decode+flip+normalise", "images": len(sample),
                     "seconds": round(dt, 3), "images_per_s": round(len(sample) / dt, 1)})
    return {"size": size, "seed": seed, "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "rows": rows}
