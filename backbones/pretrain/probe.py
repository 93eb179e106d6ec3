"""Probing a pretraining run while it trains: does the backbone learn anything?

:func:`probe_run` trains ``cfg`` in slices of ``every`` optimizer steps (the loop's own
``stop_after`` + resume, so the weights are exactly those of one uninterrupted run) and,
before the first step and after each slice, loads the saved state and measures the exported
backbone (the teacher for DINO/SOLIDER) with the checks of :mod:`.evaluate`, whose truth
the synthetic world knows:

* ``knn_mAP`` / ``knn_rank1``: frozen-feature re-ID on the synthetic Market-1501;
* ``part_ari`` / ``part_accuracy`` (controller backbones, SOLIDER's pseudo part labels at
  λ = 1, measured at 256x128 or larger: :func:`part_probe_size`) next to the
  shuffled-label chance and the fixed row-band prior;
* ``attr_probe_mA`` (VAL-PAT and CLASP, whose objectives learn attributes): a linear
  probe of the frozen pooled feature for PA100k's 26 attributes on LUPerson pool crops,
  RethinkPAR's mA (chance 50; :func:`.valpat.attribute_probe`).  VAL-PAT never saw these
  people (LUPerson-TA's are others); CLASP trains on these crops, without their labels;
* ``gate_entropy_<task>``, ``gate_overlap_<a>-<b>``, ``gate_channel_cos_<a>-<b>`` (CLASP:
  the PC-MoE gates of each pre-training task's prompt, :func:`.clasp.gate_report`);
* from the training log: the teacher-output entropy and the student–teacher KL averaged
  over the slice, the collapse check of DINO (entropy falling to 0 = one prototype wins;
  KL falling to 0 with high entropy = uniform outputs).

Rows go to ``probe.csv`` in the run folder and the curves to ``probe.png``, both rewritten
atomically after every probe (a stopped probe run keeps what it measured and resumes);
``bench pretrain --probe-every N``.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from backbones.pretrain.config import PretrainConfig
from bench.io import atomic_write_bytes, atomic_write_text

PROBE_NAME = "probe.csv"


def _backbone_at(cfg: PretrainConfig, out_dir: Path, bench_cfg) -> torch.nn.Module:
    """The exported backbone of the state saved in ``out_dir`` (the initial weights if none)."""
    from backbones.pretrain.loop import (STATE_NAME, build_data, build_objective, load_state,
                                         objective_param_groups)

    torch.manual_seed(cfg.seed)  # the same initial weights as train() builds
    n_classes = build_data(cfg, bench_cfg, 1, 0)[3] if cfg.method == "sup" else 0
    obj = build_objective(cfg, n_classes, bench_cfg)
    state = Path(out_dir) / STATE_NAME
    if state.is_file():
        rng = torch.get_rng_state()
        optimizer = torch.optim.AdamW(objective_param_groups(obj))  # as train() builds it
        load_state(state, obj, optimizer, cfg)
        torch.set_rng_state(rng)
    return obj.export().eval()


def part_probe_size(input_size: tuple[int, int]) -> tuple[int, int]:
    """The size the part agreement is measured at: the training size, but no smaller than
    SOLIDER's 256x128, whose last stage is an 8x4 token grid.  At the smoke profile's
    128x64 the grid is 4x2, each token 32x32 pixels, as wide as the synthetic person and a
    quarter of its height: too coarse for body parts (even the row-band prior agrees with
    the true layout no better than chance there, ARI -0.04 on 64 pool crops)."""
    return (max(input_size[0], 256), max(input_size[1], 128))


def probe(backbone: torch.nn.Module, bench_cfg, input_size: tuple[int, int],
          parts: bool, gates: bool = False, attributes: bool = False) -> dict[str, float]:
    from backbones.pretrain.evaluate import knn_reid, part_agreement

    row: dict[str, float] = {}
    knn = knn_reid(backbone, bench_cfg, input_size=input_size)
    row.update(knn_mAP=knn["mAP"], knn_rank1=knn["rank1"])
    if attributes:
        from backbones.pretrain.valpat import attribute_probe

        row["attr_probe_mA"] = attribute_probe(backbone, input_size=input_size)["mA"]
    if parts:
        pa = part_agreement(backbone, input_size=part_probe_size(input_size))
        row.update(part_ari=pa["ari"], part_accuracy=pa["accuracy"],
                   part_chance_ari=pa["chance_ari"], part_row_prior_ari=pa["row_prior_ari"])
    if gates:
        from backbones.pretrain.clasp import gate_report

        row.update({f"gate_{k.replace('/', '_')}": v for k, v in gate_report(backbone).items()
                    if "/" in k})
    return row


def _log_means(out_dir: Path, lo: int, hi: int) -> dict[str, float]:
    """Mean of the training log's collapse signals over steps (lo, hi]."""
    from backbones.pretrain.loop import LOG_NAME

    path = Path(out_dir) / LOG_NAME
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if lo < r["step"] <= hi]
    out = {}
    for key in ("loss", "teacher_entropy", "kl"):
        vals = [r[key] for r in rows if key in r]
        if vals:
            out[key] = float(np.mean(vals))
    return out


