"""COCO keypoint evaluation (OKS AP/AR) and the top-down post-processing that precedes it.

Pure functions of arrays, as mmpose 0.x's ``TopDownCocoDataset.evaluate`` runs them for the
top-down heatmap models (SOLIDER-HumanPose, HRFormer):

1. **Rescoring** (:func:`rescore`): a person's score is its box score times the mean of its
   keypoint scores (heatmap maxima) above ``vis_thr`` (0.2); with no keypoint above the
   threshold the keypoint factor is 0 (mmpose leaves ``kpt_score`` at 0 then).
2. **OKS-NMS** per image (:func:`oks_nms`): greedy, best score first, dropping every other
   pose whose OKS with a kept one exceeds ``thr`` (0.9).  OKS here is mmpose's ``oks_iou``:
   all 17 keypoints count (no visibility test), the area is the mean of the two poses'
   areas, and the area of a top-down pose is that of its (padded, aspect-corrected) crop box,
   ``prod(scale * 200)``.  The OKS matrix is computed once for all pairs (vectorised).
3. **COCO evaluation** (:func:`coco_keypoint_eval`) with pycocotools' ``COCOeval(...,
   "keypoints")`` and the standard COCO sigmas, from plain predictions (image id, 17x3
   keypoints, score); the keypoints' third column is carried but not used by COCOeval.

Every metric is a fraction in [0, 1]; adapters report percent.
"""
from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

# COCO's per-keypoint OKS sigmas (pycocotools ``Params.kpt_oks_sigmas``).
COCO_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07,
                        .87, .87, .89, .89], dtype=np.float64) / 10.0


@dataclass(frozen=True)
class KeypointMetrics:
    """COCOeval's keypoint summary (``stats``), fractions in [0, 1]; -1 where COCOeval has no
    ground truth for a bucket."""

    AP: float
    AP50: float
    AP75: float
    APm: float
    APl: float
    AR: float
    AR50: float
    AR75: float
    ARm: float
    ARl: float

    def as_dict(self, names: Sequence[str] = ("AP", "AP50", "AP75", "APm", "APl", "AR")
                ) -> dict[str, float]:
        d = asdict(self)
        return {n: d[n] for n in names}


STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


# --------------------------------------------------------------------------------------
# OKS, NMS, rescoring
# --------------------------------------------------------------------------------------
def oks_matrix(keypoints: np.ndarray, areas: np.ndarray,
               sigmas: np.ndarray = COCO_SIGMAS) -> np.ndarray:
    """Pairwise OKS of N poses, (N, N), as mmpose's ``oks_iou`` computes it.

    ``keypoints`` (N, K, 2+) image coordinates; ``areas`` (N,).  For poses i, j:
    ``mean_k exp(-d_ijk^2 / (2 * (2 sigma_k)^2 * ((a_i + a_j) / 2 + eps)))``.
    """
    kp = np.asarray(keypoints, np.float64)[..., :2]
    a = np.asarray(areas, np.float64)
    var = (2.0 * np.asarray(sigmas, np.float64)) ** 2  # (K,)
    d2 = ((kp[:, None] - kp[None, :]) ** 2).sum(-1)  # (N, N, K)
    s = (a[:, None] + a[None, :]) / 2.0 + np.spacing(1)
    e = d2 / var / s[..., None] / 2.0
    return np.exp(-e).mean(-1)


def oks_nms(keypoints: np.ndarray, scores: np.ndarray, areas: np.ndarray, thr: float = 0.9,
            sigmas: np.ndarray = COCO_SIGMAS) -> np.ndarray:
    """Greedy OKS non-maximum suppression; the kept indices, best score first.

    A pose is suppressed when its OKS with an already kept, higher-scoring pose is > ``thr``
    (ties in score keep the order of ``np.argsort(scores)[::-1]``, as mmpose)."""
    scores = np.asarray(scores, np.float64)
    n = len(scores)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    oks = oks_matrix(keypoints, areas, sigmas)
    order = scores.argsort()[::-1]
    alive = np.ones(n, bool)
    keep = []
    for pos, i in enumerate(order):
        if not alive[pos]:
            continue
        keep.append(i)
        rest = order[pos + 1:]
        alive[pos + 1:] &= oks[i, rest] <= thr
    return np.asarray(keep, dtype=np.int64)


