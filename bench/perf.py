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


REID_SIZES = {"market1501": (3368, 15913, 751, 6), "msmt17": (11659, 82161, 3060, 15)}


def perf_eval_reid(which: str = "market1501", ref_queries: int = 300, seed: int = 0) -> dict:
    """Our CMC/mAP evaluator against torchreid's (the evaluator its wheel installs: pure
    Python) on a random distance matrix with the benchmark's shape and id/camera layout.

    Ours runs on every query; torchreid, whose cost grows linearly with the number of
    queries, on the first ``ref_queries`` of them (all of them would take minutes to
    hours); the comparison is per query.  Both are checked to give the same numbers on
    that subset.
    """
    import numpy as np

    from bench.metrics.reid import evaluate_rank

    nq, ng, ids, cams = REID_SIZES[which]
    rng = np.random.default_rng(seed)
    q_pids = rng.integers(1, ids + 1, nq)
    g_pids = rng.integers(1, ids + 1, ng)
    q_cams, g_cams = rng.integers(0, cams, nq), rng.integers(0, cams, ng)
    dist = rng.random((nq, ng), dtype=np.float32)
    t0 = time.perf_counter()
    ours = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams)
    t_ours = time.perf_counter() - t0
    row = {"benchmark": f"reid eval {which}", "shape": f"{nq} x {ng}",
           "ours_s": round(t_ours, 3), "ours_ms_per_query": round(1000 * t_ours / nq, 4)}
    try:
        from torchreid.reid.metrics import rank as tr_rank
    except ImportError:
        row["reference"] = "torchreid not installed"
        return row
    k = min(ref_queries, nq)
    t0 = time.perf_counter()
    cmc, mAP = tr_rank.evaluate_rank(dist[:k], q_pids[:k], g_pids, q_cams[:k], g_cams,
                                     max_rank=50, use_metric_cuhk03=False, use_cython=False)
    t_ref = time.perf_counter() - t0
    sub = evaluate_rank(dist[:k], q_pids[:k], g_pids, q_cams[:k], g_cams)
    row.update({"reference": "torchreid evaluate_rank (python)", "ref_queries": k,
                "ref_s": round(t_ref, 3), "ref_ms_per_query": round(1000 * t_ref / k, 4),
                "ref_full_s_estimate": round(t_ref / k * nq, 1),
                "speedup": round((t_ref / k) / (t_ours / nq), 1),
                "same_numbers": bool(abs(sub.mAP - mAP) < 1e-6
                                     and np.allclose(sub.cmc, cmc, atol=1e-6))})
    return row


TIMM_NAMES = {"swin_t": "swin_tiny_patch4_window7_224", "swin_s": "swin_small_patch4_window7_224",
              "swin_b": "swin_base_patch4_window7_224"}
# dense bf16 peak of known accelerators, TFLOP/s, for model FLOPs utilisation
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def _peak_tflops(device: str) -> float | None:
    import torch

    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(torch.device(device))
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def _throughput(model, x, train: bool, precision: str, steps: int, warmup: int) -> float:
    import torch

    dev = x.device
    ctx = (torch.autocast(dev.type, dtype=torch.bfloat16) if precision == "bf16"
           else torch.autocast(dev.type, enabled=False))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3) if train else None
    model.train(train)

    def step():
        if train:
            with ctx:
                loss = model(x).float().mean()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        else:
            with torch.no_grad(), ctx:
                model(x)

    for _ in range(warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return steps * x.shape[0] / (time.perf_counter() - t0)


def perf_backbone(archs=("swin_s",), height: int = 256, width: int = 128, batch: int = 8,
                  device: str = "cpu", precision: str = "fp32", compile: bool = False,
                  steps: int = 3, warmup: int = 1, channels_last: bool = False) -> list[dict]:
    """Training and inference images/s of our SOLIDER Swin (controller on, a per-sample λ)
    beside timm's Swin of the same size, resolution, batch and precision; with model FLOPs
    utilisation where the device's peak is known."""
    import timm
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from backbones import create_backbone

    rows = []
    peak = _peak_tflops(device)
    for arch in archs:
        lam = torch.randint(0, 2, (batch,), device=device).float()

        class Ours(torch.nn.Module):  # λ per sample, as SOLIDER pretraining feeds it
            def __init__(self):
                super().__init__()
                self.m = create_backbone(f"solider_{arch}", semantic_weight=0.5)

            def forward(self, x):
                return self.m(x, semantic_weight=lam)

        models = {"hcbench solider_" + arch: Ours(),
                  "timm " + TIMM_NAMES[arch]: timm.create_model(
                      TIMM_NAMES[arch], pretrained=False, img_size=(height, width), num_classes=0)}
        for name, model in models.items():
            model = model.to(device)
            x = torch.randn(batch, 3, height, width, device=device)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
                x = x.contiguous(memory_format=torch.channels_last)
            with FlopCounterMode(display=False) as fc:
                with torch.no_grad():
                    model.eval()(x)
            gflop = fc.get_total_flops() / 1e9 / batch
            run = torch.compile(model) if compile else model
            train = _throughput(run, x, True, precision, steps, warmup)
            infer = _throughput(run, x, False, precision, steps, warmup)
            row = {"model": name, "input": f"{height}x{width}", "batch": batch,
                   "precision": precision, "compile": compile, "device": device,
                   "gflop_fwd_per_img": round(gflop, 2), "train_img_s": round(train, 1),
                   "infer_img_s": round(infer, 1)}
            if peak:  # training = 3x the forward FLOPs
                row["train_mfu_pct"] = round(100 * 3 * gflop * 1e9 * train / (peak * 1e12), 1)
            rows.append(row)
    return rows