def probe_run(cfg: PretrainConfig, out_dir: str | Path, every: int, bench_cfg=None,
              device: str | None = None,
              progress: Callable[[int, int, dict], None] | None = None) -> pd.DataFrame:
    """Train ``cfg`` into ``out_dir`` probing every ``every`` steps; returns the probe table."""
    from bench import config as config_mod
    from backbones.pretrain.loop import train

    if every < 1:
        raise ValueError("probe every: must be >= 1 step")
    bench_cfg = bench_cfg or config_mod.load(None)
    out_dir = Path(out_dir)
    path = out_dir / PROBE_NAME
    rows = pd.read_csv(path).to_dict("records") if path.is_file() else []
    has_parts = cfg.method == "solider"
    size = tuple(cfg.global_size)
    title = f"{cfg.method} {cfg.arch} ({cfg.profile}, {size[0]}x{size[1]})"

    def record(step: int, seconds: float) -> None:
        backbone = _backbone_at(cfg, out_dir, bench_cfg)
        row = {"step": step, "train_seconds": round(seconds, 1),
               **probe(backbone, bench_cfg, size, has_parts, cfg.method == "clasp",
                       cfg.method in ("valpat", "clasp")),
               **_log_means(out_dir, rows[-1]["step"] if rows else 0, step)}
        rows.append(row)
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, pd.DataFrame(rows).to_csv(index=False))
        plot(pd.DataFrame(rows), out_dir / "probe.png", title)

    if not rows:
        record(0, 0.0)
    seconds = float(rows[-1]["train_seconds"])
    while True:
        done = int(rows[-1]["step"])
        result = train(cfg.replace(stop_after=done + every), out_dir, bench_cfg=bench_cfg,
                       device=device, progress=progress)
        seconds += result.seconds
        if result.steps > done:
            record(result.steps, seconds)
        if result.checkpoint is not None or result.steps <= done:
            break
    return pd.DataFrame(rows)


def plot(table: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("knn_mAP", "kNN re-ID mAP (synthetic Market)")]
    if "part_ari" in table:
        panels.append(("part_ari", "part pseudo-labels ARI vs truth"))
    if "attr_probe_mA" in table:
        panels.append(("attr_probe_mA", "attribute linear probe mA (chance 50)"))
    overlaps = [c for c in table if c.startswith("gate_overlap_")]
    if overlaps:
        panels.append((overlaps[0], "PC-MoE global-gate overlap between task prompts"))
    if "teacher_entropy" in table:
        panels.append(("teacher_entropy", "teacher entropy / student-teacher KL"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2))
    axes = np.atleast_1d(axes)
    for ax, (key, label) in zip(axes, panels):
        ax.plot(table["step"], table[key], marker="o", label=key)
        if key == "part_ari":
            ax.plot(table["step"], table["part_chance_ari"], ls="--", label="chance")
            ax.plot(table["step"], table["part_row_prior_ari"], ls=":", label="row-band prior")
        if key.startswith("gate_overlap_"):
            for other in overlaps[1:]:
                ax.plot(table["step"], table[other], marker="o", label=other)
        if key == "teacher_entropy" and "kl" in table:
            ax.plot(table["step"], table["kl"], marker="s", label="kl")
        ax.set_xlabel("optimizer step")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