def rescore(keypoints: np.ndarray, box_scores: np.ndarray, vis_thr: float = 0.2) -> np.ndarray:
    """mmpose's top-down COCO rescoring: box score x mean keypoint score above ``vis_thr``.

    ``keypoints`` (N, K, 3) with the keypoint scores in the last column."""
    s = np.asarray(keypoints, np.float64)[..., 2]
    valid = s > vis_thr
    n = valid.sum(-1)
    kpt = np.where(n > 0, (s * valid).sum(-1) / np.maximum(n, 1), 0.0)
    return kpt * np.asarray(box_scores, np.float64)


def topdown_postprocess(image_ids: np.ndarray, keypoints: np.ndarray, box_scores: np.ndarray,
                        areas: np.ndarray, vis_thr: float = 0.2, oks_thr: float = 0.9,
                        use_nms: bool = True, sigmas: np.ndarray = COCO_SIGMAS
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Rescore every pose, then OKS-NMS within each image: (kept indices, all new scores).

    The kept indices are grouped by image (ascending image id), best first within one."""
    image_ids = np.asarray(image_ids)
    keypoints = np.asarray(keypoints, np.float64)
    scores = rescore(keypoints, box_scores, vis_thr)
    if not use_nms:
        return np.arange(len(scores)), scores
    keep = []
    for iid in np.unique(image_ids):
        idx = np.flatnonzero(image_ids == iid)
        k = oks_nms(keypoints[idx], scores[idx], np.asarray(areas)[idx], oks_thr, sigmas)
        keep.append(idx[k])
    kept = np.concatenate(keep) if keep else np.zeros(0, np.int64)
    return kept, scores


# --------------------------------------------------------------------------------------
# COCO evaluation
# --------------------------------------------------------------------------------------
def to_coco_results(image_ids: Sequence[int], keypoints: np.ndarray, scores: Sequence[float],
                    category_id: int = 1) -> list[dict[str, Any]]:
    """Plain predictions -> COCO keypoint result dicts (``keypoints`` flattened x, y, s)."""
    kp = np.asarray(keypoints, np.float64).reshape(len(image_ids), -1, 3)
    return [{"image_id": int(i), "category_id": category_id,
             "keypoints": [float(v) for v in k.reshape(-1)], "score": float(s)}
            for i, k, s in zip(image_ids, kp, scores)]


def coco_keypoint_eval(coco_gt, image_ids: Sequence[int], keypoints: np.ndarray,
                       scores: Sequence[float], sigmas: np.ndarray | None = None,
                       eval_image_ids: Sequence[int] | None = None) -> KeypointMetrics:
    """COCO keypoint AP/AR of predictions against a pycocotools ``COCO`` ground truth.

    ``image_ids`` (N,), ``keypoints`` (N, 17, 3) in image pixels (third column: any score),
    ``scores`` (N,).  ``eval_image_ids``: the images to evaluate on (default: all of the
    ground truth, as mmpose).  ``sigmas``: default COCO's.  No predictions: every metric is
    0 (COCOeval cannot load an empty result list)."""
    from pycocotools.cocoeval import COCOeval

    if len(image_ids) == 0:
        return KeypointMetrics(*([0.0] * len(STAT_NAMES)))
    results = to_coco_results(image_ids, keypoints, scores)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco_dt = _load_results(coco_gt, results)
        ev = COCOeval(coco_gt, coco_dt, "keypoints")
        ev.params.useSegm = None
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
        if eval_image_ids is not None:
            ev.params.imgIds = sorted(int(i) for i in eval_image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return KeypointMetrics(*(float(v) for v in ev.stats[:len(STAT_NAMES)]))


def _load_results(coco_gt, results: list[dict]):
    """``coco_gt.loadRes`` on a deep copy (loadRes writes ``id``/``bbox``/``area`` into the
    dicts it gets)."""
    return coco_gt.loadRes(copy.deepcopy(results))


__all__ = ["COCO_SIGMAS", "KeypointMetrics", "STAT_NAMES", "coco_keypoint_eval", "oks_matrix",
           "oks_nms", "rescore", "to_coco_results", "topdown_postprocess"]
