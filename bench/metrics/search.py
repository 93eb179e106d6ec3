"""Person search metrics: mAP and top-k as SeqNet's ``eval_func.py`` computes them.

Protocol (``eval_search_cuhk`` / ``eval_search_prw`` of serend1p1ty/SeqNet, which
SOLIDER-PersonSearch keeps unchanged):

* gallery detections scoring below ``det_thresh`` (0.5) are dropped; a gallery image left
  with no detection contributes nothing to the ranking (but its ground truth still counts);
* a query is compared with every kept detection of every image of *its* gallery by the dot
  product of the embeddings (SeqNet's features are L2-normalised, and CWS-weighted in the
  gallery);
* in a gallery image that holds the query person (box ``g``, ``w x h``), the detections are
  visited in decreasing similarity and the *first* one with IoU(det, g) >=
  ``min(0.5, w·h / ((w + 10)(h + 10)))`` is the one true positive of that image (the
  relaxed threshold is for small people); every other detection is a negative;
* AP is the average precision of that ranking (scikit-learn's ``average_precision_score``:
  tied scores form one threshold) times the *recall rate* ``count_tp / count_gt`` — the
  fraction of the gallery images holding the query person in which the detector found it
  — and 0 when nothing was found; top-k is 1 when a true positive is among the k most
  similar detections;
* galleries: CUHK-SYSU uses the protocol's per-query gallery (``TestG{N}.mat``, the query
  image is not in it); PRW searches every test frame except the query's own, and its
  cross-camera variant also drops the query camera's frames (``ignore_cam_id=False``).
* optionally, before the labelling above, SeqNet's *context bipartite graph matching*
  (CBGM, ``cbgm=True`` in ``eval_func.py``) revises some similarities, see
  :func:`cbgm_rescore`.

Alongside, the detector itself: recall and AP over every gallery image's people
(``eval_detection``, :func:`evaluate_detection`).

Everything below works on plain arrays: per gallery image its detected boxes (x1, y1, x2,
y2), scores and embeddings; per query its embedding, the indices of its gallery images and
the query person's box in each of them (:class:`SearchProtocol`).  The per-query work is
vectorised: the similarities from a matrix product (for galleries of every frame, as PRW's,
one product per chunk of queries against all detections), one IoU pass over the candidate
detections of the images holding the person, a ``lexsort`` to pick each image's first
match, and AP and top-k from the few true positives' ranks without sorting the ranking.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class SearchProtocol:
    """Which gallery images each query searches, and where its person is in them.

    ``galleries[i]``: int array of gallery-image indices for query ``i``;
    ``gt_boxes[i]``: float array (len(galleries[i]), 4), the query person's box (x1, y1, x2,
    y2) in each of those images, NaN where the person is absent.
    """

    galleries: tuple[np.ndarray, ...]
    gt_boxes: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class SearchResult:
    mAP: float  # in [0, 1]
    topk: dict[int, float]  # k -> accuracy in [0, 1]
    ap: np.ndarray  # per-query AP (after the recall-rate correction)
    recall_rate: np.ndarray  # per-query count_tp / count_gt
    hits: np.ndarray  # (Q, len(topk)) 0/1

    def as_dict(self) -> dict[str, float]:
        out = {"mAP": float(self.mAP)}
        out.update({f"top-{k}": float(v) for k, v in self.topk.items()})
        return out


def iou_threshold(gt: np.ndarray) -> np.ndarray:
    """SeqNet's match threshold for ground-truth boxes (..., 4): min(0.5, wh/((w+10)(h+10)))."""
    w, h = gt[..., 2] - gt[..., 0], gt[..., 3] - gt[..., 1]
    return np.minimum(0.5, w * h / ((w + 10.0) * (h + 10.0)))


