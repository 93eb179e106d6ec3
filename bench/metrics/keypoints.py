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
3. **COCO evaluation** (:func:`coco_keypoint_eval`): pycocotools' ``COCOeval(...,
   "keypoints")`` with the standard COCO sigmas, from plain predictions (image id, 17x3
   keypoints, score; the third column is carried but not used), reimplemented over arrays.
   COCOeval matches detections to people one image, IoU threshold and area range at a time
   in Python; here every image is matched at once, one detection rank at a time (at most 20
   per image), for all thresholds and area ranges together, and the same floating-point
   operations are done in the same order (OKS sums included: NumPy's pairwise summation is
   reproduced), so the numbers are COCOeval's to the last bit (the tests compare them, and
   :func:`coco_keypoint_eval_pycocotools` is the reference).  COCOeval's quirks are kept: a
   ground-truth person with no labelled keypoint is ignored (it can still absorb a
   detection), crowds absorb any number of detections, a detection's area is that of its
   keypoints' bounding box, ties in score keep the order of the predictions.

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
    areas = np.asarray(areas)
    scores = rescore(keypoints, box_scores, vis_thr)
    if not use_nms:
        return np.arange(len(scores)), scores
    order = np.argsort(image_ids, kind="stable")  # each image's poses, in their order
    bounds = np.flatnonzero(np.diff(image_ids[order])) + 1
    keep = []
    for idx in np.split(order, bounds) if len(order) else []:
        k = oks_nms(keypoints[idx], scores[idx], areas[idx], oks_thr, sigmas)
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


# COCOeval's keypoint parameters (pycocotools ``Params.setKpParams``), computed the same way
IOU_THRS = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)
REC_THRS = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)
AREA_RANGES = {"all": (0 ** 2, 1e5 ** 2), "medium": (32 ** 2, 96 ** 2),
               "large": (96 ** 2, 1e5 ** 2)}
MAX_DETS = 20  # per image


def coco_keypoint_eval(coco_gt, image_ids: Sequence[int], keypoints: np.ndarray,
                       scores: Sequence[float], sigmas: np.ndarray | None = None,
                       eval_image_ids: Sequence[int] | None = None) -> KeypointMetrics:
    """COCO keypoint AP/AR of predictions against a pycocotools ``COCO`` ground truth, as
    ``COCOeval(coco_gt, coco_gt.loadRes(results), "keypoints")`` computes them (see the
    module docstring), without building per-annotation dicts or looping in Python.

    ``image_ids`` (N,), ``keypoints`` (N, K, 3) in image pixels (third column: any score),
    ``scores`` (N,); every prediction is of category 1 (person).  ``eval_image_ids``: the
    images to evaluate on (default: all of the ground truth, as mmpose).  ``sigmas``:
    default COCO's.  No predictions: every metric is 0 (COCOeval cannot load an empty result
    list).  A prediction on an image the ground truth lacks is an error, as in loadRes."""
    if len(image_ids) == 0:
        return KeypointMetrics(*([0.0] * len(STAT_NAMES)))
    sig = COCO_SIGMAS if sigmas is None else np.asarray(sigmas, np.float64)
    image_ids = np.asarray(image_ids).astype(np.int64).reshape(-1)
    kp = np.asarray(keypoints, np.float64).reshape(len(image_ids), len(sig), 3)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if len(scores) != len(image_ids):
        raise ValueError(f"{len(image_ids)} image ids but {len(scores)} scores")
    if not (np.isfinite(kp[..., :2]).all() and np.isfinite(scores).all()):
        raise ValueError("keypoints and scores must be finite")
    gt_images = np.asarray(sorted(coco_gt.getImgIds()), np.int64)
    if not np.isin(image_ids, gt_images).all():
        raise ValueError("predictions on images that are not in the ground truth "
                         "(pycocotools: 'Results do not correspond to current coco set')")
    img_ids = np.unique(np.asarray(list(eval_image_ids) if eval_image_ids is not None
                                   else gt_images, np.int64))
    cats = sorted(coco_gt.getCatIds())
    T, R, A = len(IOU_THRS), len(REC_THRS), len(AREA_RANGES)
    precision = -np.ones((T, R, len(cats), A, 1))
    recall = -np.ones((T, len(cats), A, 1))
    # the detections COCOeval keeps: on evaluated images, each image's 20 best (by score,
    # ties in prediction order), listed by image then score
    pos = np.searchsorted(img_ids, image_ids)
    on = (pos < len(img_ids)) & (img_ids[np.minimum(pos, len(img_ids) - 1)] == image_ids)
    idx = np.flatnonzero(on)
    idx = idx[np.lexsort((-scores[idx], pos[idx]))]
    starts = np.r_[0, np.flatnonzero(np.diff(pos[idx])) + 1]
    rank = np.arange(len(idx)) - np.repeat(starts, np.diff(np.r_[starts, len(idx)]))
    idx, rank = idx[rank < MAX_DETS], rank[rank < MAX_DETS]
    x, y = kp[idx, :, 0], kp[idx, :, 1]
    dets = {"img": pos[idx], "rank": rank, "score": scores[idx], "x": x, "y": y,
            "area": (x.max(1) - x.min(1)) * (y.max(1) - y.min(1))}  # as loadRes
    for k, cat in enumerate(cats):
        gts = _gt_table(coco_gt, img_ids, cat, len(sig))
        d = dets if cat == 1 else {key: v[:0] for key, v in dets.items()}
        _evaluate_category(gts, d, sig, precision[:, :, k], recall[:, k])
    return KeypointMetrics(*_summarize(precision, recall))


