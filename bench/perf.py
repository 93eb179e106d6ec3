"""``bench perf``: speed measurements, each printed side by side with what it is compared to.

``data``: writing the synthetic world and decoding its images.  ``eval``: the reID
evaluator against torchreid's (Python, and Cython where built) at Market-1501 and MSMT17
size, and COCO keypoint evaluation against pycocotools at COCO val2017 size, same numbers
checked.  ``backbone``: our SOLIDER Swin against timm's Swin.  ``e2e``: ``bench run`` as a
user runs it, in a child process with a fresh results folder and cache, timed phase by
phase (synthetic data, pretraining, each task) with its peak memory.  Every report is also
saved in the results store, ``<results_dir>/perf/<time>-<what>.json`` (:func:`save_report`).
"""
from __future__ import annotations

import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

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


def _torchreid_references(ref_queries: int, ng: int) -> list[tuple[str, object, int]]:
    """(name, evaluate(dist, q_pids, g_pids, q_cams, g_cams) -> (cmc, mAP), queries) of the
    torchreid evaluators importable here: the pure-Python one its wheel installs, and its
    Cython build where one was compiled (``torchreid/reid/metrics/rank_cylib``, or a
    ``rank_cy`` module built from that folder's ``rank_cy.pyx`` and put on ``PYTHONPATH``).
    The Cython one runs on 10x the queries (at most 2^27 distances: its argsort is int64)."""
    refs = []
    try:
        from torchreid.reid.metrics import rank as tr_rank
    except ImportError:
        return refs
    refs.append(("torchreid evaluate_rank (python)",
                 lambda *a: tr_rank.evaluate_rank(*a, max_rank=50, use_metric_cuhk03=False,
                                                  use_cython=False), ref_queries))
    cy = None
    for name in ("torchreid.reid.metrics.rank_cylib.rank_cy", "rank_cy"):
        try:
            cy = importlib.import_module(name)
            break
        except ImportError:
            continue
    if cy is not None:
        refs.append(("torchreid evaluate_cy (Cython)", lambda *a: cy.evaluate_cy(*a, 50, False),
                     max(1, min(10 * ref_queries, (1 << 27) // max(ng, 1)))))
    return refs


def perf_eval_reid(which: str = "market1501", ref_queries: int = 300, seed: int = 0,
                   repeats: int = 3) -> list[dict]:
    """Our CMC/mAP evaluator against torchreid's on a random distance matrix with the
    benchmark's shape and id/camera layout: one row per reference found.

    Ours runs on every query; a reference, whose cost grows linearly with the number of
    queries, on the first queries only (the Python one on ``ref_queries``: all of them
    would take minutes to hours); the comparison is per query.  Ours and the references
    run in turn, ``repeats`` times, and the best time of each counts (other jobs on the
    machine only ever add time).  Both are checked to give the same numbers on the subset.
    """
    import numpy as np

    from bench.metrics.reid import evaluate_rank

    nq, ng, ids, cams = REID_SIZES[which]
    rng = np.random.default_rng(seed)
    q_pids = rng.integers(1, ids + 1, nq)
    g_pids = rng.integers(1, ids + 1, ng)
    q_cams, g_cams = rng.integers(0, cams, nq), rng.integers(0, cams, ng)
    dist = rng.random((nq, ng), dtype=np.float32)
    refs = [(name, fn, min(k, nq)) for name, fn, k in _torchreid_references(ref_queries, ng)]
    t_ours, t_ref, out = [], {name: [] for name, _, _ in refs}, {}
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams)
        t_ours.append(time.perf_counter() - t0)
        for name, fn, k in refs:
            t0 = time.perf_counter()
            out[name] = fn(dist[:k], q_pids[:k], g_pids, q_cams[:k], g_cams)
            t_ref[name].append(time.perf_counter() - t0)
    best = min(t_ours)
    base = {"benchmark": f"reid eval {which}", "shape": f"{nq} x {ng}", "ours_s": round(best, 3),
            "ours_ms_per_query": round(1000 * best / nq, 4)}
    if not refs:
        return [{**base, "reference": "torchreid not installed"}]
    rows = []
    for name, _, k in refs:
        cmc, mAP = out[name]
        sub = evaluate_rank(dist[:k], q_pids[:k], g_pids, q_cams[:k], g_cams)
        t = min(t_ref[name])
        rows.append({**base, "reference": name, "ref_queries": k, "ref_s": round(t, 3),
                     "ref_ms_per_query": round(1000 * t / k, 4),
                     "ref_full_s_estimate": round(t / k * nq, 1),
                     "speedup": round((t / k) / (best / nq), 1),
                     "same_numbers": bool(abs(sub.mAP - mAP) < 1e-6
                                          and np.allclose(sub.cmc, cmc, atol=1e-6))})
    return rows


# COCO val2017 person keypoints: 5,000 images (2,693 with people), 11,004 person annotations,
# 6,352 of them with keypoints; ~100k poses (mmpose tests on 104,125 detected person boxes)
COCO_KEYPOINTS_SIZE = {"images": 5000, "people_images": 2693, "people": 11004, "labelled": 6352,
                       "poses": 100000}


def synthetic_coco_keypoints(images: int, people_images: int, people: int, labelled: int,
                             poses: int, seed: int = 0):
    """(pycocotools ``COCO`` ground truth, image ids, (N, 17, 3) poses, scores): people of all
    sizes, some crowds and some without labelled keypoints; 60% of the poses are noisy
    copies of people (several per person), the rest stray poses on any image."""
    import contextlib
    import io

    import numpy as np
    from pycocotools.coco import COCO

    rng = np.random.default_rng(seed)
    img_of = np.concatenate([rng.choice(np.arange(1, images + 1), people_images, replace=False),
                             np.zeros(people - people_images, np.int64)])
    img_of[people_images:] = rng.choice(img_of[:people_images], people - people_images)
    h = np.exp(rng.uniform(np.log(20), np.log(450), people))
    w = h * rng.uniform(0.3, 0.7, people)
    x0, y0 = rng.uniform(0, 640 - np.minimum(w, 600)), rng.uniform(0, 480 - np.minimum(h, 470))
    kp = np.stack([x0[:, None] + rng.uniform(0, 1, (people, 17)) * w[:, None],
                   y0[:, None] + rng.uniform(0, 1, (people, 17)) * h[:, None],
                   rng.choice([0, 1, 2], (people, 17), p=[0.3, 0.2, 0.5])], -1)
    has_kp = np.zeros(people, bool)
    has_kp[rng.choice(people, labelled, replace=False)] = True
    kp[~has_kp, :, 2] = 0
    kp[has_kp & (kp[:, :, 2].max(1) == 0), 0, 2] = 2
    crowd = ~has_kp & (rng.random(people) < 0.02)
    gt_kp = np.where(kp[:, :, 2:] > 0, kp, 0.0)
    anns = [{"id": i + 1, "image_id": int(img_of[i]), "category_id": 1, "iscrowd": int(crowd[i]),
             "bbox": [float(x0[i]), float(y0[i]), float(w[i]), float(h[i])],
             "area": float(w[i] * h[i] * 0.55), "keypoints": gt_kp[i].reshape(-1).tolist(),
             "num_keypoints": int((kp[i, :, 2] > 0).sum())} for i in range(people)]
    coco = COCO()
    coco.dataset = {"images": [{"id": i, "width": 640, "height": 480}
                               for i in range(1, images + 1)],
                    "annotations": anns, "categories": [{"id": 1, "name": "person"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    n_true = int(poses * 0.6)
    src = rng.integers(0, people, n_true)
    spread = h[src] * rng.choice([.02, .05, .15], n_true)
    noise = rng.normal(0, 1, (n_true, 17, 2)) * spread[:, None, None]
    true = np.concatenate([kp[src, :, :2] + noise, rng.random((n_true, 17, 1))], -1)
    n_stray = poses - n_true
    hs = np.exp(rng.uniform(np.log(20), np.log(450), n_stray))
    sx, sy = rng.uniform(0, 600, n_stray), rng.uniform(0, 450, n_stray)
    stray = np.stack([sx[:, None] + rng.uniform(0, 1, (n_stray, 17)) * hs[:, None] * 0.5,
                      sy[:, None] + rng.uniform(0, 1, (n_stray, 17)) * hs[:, None],
                      rng.random((n_stray, 17))], -1)
    ids = np.concatenate([img_of[src], rng.integers(1, images + 1, n_stray)])
    scores = np.concatenate([rng.random(n_true), rng.random(n_stray) * 0.5])
    return coco, ids, np.concatenate([true, stray]), scores


def perf_eval_keypoints(size: dict | None = None, seed: int = 0, repeats: int = 3) -> list[dict]:
    """Our COCO keypoint evaluation against pycocotools' COCOeval (the previous
    implementation, :func:`~bench.metrics.keypoints.coco_keypoint_eval_pycocotools`: results
    to dicts, loadRes, evaluate, accumulate, summarize) on a synthetic case of COCO
    val2017's size, in turn, ``repeats`` times, best of each."""
    from bench.metrics.keypoints import coco_keypoint_eval, coco_keypoint_eval_pycocotools

    size = {**COCO_KEYPOINTS_SIZE, **(size or {})}
    coco, ids, kps, scores = synthetic_coco_keypoints(**size, seed=seed)
    t_ours, t_ref = [], []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        ours = coco_keypoint_eval(coco, ids, kps, scores)
        t_ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref = coco_keypoint_eval_pycocotools(coco, ids, kps, scores)
        t_ref.append(time.perf_counter() - t0)
    return [{"benchmark": "coco keypoint eval",
             "shape": f"{size['images']} images, {size['people']} people, {size['poses']} poses",
             "ours_s": round(min(t_ours), 3), "reference": "pycocotools COCOeval",
             "ref_s": round(min(t_ref), 3), "speedup": round(min(t_ref) / min(t_ours), 1),
             "same_numbers": ours == ref, "AP": round(ours.AP, 4)}]


# The other evaluators at their benchmarks' test sizes.  Their references (SeqNet's
# eval_func.py, CityPersons' eval_MR_multisetup.py, SCHP's compute_mean_ioU) are scripts in
# the papers' repositories, not packages that install, so these rows time ours alone; the
# tests check the numbers against hand-computed cases and, for search, a plain re-statement
# of SeqNet's procedure.
SEARCH_SIZES = {  # queries, gallery images, gallery per query (0: every frame but the query's)
    "cuhk_sysu": (2900, 6978, 100), "prw": (2057, 6112, 0)}
CITYPERSONS_VAL = {"images": 500, "people": 7, "detections": 100}  # per image
LIP_VAL = {"images": 10000, "classes": 20}


def _best_of(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def synthetic_search(queries: int, images: int, per_query: int, dets: int = 20, dim: int = 256,
                     seed: int = 0):
    """A person search case of a benchmark's size: ``dets`` detections per gallery image
    (scores uniform, so about half pass the 0.5 threshold), 1-5 gallery images holding each
    query's person, found (a detection near the box, its embedding near the query's) 80% of
    the time.  Returns (query feats, boxes, scores, feats, protocol)."""
    import numpy as np

    from bench.metrics.search import SearchProtocol

    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 600, (images, dets, 2))
    wh = rng.uniform(20, 200, (images, dets, 2)) * [0.4, 1.0]
    boxes = list(np.concatenate([xy, xy + wh], -1))
    scores = list(rng.random((images, dets)))
    feats = rng.standard_normal((images, dets, dim)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=-1, keepdims=True)
    q = rng.standard_normal((queries, dim))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    gals, gts = [], []
    for i in range(queries):
        if per_query:
            gal = rng.choice(images, per_query, replace=False)
        else:
            gal = np.delete(np.arange(images), i % images)
        gt = np.full((len(gal), 4), np.nan)
        for r in rng.choice(len(gal), int(rng.integers(1, 6)), replace=False):
            j, d = gal[r], int(rng.integers(dets))
            gt[r] = boxes[j][d] + rng.normal(0, 4, 4)
            if rng.random() < 0.8:
                feats[j, d] = q[i] + rng.normal(0, 0.05, dim)
        gals.append(gal)
        gts.append(gt)
    return q, boxes, scores, list(feats), SearchProtocol(tuple(gals), tuple(gts))


def perf_eval_search(which: str = "prw", seed: int = 0, repeats: int = 3) -> list[dict]:
    """Our person search evaluation (:func:`~bench.metrics.search.evaluate_search`, CBGM
    off) on a synthetic case of CUHK-SYSU's (gallery 100) or PRW's (every frame) test size."""
    from bench.metrics.search import evaluate_search

    nq, ng, per = SEARCH_SIZES[which]
    q, boxes, scores, feats, proto = synthetic_search(nq, ng, per, seed=seed)
    t, r = _best_of(lambda: evaluate_search(q, boxes, scores, feats, proto), repeats)
    gallery = f"gallery {per}" if per else "gallery: every other frame"
    return [{"benchmark": f"search eval {which}",
             "shape": f"{nq} queries, {ng} images x 20 detections, {gallery}",
             "ours_s": round(t, 3), "ours_ms_per_query": round(1000 * t / nq, 3),
             "reference": "SeqNet eval_func.py (a script, not installable)",
             "mAP": round(100 * r.mAP, 2)}]


def perf_eval_detection(seed: int = 0, repeats: int = 3) -> list[dict]:
    """Our CityPersons MR^-2 (the four setups ``bench eval detection`` reports) on a synthetic
    case of the val split's size: 500 images, 7 annotated people and 100 detections each."""
    import numpy as np

    from bench.metrics.detection import GroundTruth, miss_rates

    n, g, d = CITYPERSONS_VAL["images"], CITYPERSONS_VAL["people"], CITYPERSONS_VAL["detections"]
    rng = np.random.default_rng(seed)

    def people(k: int) -> np.ndarray:  # x, y, w, h: 20-400 px tall, CityPersons' aspect
        h = np.exp(rng.uniform(np.log(20), np.log(400), k))
        return np.stack([rng.uniform(0, 1900, k), rng.uniform(300, 600, k), 0.41 * h, h], 1)

    gts, det_boxes, det_scores = [], [], []
    for _ in range(n):
        b = people(g)
        gts.append(GroundTruth.of(b, rng.uniform(0.1, 1, g), rng.random(g) < 0.15))
        found = b[rng.random(g) < 0.7] + rng.normal(0, 3, 4)
        stray = people(d - len(found))
        det_boxes.append(np.concatenate([found, stray]))
        det_scores.append(np.concatenate([rng.uniform(0.3, 1, len(found)),
                                          rng.uniform(0, 0.6, len(stray))]))
    setups = ("Reasonable", "Reasonable_occ=heavy", "Reasonable_small", "All")
    t, r = _best_of(lambda: miss_rates(gts, det_boxes, det_scores, setups), repeats)
    return [{"benchmark": "detection eval citypersons",
             "shape": f"{n} images x {g} people, {d} detections each, 4 setups",
             "ours_s": round(t, 3),
             "reference": "CityPersons eval_MR_multisetup.py (a script, not installable)",
             "MR^-2 Reasonable": round(r["Reasonable"], 2)}]


def perf_eval_parsing(seed: int = 0, repeats: int = 3) -> list[dict]:
    """Our mIoU (per-image confusion matrices summed, as ``bench eval parsing`` scores a
    run's label maps) on LIP val's size: 10,000 label maps of LIP's typical sizes (drawn
    from a pool of 100 pairs, so that making them is not timed)."""
    import numpy as np

    from bench.metrics.segmentation import confusion_matrix, metrics_from_confusion

    n, k = LIP_VAL["images"], LIP_VAL["classes"]
    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(100):
        h, w = int(rng.integers(200, 400)), int(rng.integers(150, 300))
        gt = rng.integers(0, k, (h, w)).astype(np.uint8)
        gt[rng.random((h, w)) < 0.02] = 255
        pred = np.where(rng.random((h, w)) < 0.7, gt, rng.integers(0, k, (h, w))).astype(np.uint8)
        pred[gt == 255] = 0
        pool.append((pred, gt))
    pixels = sum(p.size for p, _ in pool) * n // len(pool)

    def run():
        total = sum(confusion_matrix(*pool[i % len(pool)], k) for i in range(n))
        return metrics_from_confusion(total)

    t, r = _best_of(run, repeats)
    return [{"benchmark": "parsing eval lip",
             "shape": f"{n} label maps, {pixels / 1e6:.0f} M pixels", "ours_s": round(t, 3),
             "reference": "SCHP compute_mean_ioU (a script, not installable)",
             "mIoU": round(100 * r.mIoU, 2)}]


def perf_eval(which: str, ref_queries: int = 300, repeats: int = 3) -> list[dict]:
    """One ``bench perf eval`` benchmark by name (:data:`EVAL_BENCHMARKS`)."""
    if which in REID_SIZES:
        return perf_eval_reid(which, ref_queries, repeats=repeats)
    if which in SEARCH_SIZES:
        return perf_eval_search(which, repeats=repeats)
    if which == "coco_keypoints":
        return perf_eval_keypoints(repeats=repeats)
    if which == "citypersons":
        return perf_eval_detection(repeats=repeats)
    if which == "lip":
        return perf_eval_parsing(repeats=repeats)
    raise ValueError(f"unknown evaluation benchmark {which!r}")


EVAL_BENCHMARKS = (*REID_SIZES, "coco_keypoints", *SEARCH_SIZES, "citypersons", "lip")


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


# --------------------------------------------------------------------------------------
# bench perf e2e
# --------------------------------------------------------------------------------------
_E2E_CHILD = "import sys; from bench.cli import main; sys.exit(main(sys.argv[1:]))"


def perf_e2e(*, config: str | None = None, overrides: Sequence[str] = (),
             backbone: str | None = None, tasks: str | None = None, profile: str | None = None,
             device: str | None = None, cache: str = "fresh") -> dict:
    """Time ``bench run`` (the configured backbone, tasks and profile unless given) as a user
    runs it: in a child process, with a fresh temporary results folder and, with ``cache=
    "fresh"``, a fresh temporary cache, so that the synthetic world is written and the
    backbone pretrained as on a new machine (``"keep"``: the configured cache, whatever it
    already holds is reused).

    The phases are the run's own (``run.json``'s ``phases``, :mod:`bench.timing`): data
    generation, pretraining, and each task less the data and pretraining done during it.
    Returns the wall time, the phases (each with its own peak memory, as :mod:`bench.timing`
    records it), and the peak resident memory of the whole child (``wait4``'s ``ru_maxrss``).
    """
    if cache not in ("fresh", "keep"):
        raise ValueError(f"cache must be 'fresh' or 'keep', got {cache!r}")
    with tempfile.TemporaryDirectory(prefix="hcbench-e2e-") as tmp:
        tmp = Path(tmp)
        argv = ["run", "--quiet"] + (["--config", str(config)] if config else [])
        for o in overrides:
            argv += ["--set", o]
        argv += ["--set", f"paths.results_dir={tmp / 'results'}"]
        if cache == "fresh":
            argv += ["--set", f"paths.cache_dir={tmp / 'cache'}"]
        for flag, value in (("--backbone", backbone), ("--tasks", tasks),
                            ("--profile", profile), ("--device", device)):
            if value:
                argv += [flag, value]
        log_path = tmp / "output.txt"
        t0 = time.perf_counter()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-c", _E2E_CHILD, *argv],
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        runs = sorted((tmp / "results" / "runs").glob("*/run.json"))
        if code != 0 or len(runs) != 1:
            tail = log_path.read_text(errors="replace")[-2000:]
            from bench.errors import BenchError

            raise BenchError(f"bench perf e2e: `bench {' '.join(argv)}` exited with {code}:"
                             f"\n{tail}")
        recorded = json.loads(runs[0].read_text())
    phases = recorded["phases"]
    other = wall - sum(ph["seconds"] for ph in phases)
    rows = phases + [{"phase": "start-up and the rest", "seconds": round(other, 2)},
                     {"phase": "total (wall)", "seconds": round(wall, 2)}]
    return {"backbone": recorded.get("backbone"), "tasks": recorded.get("tasks"),
            "profile": recorded.get("profile"), "cache": cache, "wall_s": round(wall, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: KiB
            "cpu_count": os.cpu_count(), "rows": rows}


def save_report(results_dir: str | Path, what: str, report: dict | list,
                device: str | None = None) -> Path:
    """Write a ``bench perf`` report into the results store:
    ``<results_dir>/perf/<UTC time>-<what>.json`` with the environment it ran in."""
    from bench import env as env_mod
    from bench.io import atomic_write_json

    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    dest = Path(results_dir) / "perf" / f"{stamp}-{what}.json"
    n = 1
    while dest.exists():
        n += 1
        dest = dest.with_name(f"{stamp}-{what}-{n}.json")
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(dest, {"what": what, "created": time.time(),
                             "env": env_mod.collect(device), "report": report})
    return dest