def box_iou_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of row-aligned boxes (N, 4) x (N, 4), no +1 (SeqNet's ``_compute_iou``)."""
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = iw * ih
    union = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
             + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """scikit-learn's ``average_precision_score`` (binary): sum over distinct score
    thresholds, from the highest, of (recall gain) x (precision at that threshold)."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.sum() == 0:
        return 0.0
    order = np.argsort(y_score, kind="mergesort")[::-1]
    s, t = y_score[order], y_true[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each tie group
    tps = np.cumsum(t)[last]
    precision = tps / (last + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _positive_ranks(sim: np.ndarray, pos: np.ndarray) -> tuple[float, float]:
    """(:func:`average_precision` of the ranking by ``sim`` whose positives are ``pos``, the
    best rank of a positive in the stable descending order), from the few positives alone:
    the precision at a positive's threshold is the positives over all the items scoring at
    least its score (ties form one threshold); its rank counts the items scoring higher and
    the tied ones before it.  No positive: (0, inf)."""
    if len(pos) == 0:
        return 0.0, np.inf
    if len(pos) > 32:  # many positives: sorting beats k x N comparisons (time and memory)
        label = np.zeros(len(sim))
        label[pos] = 1
        first = np.flatnonzero(label[np.argsort(-sim, kind="stable")])[0]
        return average_precision(label, sim), float(first)
    s = sim[pos]
    at_least = (sim[None, :] >= s[:, None]).sum(1)
    positives_at_least = (s[None, :] >= s[:, None]).sum(1)
    ap = float(np.mean(positives_at_least / at_least))
    tied_before = (sim[None, :] == s[:, None]) & (np.arange(len(sim))[None, :] < pos[:, None])
    rank = (sim[None, :] > s[:, None]).sum(1) + tied_before.sum(1)
    return ap, float(rank.min())


def cbgm_rescore(sim: np.ndarray, slot: np.ndarray, gallery_feats: np.ndarray,
                 query_image_feats: np.ndarray, k1: int) -> np.ndarray:
    """Context bipartite graph matching (CBGM) of SeqNet (Li & Zhang, "Sequential
    End-to-end Network for Efficient Person Search", AAAI 2021; ``eval_func.py`` of
    serend1p1ty/SeqNet with ``cbgm=True``) for one query; returns the revised similarities.

    ``sim`` (N,): the query's similarity to each candidate gallery detection, ``slot`` (N,)
    the gallery image each belongs to, ``gallery_feats`` (N, D) their embeddings;
    ``query_image_feats`` (K, D): the people of the *query image*, the query's own
    embedding first, then its context (the other detections, by decreasing detection
    score; the reference keeps the top ``k2`` rows in all, 3 on CUHK-SYSU, 4 on PRW).

    As the reference: the gallery images of the ``k1`` most similar detections (10 on
    CUHK-SYSU, 30 on PRW) are revisited; in each, the query image's people and the
    image's detections form a complete bipartite graph weighted by the embeddings' dot
    products, and a maximum-weight matching (Kuhn-Munkres, here
    ``scipy.optimize.linear_sum_assignment``; every node of the smaller side is matched)
    is found.  If the query itself is matched, the detection it is matched to gets as
    similarity the *largest* weight among the matched pairs (SeqNet's
    ``get_max_value_result``: a maximum, not a sum); other detections keep theirs, and
    when the query is left unmatched (more people in the query image than detections)
    nothing changes.  With no context (K = 1) the matching picks the most similar
    detection and gives it its own similarity: CBGM is then a no-op.
    """
    from scipy.optimize import linear_sum_assignment

    sim = np.array(sim, dtype=np.float64, copy=True)
    qf = np.asarray(query_image_feats, dtype=np.float64)
    if len(qf) <= 1 or len(sim) == 0 or k1 <= 0:
        return sim
    top = np.argsort(sim, kind="stable")[-k1:]
    for s in np.unique(slot[top]):
        rows = np.flatnonzero(slot == s)
        w = qf @ np.asarray(gallery_feats, dtype=np.float64)[rows].T  # (K, n)
        r, c = linear_sum_assignment(w, maximize=True)
        mine = np.flatnonzero(r == 0)
        if len(mine):
            sim[rows[c[mine[0]]]] = w[r, c].max()
    return sim


def evaluate_search(query_feats: np.ndarray, gallery_boxes: Sequence[np.ndarray],
                    gallery_scores: Sequence[np.ndarray], gallery_feats: Sequence[np.ndarray],
                    protocol: SearchProtocol, det_thresh: float = 0.5,
                    topk: Sequence[int] = (1, 5, 10),
                    query_context: Sequence[np.ndarray] | None = None,
                    cbgm_k1: int = 10, cbgm_k2: int = 3) -> SearchResult:
    """mAP and top-k of ``eval_search_cuhk`` / ``eval_search_prw`` on plain arrays.

    ``gallery_boxes[j]`` (Nj, 4), ``gallery_scores[j]`` (Nj,), ``gallery_feats[j]`` (Nj, D):
    the detections of gallery image ``j``; ``query_feats`` (Q, D).

    CBGM (:func:`cbgm_rescore`) is on when ``query_context`` is given: per query, the
    embeddings (Ci, D) of the *other* people detected in the query image, by decreasing
    score, the query's own box excluded (it is ``query_feats[i]``); the first
    ``cbgm_k2 - 1`` of them are its context, the images of the ``cbgm_k1`` most similar
    detections are re-scored (SeqNet: k1, k2 = 10, 3 on CUHK-SYSU and 30, 4 on PRW).
    """
    q = np.asarray(query_feats, dtype=np.float64)
    n_img = len(gallery_boxes)
    if not (len(gallery_scores) == len(gallery_feats) == n_img):
        raise ValueError("gallery boxes, scores and features must have one entry per image")
    if len(protocol.galleries) != len(q):
        raise ValueError(f"{len(q)} query features but {len(protocol.galleries)} galleries")
    if query_context is not None and len(query_context) != len(q):
        raise ValueError(f"{len(q)} query features but {len(query_context)} query contexts")
    dim = q.shape[1]
    boxes, feats, owner = [], [], []
    for j in range(n_img):
        s = np.asarray(gallery_scores[j], dtype=np.float64).reshape(-1)
        keep = s >= det_thresh
        boxes.append(np.asarray(gallery_boxes[j], dtype=np.float64).reshape(-1, 4)[keep])
        feats.append(np.asarray(gallery_feats[j], dtype=np.float64).reshape(-1, dim)[keep])
        owner.append(np.full(int(keep.sum()), j))
    boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4))
    feats = np.concatenate(feats) if feats else np.zeros((0, dim))
    owner = np.concatenate(owner).astype(np.int64) if owner else np.zeros(0, np.int64)
    order = np.argsort(owner, kind="stable")  # detections grouped by image
    boxes, feats, owner = boxes[order], feats[order], owner[order]
    starts = np.searchsorted(owner, np.arange(n_img + 1))

    ks = tuple(int(k) for k in topk)
    aps, rates, hits = [], [], []
    n_det = len(feats)
    chunk = max(1, min(64, (1 << 25) // max(n_det, 1)))  # rows of all-detection similarities
    rows_from, rows = -1, np.zeros((0, n_det))
    for i, (gal, gt) in enumerate(zip(protocol.galleries, protocol.gt_boxes)):
        gal = np.asarray(gal, dtype=np.int64)
        gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
        gal, first = np.unique(gal, return_index=True)  # a gallery image counts once
        gt = gt[first]
        has_gt = ~np.isnan(gt).any(axis=1)
        count_gt = int(has_gt.sum())
        # candidate detections: those of this query's gallery images
        lens = starts[gal + 1] - starts[gal]
        idx = np.repeat(starts[gal] - np.cumsum(np.r_[0, lens[:-1]]), lens) + np.arange(lens.sum())
        slot = np.repeat(np.arange(len(gal)), lens)  # position of the image in ``gal``
        if 8 * len(idx) > n_det:  # a large gallery: this query's row of a chunked product
            if not rows_from <= i < rows_from + len(rows):
                rows_from, rows = i, q[i:i + chunk] @ feats.T
            sim = rows[i - rows_from][idx]
        else:
            sim = feats[idx] @ q[i]
        if query_context is not None:
            context = np.asarray(query_context[i], dtype=np.float64).reshape(-1, dim)
            sim = cbgm_rescore(sim, slot, feats[idx],
                               np.vstack([q[i][None], context[:max(cbgm_k2 - 1, 0)]]), cbgm_k1)
        label = np.zeros(len(idx), dtype=np.int64)
        cand = has_gt[slot]
        if cand.any():
            g = gt[slot[cand]]
            ok = box_iou_pairs(boxes[idx[cand]], g) >= iou_threshold(g)
            where = np.flatnonzero(cand)[ok]
            if len(where):
                # per image, the matching detection of highest similarity is the positive
                o = np.lexsort((-sim[where], slot[where]))
                where = where[o]
                _, firsts = np.unique(slot[where], return_index=True)
                label[where[firsts]] = 1
        pos = np.flatnonzero(label)
        count_tp = len(pos)
        rate = count_tp / count_gt if count_gt else 0.0
        ap, first = _positive_ranks(sim, pos)
        aps.append(ap * rate)
        rates.append(rate)
        hits.append([int(first < k) for k in ks])
    aps_a = np.asarray(aps, dtype=np.float64)
    hits_a = np.asarray(hits, dtype=np.int64).reshape(len(aps), len(ks))
    return SearchResult(mAP=float(aps_a.mean()) if len(aps_a) else 0.0,
                        topk={k: float(hits_a[:, c].mean()) if len(aps_a) else 0.0
                              for c, k in enumerate(ks)},
                        ap=aps_a, recall_rate=np.asarray(rates), hits=hits_a)


def evaluate_detection(gt_boxes: Sequence[np.ndarray], boxes: Sequence[np.ndarray],
                       scores: Sequence[np.ndarray], det_thresh: float = 0.01,
                       iou_thresh: float = 0.5) -> tuple[float, float]:
    """Detection recall and AP over the gallery, as SeqNet's ``eval_detection`` (all people,
    ``labeled_only=False``; ``engine.py`` calls it with ``det_thresh=0.01``), in [0, 1].

    Per gallery image ``j``: ground-truth boxes ``gt_boxes[j]`` (Gj, 4), detections
    ``boxes[j]`` (Nj, 4) with ``scores[j]``, those scoring >= ``det_thresh`` kept.  A
    detection and a ground truth match when their IoU is >= ``iou_thresh`` and each is the
    other's highest-IoU partner (the first one on a tie, in the given order).  Recall is
    matches / ground truths; AP is the average precision of every kept detection (matched =
    positive; tied scores one threshold) times the recall, 0 when nothing matched.  An
    image without ground truth makes every detection of it a false positive (SeqNet's loop
    would fail there).  Vectorised over all (ground truth, detection) pairs of an image."""
    n_img = len(gt_boxes)
    if not (len(boxes) == len(scores) == n_img):
        raise ValueError("ground truths, boxes and scores must have one entry per image")
    gts = [np.asarray(g, dtype=np.float64).reshape(-1, 4) for g in gt_boxes]
    s_all = [np.asarray(s, dtype=np.float64).reshape(-1) for s in scores]
    keep = [s >= det_thresh for s in s_all]
    dets = np.concatenate([np.asarray(b, dtype=np.float64).reshape(-1, 4)[k]
                           for b, k in zip(boxes, keep)] or [np.zeros((0, 4))])
    score = np.concatenate([s[k] for s, k in zip(s_all, keep)] or [np.zeros(0)])
    n_gt = np.array([len(g) for g in gts], dtype=np.int64)
    n_det = np.array([int(k.sum()) for k in keep], dtype=np.int64)
    count_gt = int(n_gt.sum())
    gt = np.concatenate(gts or [np.zeros((0, 4))])
    # every (detection, ground truth) pair of one image
    d_img = np.repeat(np.arange(n_img), n_det)
    reps = n_gt[d_img]
    pd = np.repeat(np.arange(len(dets)), reps)
    g_start = np.r_[0, np.cumsum(n_gt)[:-1]]
    offset = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
    pg = np.repeat(g_start[d_img], reps) + offset
    iou = box_iou_pairs(dets[pd], gt[pg])

    def first_best(owner: np.ndarray, partner: np.ndarray) -> np.ndarray:
        """Per pair: is ``partner`` the first highest-IoU one of its ``owner``?"""
        o = np.lexsort((partner, -iou, owner))
        best = np.zeros(len(owner), dtype=bool)
        best[o[np.unique(owner[o], return_index=True)[1]]] = True
        return best

    match = (iou >= iou_thresh) & first_best(pd, pg) & first_best(pg, pd)
    y_true = np.zeros(len(dets), dtype=np.int64)
    y_true[pd[match]] = 1
    count_tp = int(match.sum())
    recall = count_tp / count_gt if count_gt else 0.0
    ap = average_precision(y_true, score) * recall if count_tp else 0.0
    return recall, ap


# --------------------------------------------------------------------------------------
# Protocols from dataset records (bench.data.search.SearchDataset)
# --------------------------------------------------------------------------------------
def _gt_of(image, pid: int) -> np.ndarray:
    hit = np.flatnonzero(np.asarray(image.pids) == pid)
    if not len(hit):
        return np.full(4, np.nan)
    return np.asarray(image.boxes, dtype=np.float64)[hit[0]]


def cuhk_protocol(data) -> SearchProtocol:
    """CUHK-SYSU: each query's protocol gallery (``data.query_gallery``)."""
    if data.query_gallery is None:
        raise ValueError(f"dataset {data.name} has no per-query galleries")
    gals, gts = [], []
    for qr, gal in zip(data.queries, data.query_gallery):
        gal = np.asarray(gal, dtype=np.int64)
        gals.append(gal)
        gts.append(np.stack([_gt_of(data.gallery[j], qr.pid) for j in gal])
                   if len(gal) else np.zeros((0, 4)))
    return SearchProtocol(tuple(gals), tuple(gts))


def prw_protocol(data, ignore_cam_id: bool = True) -> SearchProtocol:
    """PRW: every test frame but the query's own (cross-camera: also not the query's camera)."""
    names = np.array([g.name for g in data.gallery])
    cams = np.array([-1 if g.cam is None else g.cam for g in data.gallery])
    gals, gts = [], []
    for qr in data.queries:
        keep = names != qr.name
        if not ignore_cam_id:
            keep &= cams != (-1 if qr.cam is None else qr.cam)
        gal = np.flatnonzero(keep)
        gals.append(gal)
        gts.append(np.stack([_gt_of(data.gallery[j], qr.pid) for j in gal])
                   if len(gal) else np.zeros((0, 4)))
    return SearchProtocol(tuple(gals), tuple(gts))


def protocol_for(data, ignore_cam_id: bool = True) -> SearchProtocol:
    return cuhk_protocol(data) if data.query_gallery is not None else prw_protocol(data, ignore_cam_id)


__all__ = ["SearchProtocol", "SearchResult", "average_precision", "box_iou_pairs",
           "cbgm_rescore", "cuhk_protocol", "evaluate_detection", "evaluate_search",
           "iou_threshold", "prw_protocol", "protocol_for"]
