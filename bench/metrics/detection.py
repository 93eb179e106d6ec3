"""Pedestrian detection: the log-average miss rate MR^-2 as CityPersons'
``eval_MR_multisetup.py`` computes it.

The official tool (Pedestron ``tools/cityPerson/eval_MR_multisetup.py``, a COCOeval variant by
Dollár's rules) evaluates every setup of :data:`bench.data.citypersons.SETUPS` as follows.

* Ground truth.  A box is an ignore region if its label is not ``pedestrian`` or, under the
  setup, its full height or its visibility ratio (``area(bboxVis) / area(bbox)``) lies outside
  the setup's closed ranges.  Boxes are sorted regular first (stable).
* Detections.  Per image the at most 1000 highest-scoring ones (stable sort) are kept, then
  those whose height lies outside ``[h_min / 1.25, h_max * 1.25)`` are dropped (``expFilter``).
* Overlap.  IoU against regular boxes; against ignore regions the intersection over the
  *detection's* area (IoA).  Boxes are ``x, y, w, h`` without the +1 convention.
* Matching, greedy by score at threshold 0.5: a detection takes the not yet matched regular box
  with the highest IoU >= 0.5 (the later one on ties); failing that, the first ignore region
  with IoA >= 0.5, which can absorb any number of detections.  Detections matched to ignore
  regions are dropped; the rest are true positives (matched) or false positives.
* Accumulation over all images (the denominator of FPPI is the number of images, detections
  or not): detections sorted by score (stable, image order first), recall = TP / #regular
  boxes, and at each of the 9 FPPI references 10^(-2..0 step 0.25) the recall of the last
  detection whose FPPI does not exceed it (none: 0).  MR^-2 = exp(mean(log(1 - recall))), in
  percent; a setup without regular boxes is NaN (the tool prints -100).

One deliberate deviation: where even the first counted detection already has FPPI above a
reference (its top detection is a false positive and 1/#images > 0.01), the official code
indexes ``recall[-1]`` (Python's wrap-around) and reads the *final* recall there.  That never
happens on the real val split (500 images: 1/500 < 0.01) but inflates tiny sets; by default
the miss rate there is 1, ``wraparound=True`` reproduces the tool exactly.

Per image, overlaps and matching run on arrays (one pass over the score-sorted detections,
vectorised over ground truths); there is no Python loop over box pairs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from bench.data.citypersons import SETUPS

FPPI_REFS = np.array([0.0100, 0.0178, 0.0316, 0.0562, 0.1000, 0.1778, 0.3162, 0.5623, 1.0000])
IOU_THR = 0.5
MAX_DETS = 1000
EXP_FILTER = 1.25
# The published table's names for the setups it reports.
METRIC_NAMES = {"Reasonable": "MR^-2 Reasonable", "Reasonable_occ=heavy": "MR^-2 Heavy",
                "Reasonable_small": "MR^-2 Small", "All": "MR^-2 All"}


@dataclass(frozen=True)
class GroundTruth:
    """One image's boxes: ``boxes`` (G, 4) x, y, w, h (full body), ``vis_ratio`` (G,),
    ``ignore`` (G,) the label rule (not a pedestrian)."""

    boxes: np.ndarray
    vis_ratio: np.ndarray
    ignore: np.ndarray

    @classmethod
    def of(cls, boxes, vis_ratio, ignore) -> "GroundTruth":
        return cls(np.asarray(boxes, np.float64).reshape(-1, 4),
                   np.asarray(vis_ratio, np.float64).reshape(-1),
                   np.asarray(ignore, bool).reshape(-1))


def overlaps(dets: np.ndarray, gts: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """(D, G): IoU of x,y,w,h boxes, or intersection over the detection's area where
    ``crowd`` (an ignore region)."""
    d = np.asarray(dets, np.float64).reshape(-1, 4)
    g = np.asarray(gts, np.float64).reshape(-1, 4)
    iw = (np.minimum(d[:, None, 0] + d[:, None, 2], g[None, :, 0] + g[None, :, 2])
          - np.maximum(d[:, None, 0], g[None, :, 0]))
    ih = (np.minimum(d[:, None, 1] + d[:, None, 3], g[None, :, 1] + g[None, :, 3])
          - np.maximum(d[:, None, 1], g[None, :, 1]))
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    da = (d[:, 2] * d[:, 3])[:, None]
    ga = (g[:, 2] * g[:, 3])[None, :]
    union = np.where(np.asarray(crowd, bool)[None, :], da, da + ga - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def ignored_in(gt: GroundTruth, setup: str) -> np.ndarray:
    (h0, h1), (v0, v1) = SETUPS[setup]
    h = gt.boxes[:, 3]
    return gt.ignore | (h < h0) | (h > h1) | (gt.vis_ratio < v0) | (gt.vis_ratio > v1)


def evaluate_image(gt: GroundTruth, det_boxes, det_scores, setup: str
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """One image under ``setup``: (scores, matched, ignored) of its kept detections, in score
    order, and the number of regular ground-truth boxes."""
    gt_ign = ignored_in(gt, setup)
    order_g = np.argsort(gt_ign, kind="mergesort")  # regular first
    gboxes, gign = gt.boxes[order_g], gt_ign[order_g]
    boxes = np.asarray(det_boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(det_scores, np.float64).reshape(-1)
    order_d = np.argsort(-scores, kind="mergesort")[:MAX_DETS]
    boxes, scores = boxes[order_d], scores[order_d]
    (h0, h1), _ = SETUPS[setup]
    keep = (boxes[:, 3] >= h0 / EXP_FILTER) & (boxes[:, 3] < h1 * EXP_FILTER)
    boxes, scores = boxes[keep], scores[keep]
    D, G = len(boxes), len(gboxes)
    matched = np.zeros(D, bool)
    ignored = np.zeros(D, bool)
    if D and G:
        ious = overlaps(boxes, gboxes, gign)
        ok = ious >= IOU_THR
        taken = np.zeros(G, bool)
        regular = ~gign
        first_ign = np.where(ok & gign[None, :], np.arange(G)[None, :], G).min(1)
        for i in range(D):
            cand = ok[i] & regular & ~taken
            if cand.any():
                v = np.where(cand, ious[i], -1.0)
                j = G - 1 - int(np.argmax(v[::-1]))  # the later one on ties
                taken[j] = True
                matched[i] = True
            elif first_ign[i] < G:
                matched[i] = ignored[i] = True
    return scores, matched, ignored, int((~gign).sum())


def log_average_miss_rate(gts: Sequence[GroundTruth], det_boxes: Sequence, det_scores: Sequence,
                          setup: str = "Reasonable", wraparound: bool = False) -> float:
    """MR^-2 in percent over the images (one entry each in all three sequences)."""
    if not (len(gts) == len(det_boxes) == len(det_scores)):
        raise ValueError("one ground truth, box array and score array per image")
    parts = [evaluate_image(g, b, s, setup) for g, b, s in zip(gts, det_boxes, det_scores)]
    n_pos = sum(p[3] for p in parts)
    if n_pos == 0:
        return float("nan")
    scores = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0)
    matched = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, bool)
    ignored = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, bool)
    order = np.argsort(-scores, kind="mergesort")
    matched, ignored = matched[order], ignored[order]
    matched = matched[~ignored]
    recall_at = miss_curve(matched, n_pos, len(gts), wraparound)
    with np.errstate(divide="ignore"):
        return float(100.0 * np.exp(np.mean(np.log(1.0 - recall_at))))


def miss_curve(tp: np.ndarray, n_pos: int, n_images: int, wraparound: bool = False
               ) -> np.ndarray:
    """Recall at each FPPI reference from the score-ordered counted detections' TP flags."""
    tp = np.asarray(tp, bool)
    if len(tp) == 0:
        return np.zeros(len(FPPI_REFS))
    recall = np.cumsum(tp) / n_pos
    fppi = np.cumsum(~tp) / n_images
    idx = np.searchsorted(fppi, FPPI_REFS, side="right") - 1
    if wraparound:
        return recall[idx]  # idx -1 reads the last recall, as the official code does
    return np.where(idx >= 0, recall[np.maximum(idx, 0)], 0.0)


def miss_rates(gts: Sequence[GroundTruth], det_boxes: Sequence, det_scores: Sequence,
               setups: Sequence[str] = ("Reasonable", "Reasonable_occ=heavy"),
               wraparound: bool = False) -> dict[str, float]:
    """{setup: MR^-2 in percent} for each setup."""
    return {s: log_average_miss_rate(gts, det_boxes, det_scores, s, wraparound) for s in setups}


def named(rates: Mapping[str, float]) -> dict[str, float]:
    """{setup: value} -> {published metric name: value}."""
    return {METRIC_NAMES.get(k, f"MR^-2 {k}"): v for k, v in rates.items()}