def _gt_table(coco_gt, img_ids: np.ndarray, cat: int, n_kpt: int) -> dict[str, np.ndarray]:
    """The ground truth of one category on the evaluated images as arrays, listed by image
    and, within one, in annotation order (COCOeval's ``_gts``)."""
    rows = [(i, a) for i, img in enumerate(img_ids.tolist())
            for a in coco_gt.imgToAnns.get(img, ()) if a["category_id"] == cat]
    n = len(rows)
    kp = (np.array([a["keypoints"] for _, a in rows], np.float64).reshape(n, n_kpt, 3)
          if n else np.zeros((0, n_kpt, 3)))
    crowd = np.array([bool(a.get("iscrowd", 0)) for _, a in rows], bool)
    return {"img": np.array([i for i, _ in rows], np.int64),
            "id": np.array([a["id"] for _, a in rows], np.int64),
            "area": np.array([a["area"] for _, a in rows], np.float64),
            "bbox": np.array([a["bbox"] for _, a in rows], np.float64).reshape(n, 4),
            "crowd": crowd,
            "ignore": crowd | (np.array([a["num_keypoints"] for _, a in rows]) == 0).reshape(n),
            "x": kp[:, :, 0], "y": kp[:, :, 1], "v": kp[:, :, 2]}


def _oks(gts: dict, dets: dict, pg: np.ndarray, pd: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """COCOeval's ``computeOks`` for pairs (ground truth pg[i], detection pd[i]): the same
    operations on the same values, the sum over visible keypoints in NumPy's order."""
    var = (sigmas * 2) ** 2
    xg, yg, vis = gts["x"][pg], gts["y"][pg], gts["v"][pg] > 0
    xd, yd = dets["x"][pd], dets["y"][pd]
    bb = gts["bbox"][pg]
    x0, x1 = bb[:, :1] - bb[:, 2:3], bb[:, :1] + bb[:, 2:3] * 2
    y0, y1 = bb[:, 1:2] - bb[:, 3:4], bb[:, 1:2] + bb[:, 3:4] * 2
    n_vis = vis.sum(1)
    labelled = n_vis[:, None] > 0  # no labelled keypoint: distance to the box, 3x enlarged
    dx = np.where(labelled, xd - xg, np.maximum(0, x0 - xd) + np.maximum(0, xd - x1))
    dy = np.where(labelled, yd - yg, np.maximum(0, y0 - yd) + np.maximum(0, yd - y1))
    e = (dx ** 2 + dy ** 2) / var / (gts["area"][pg, None] + np.spacing(1)) / 2
    terms = np.exp(-e)
    n = np.where(n_vis > 0, n_vis, len(sigmas))
    packed = np.take_along_axis(terms, np.argsort(~(vis | ~labelled), 1, kind="stable"), 1)
    return _pairwise_sum(packed, n) / n


def _pairwise_sum(a: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Row sums of the first n[i] entries of a[i], added in the order ``np.sum`` adds a
    contiguous float64 array of n <= 128 numbers (NumPy's pairwise_sum: one by one below
    8; else 8 running sums over the largest multiple of 8, combined as a tree, then the
    rest one by one)."""
    P, K = a.shape
    out = np.zeros(P)
    for i in range(min(K, 7)):  # n < 8: ((0 + a0) + a1) + ...
        out = np.where((n < 8) & (i < n), out + a[:, i], out)
    if K >= 8:
        r = [a[:, j].copy() for j in range(8)]
        whole = n - n % 8
        for i in range(8, K - 7, 8):
            for j in range(8):
                r[j] = np.where(i < whole, r[j] + a[:, i + j], r[j])
        tree = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        for i in range(8, K):
            tree = np.where((i >= whole) & (i < n), tree + a[:, i], tree)
        out = np.where(n >= 8, tree, out)
    return out


def _evaluate_category(gts: dict, dets: dict, sigmas: np.ndarray, precision: np.ndarray,
                       recall: np.ndarray) -> None:
    """COCOeval's ``evaluateImg`` (every image at once) and ``accumulate`` for one category;
    fills ``precision`` (T, R, A, 1) and ``recall`` (T, A, 1)."""
    T, A = len(IOU_THRS), len(AREA_RANGES)
    G, D = len(gts["img"]), len(dets["img"])
    g_out = np.stack([(gts["area"] < lo) | (gts["area"] > hi) for lo, hi in AREA_RANGES.values()])
    d_out = np.stack([(dets["area"] < lo) | (dets["area"] > hi) for lo, hi in AREA_RANGES.values()])
    g_ign = np.repeat(gts["ignore"] | g_out, T, axis=0)  # (A*T, G), combination c = a*T + t
    thr = np.tile(np.minimum(IOU_THRS, 1 - 1e-10), A)[:, None]
    match = np.full((A * T, D), -1)  # the ground truth each detection matched, or -1
    if G and D:
        # pairs (detection, every ground truth of its image), detections by rank then image
        n_img = int(max(gts["img"].max(), dets["img"].max())) + 1
        g_first = np.searchsorted(gts["img"], np.arange(n_img))
        g_count = np.bincount(gts["img"], minlength=n_img)
        d_order = np.lexsort((dets["img"], dets["rank"]))
        cnt = g_count[dets["img"][d_order]]
        pd = np.repeat(d_order, cnt)
        seg = np.r_[0, np.cumsum(cnt)]  # pairs of the i-th detection of d_order
        pg = g_first[dets["img"][pd]] + np.arange(len(pd)) - np.repeat(seg[:-1], cnt)
        oks = _oks(gts, dets, pg, pd, sigmas)
        taken = np.zeros((A * T, G), bool)
        ranks = dets["rank"][d_order]
        for r in range(MAX_DETS):  # greedy, best-scored detection of each image first
            sel = np.flatnonzero((ranks == r) & (cnt > 0))
            if not len(sel):
                continue
            lo, hi = seg[sel[0]], seg[sel[-1] + 1]
            starts = seg[sel] - lo
            g, o = pg[lo:hi], oks[lo:hi]
            free = ~taken[:, g] | gts["crowd"][g]
            cand = free & ~(o < thr)
            best = np.full((A * T, len(sel)), -1)
            for phase in (~g_ign[:, g], g_ign[:, g]):  # people counted first, then ignored ones
                c = cand & phase
                val = np.where(c, o, -np.inf)
                top = np.maximum.reduceat(val, starts, axis=1)
                at = np.where(c & (val == np.repeat(top, cnt[sel], axis=1)),
                              np.arange(hi - lo), -1)  # the last of equal best wins
                last = np.maximum.reduceat(at, starts, axis=1)
                best = np.where(best < 0, last, best)
            ci, si = np.nonzero(best >= 0)
            gi = g[best[ci, si]]
            taken[ci, gi] = True
            match[ci, d_order[sel[si]]] = gi
    matched = match >= 0
    gt_id = np.where(matched, gts["id"][np.maximum(match, 0)] if G else 0, 0)
    d_ign = matched & np.take_along_axis(g_ign, np.maximum(match, 0), 1) if G else matched
    d_ign |= (gt_id == 0) & np.repeat(d_out, T, axis=0)
    # accumulate: detections by score over all images (stable), as COCOeval concatenates them
    order = np.argsort(-dets["score"], kind="mergesort")
    tps = ((gt_id != 0) & ~d_ign)[:, order]
    fps = ((gt_id == 0) & ~d_ign)[:, order]
    tp_sum = np.cumsum(tps, axis=1).astype(dtype=np.float64)
    fp_sum = np.cumsum(fps, axis=1).astype(dtype=np.float64)
    for a in range(A):
        npig = np.count_nonzero(g_ign[a * T] == 0)
        if npig == 0:
            continue
        for t in range(T):
            tp, fp = tp_sum[a * T + t], fp_sum[a * T + t]
            rc = tp / npig
            pr = tp / (fp + tp + np.spacing(1))
            recall[t, a, 0] = rc[-1] if D else 0
            pr = np.maximum.accumulate(pr[::-1])[::-1]
            inds = np.searchsorted(rc, REC_THRS, side="left")
            precision[t, :, a, 0] = np.where(inds < D, pr[np.minimum(inds, D - 1)] if D else 0, 0)


def _summarize(precision: np.ndarray, recall: np.ndarray) -> list[float]:
    """COCOeval's ``summarize`` for keypoints: its ten numbers, -1 where nothing counts."""
    labels = list(AREA_RANGES)

    def one(ap: int, iou_thr: float | None = None, area: str = "all") -> float:
        aind, mind = [labels.index(area)], [0]
        s = precision if ap == 1 else recall
        if iou_thr is not None:
            s = s[np.where(iou_thr == IOU_THRS)[0]]
        s = s[:, :, :, aind, mind] if ap == 1 else s[:, :, aind, mind]
        return -1.0 if len(s[s > -1]) == 0 else float(np.mean(s[s > -1]))

    return [one(ap, thr, area) for ap in (1, 0)
            for thr, area in ((None, "all"), (.5, "all"), (.75, "all"), (None, "medium"),
                              (None, "large"))]


def coco_keypoint_eval_pycocotools(coco_gt, image_ids: Sequence[int], keypoints: np.ndarray,
                                   scores: Sequence[float], sigmas: np.ndarray | None = None,
                                   eval_image_ids: Sequence[int] | None = None
                                   ) -> KeypointMetrics:
    """:func:`coco_keypoint_eval` through pycocotools' COCOeval itself (the reference the
    tests and ``bench perf eval`` compare with)."""
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


__all__ = ["COCO_SIGMAS", "KeypointMetrics", "STAT_NAMES", "coco_keypoint_eval",
           "coco_keypoint_eval_pycocotools", "oks_matrix", "oks_nms", "rescore",
           "to_coco_results", "topdown_postprocess"]
