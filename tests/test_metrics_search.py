"""Person search metrics (SeqNet's eval_search_cuhk / eval_search_prw) on hand-made cases."""
import numpy as np
import pytest

from bench.data.search import UNLABELED, SearchDataset, SearchImage, SearchQuery
from bench.metrics.search import (SearchProtocol, _positive_ranks, average_precision, cbgm_rescore,
                                  evaluate_detection, evaluate_search, iou_threshold,
                                  prw_protocol)

NAN4 = [np.nan] * 4


def _unit(*v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def test_perfect_detector_and_embeddings_give_100():
    # 3 gallery images; query person in images 0 and 2; image 1 holds someone else.
    gt = np.array([[10, 10, 60, 110], NAN4, [100, 20, 150, 120]], dtype=float)
    boxes = [gt[0:1], np.array([[5, 5, 50, 100.]]), np.array([[0, 0, 40, 90.], gt[2]])]
    scores = [np.ones(1), np.ones(1), np.ones(2)]
    me, other = _unit(1, 0, 0), _unit(0, 1, 0)
    feats = [me[None], other[None], np.stack([other, me])]
    proto = SearchProtocol((np.arange(3),), (gt,))
    r = evaluate_search(me[None], boxes, scores, feats, proto)
    assert r.mAP == pytest.approx(1.0)
    assert r.topk[1] == 1.0 and r.recall_rate[0] == 1.0


def test_recall_rate_correction_when_detector_misses():
    # query person in images 0 and 1; the detector finds it in image 0 only.
    gt = np.array([[0, 0, 50, 100], [0, 0, 50, 100]], dtype=float)
    me = _unit(1, 0)
    boxes = [gt[0:1], np.array([[200, 200, 250, 300.]])]  # image 1: a far-away box
    feats = [me[None], _unit(0.6, 0.8)[None]]
    proto = SearchProtocol((np.arange(2),), (gt,))
    r = evaluate_search(me[None], boxes, [np.ones(1), np.ones(1)], feats, proto)
    # ranking: one positive (image 0) first -> AP 1, times recall 1/2
    assert r.recall_rate[0] == 0.5
    assert r.mAP == pytest.approx(0.5)
    # ... and a detection below the score threshold counts as missed too
    r = evaluate_search(me[None], [gt[0:1], gt[1:2]], [np.ones(1), np.array([0.49])], feats,
                        proto, det_thresh=0.5)
    assert r.mAP == pytest.approx(0.5)
    # nothing found at all -> AP 0 and no top-1 hit
    r = evaluate_search(me[None], [boxes[1], boxes[1]], [np.ones(1)] * 2, feats, proto)
    assert r.mAP == 0.0 and r.topk[1] == 0.0


def test_iou_threshold_relaxed_for_small_boxes():
    # a 10x20 person: threshold = 200 / (20*30) = 1/3 (< 0.5)
    gt = np.array([[0, 0, 10, 20.]])
    assert iou_threshold(gt)[0] == pytest.approx(1 / 3)
    assert iou_threshold(np.array([[0, 0, 100, 200.]]))[0] == 0.5
    me = _unit(1, 0)
    det = np.array([[0, 0, 10, 8.]])  # IoU 0.4: a match for the small box only
    proto = SearchProtocol((np.arange(1),), (gt,))
    r = evaluate_search(me[None], [det], [np.ones(1)], [me[None]], proto)
    assert r.mAP == 1.0
    big_gt = gt * 10
    r = evaluate_search(me[None], [det * 10], [np.ones(1)], [me[None]],
                        SearchProtocol((np.arange(1),), (big_gt,)))
    assert r.mAP == 0.0


def test_only_the_most_similar_match_per_image_is_positive():
    gt = np.array([[0, 0, 50, 100.]])
    me = _unit(1, 0)
    boxes = [np.array([[0, 0, 50, 100.], [1, 1, 50, 100.]])]
    feats = [np.stack([_unit(1, 1), _unit(1, 0.1)])]  # second detection is more similar
    r = evaluate_search(me[None], boxes, [np.ones(2)], feats,
                        SearchProtocol((np.arange(1),), (gt,)))
    assert r.mAP == pytest.approx(1.0) and r.topk[1] == 1.0


def test_hand_computed_case():
    # query person in gallery images 0, 1, 2 (count_gt = 3); found in 0 and 2 (count_tp = 2).
    # detections by similarity: a(neg, .9) b(pos, .8) c(neg, .7) d(pos, .6) e(neg, .5)
    # AP over the ranking = (1/2 + 2/4) / 2 = 0.5; times recall 2/3 -> 1/3.
    def f(s):  # a unit vector with dot product s against e1
        return np.array([s, np.sqrt(1 - s * s)])

    gt = np.array([[0, 0, 40, 80], [0, 0, 40, 80], [100, 0, 140, 80]], dtype=float)
    far = [300, 300, 340, 380.]
    boxes = [np.array([far, gt[0]]), np.array([far]), np.array([gt[2], far])]
    feats = [np.stack([f(.9), f(.8)]), np.stack([f(.7)]), np.stack([f(.6), f(.5)])]
    scores = [np.ones(2), np.ones(1), np.ones(2)]
    r = evaluate_search(np.array([[1.0, 0.0]]), boxes, scores, feats,
                        SearchProtocol((np.arange(3),), (gt,)), topk=(1, 2, 5))
    assert r.mAP == pytest.approx(1 / 3, abs=1e-6)
    assert r.recall_rate[0] == pytest.approx(2 / 3)
    assert (r.topk[1], r.topk[2], r.topk[5]) == (0.0, 1.0, 1.0)


def test_average_precision_matches_sklearn_ties():
    # sklearn: y=[1,0,1,0], s=[.9,.8,.8,.1] -> thresholds .9 (P=1,R=.5), .8 (P=2/3,R=1)
    assert average_precision(np.array([1, 0, 1, 0]), np.array([.9, .8, .8, .1])) == \
        pytest.approx(0.5 + 0.5 * 2 / 3)
    assert average_precision(np.array([0, 0]), np.array([.5, .4])) == 0.0


def _img(name, boxes, pids, cam):
    return SearchImage(name, name, np.asarray(boxes, np.float32), np.asarray(pids, np.int64), cam)


def test_prw_excludes_the_query_frame_and_cross_camera():
    box = [0, 0, 40, 80]
    gallery = (_img("c1s1_a.jpg", [box], [7], 1), _img("c1s1_b.jpg", [box], [7], 1),
               _img("c2s1_c.jpg", [box], [7], 2), _img("c3s1_d.jpg", [box], [UNLABELED], 3))
    q = SearchQuery("c1s1_a.jpg", "c1s1_a.jpg", np.asarray(box, np.float32), 7, 1)
    data = SearchDataset("prw", "/", (), gallery, (q,), None)
    p = prw_protocol(data)
    assert p.galleries[0].tolist() == [1, 2, 3]
    assert np.isnan(p.gt_boxes[0][2]).all() and not np.isnan(p.gt_boxes[0][:2]).any()
    assert prw_protocol(data, ignore_cam_id=False).galleries[0].tolist() == [2, 3]
    # the query frame's own perfect detection does not count: count_gt = 2 (frames b, c)
    me = _unit(1, 0)
    boxes = [np.asarray([box], float)] * 4
    feats = [me[None], me[None], np.zeros((1, 2)), np.zeros((1, 2))]
    r = evaluate_search(me[None], boxes, [np.ones(1)] * 4, feats, p)
    # b (pos, 1.0) ranked first; c (pos, 0) tied with d (neg, 0): AP = 1/2*1 + 1/2*2/3
    assert r.recall_rate[0] == 1.0
    assert r.mAP == pytest.approx(0.5 + 0.5 * 2 / 3)


# --------------------------------------------------------------------------------------
# CBGM (SeqNet's context bipartite graph matching)
# --------------------------------------------------------------------------------------
def _cbgm_case():
    """Gallery image 0 holds the query person (tp) beside the query's companion (ctx);
    image 1 a stranger (d) who looks more like the query than the tp does."""
    q, c = np.array([1.0, 0, 0, 0]), np.array([0, 1.0, 0, 0])
    tp, ctx, d = np.array([.6, 0, .8, 0]), np.array([0, .9, 0, .1]), np.array([.8, 0, 0, .6])
    box, other = [0, 0, 40, 80.], [100, 0, 140, 80.]
    boxes = [np.array([box, other]), np.array([box])]
    feats = [np.stack([tp, ctx]), d[None]]
    gt = np.array([box, NAN4])
    proto = SearchProtocol((np.arange(2),), (gt,))
    return q, c, boxes, [np.ones(2), np.ones(1)], feats, proto


def test_cbgm_lifts_the_person_seen_with_the_query_companion():
    q, c, boxes, scores, feats, proto = _cbgm_case()
    plain = evaluate_search(q[None], boxes, scores, feats, proto)
    # ranking d (.8, neg), tp (.6, pos), ctx (0, neg): AP 1/2, top-1 miss
    assert plain.mAP == pytest.approx(0.5) and plain.topk[1] == 0.0
    r = evaluate_search(q[None], boxes, scores, feats, proto, query_context=[c[None]])
    # image 0: q-tp (.6) + c-ctx (.9) is the best matching; tp's similarity becomes
    # max(.6, .9) = .9 > .8 -> ranked first.  Image 1: one detection, matched to q (.8 > 0).
    assert r.mAP == pytest.approx(1.0) and r.topk[1] == 1.0


def test_cbgm_is_a_no_op_without_context():
    q, c, boxes, scores, feats, proto = _cbgm_case()
    plain = evaluate_search(q[None], boxes, scores, feats, proto)
    for kw in (dict(query_context=[np.zeros((0, 4))]),  # no other person in the query image
               dict(query_context=[c[None]], cbgm_k2=1),  # k2 = 1: the query alone
               dict(query_context=[c[None]], cbgm_k1=0)):  # no gallery image revisited
        r = evaluate_search(q[None], boxes, scores, feats, proto, **kw)
        assert r.mAP == pytest.approx(plain.mAP) and r.topk == plain.topk
        assert np.array_equal(r.hits, plain.hits)
    # the rescoring itself leaves every similarity as it was
    sim = np.array([.6, 0, .8])
    out = cbgm_rescore(sim, np.array([0, 0, 1]), np.stack([*feats[0], feats[1][0]]), q[None], 10)
    assert np.array_equal(out, sim)


def test_cbgm_rescore_hand_computed():
    q, c = np.array([1.0, 0]), np.array([0, 1.0])
    # one image, two detections: q.d1 = .9, c.d1 = .95, q.d2 = .3, c.d2 = .1.
    # matchings: q-d1 + c-d2 = 1.0; q-d2 + c-d1 = 1.25 (best): the query goes to d2, whose
    # similarity becomes the largest matched weight, .95; d1 keeps .9 (SeqNet's behaviour).
    g = np.array([[.9, .95], [.3, .1]])
    out = cbgm_rescore(np.array([.9, .3]), np.zeros(2, int), g, np.stack([q, c]), 10)
    assert out.tolist() == pytest.approx([.9, .95])
    # more people in the query image than detections, the query unmatched: no change
    out = cbgm_rescore(np.array([.9]), np.zeros(1, int), g[:1], np.stack([q, c]), 10)
    assert out.tolist() == [.9]
    # k1 = 1: only the image of the most similar detection is revisited
    slot = np.array([0, 0, 1, 1])
    gf = np.vstack([g, [[.5, .9], [.2, 0]]])  # image 1: q-e1 .5 + c-e2 0 vs q-e2 .2 + c-e1 .9
    sim = gf @ q
    assert cbgm_rescore(sim, slot, gf, np.stack([q, c]), 1).tolist() == pytest.approx([.9, .95, .5, .2])
    assert cbgm_rescore(sim, slot, gf, np.stack([q, c]), 3).tolist() == pytest.approx([.9, .95, .5, .9])


def test_cbgm_matches_brute_force_matching():
    import itertools

    rng = np.random.default_rng(0)
    for _ in range(30):
        k, n, d = int(rng.integers(1, 4)), int(rng.integers(1, 5)), 3
        qf, gf = rng.normal(size=(k, d)), rng.normal(size=(n, d))
        w = qf @ gf.T
        best, pairs = -np.inf, None
        if k <= n:
            for perm in itertools.permutations(range(n), k):
                v = sum(w[i, perm[i]] for i in range(k))
                if v > best:
                    best, pairs = v, [(i, perm[i]) for i in range(k)]
        else:
            for perm in itertools.permutations(range(k), n):
                v = sum(w[perm[j], j] for j in range(n))
                if v > best:
                    best, pairs = v, [(perm[j], j) for j in range(n)]
        expect = w[0].copy()
        hit = [j for i, j in pairs if i == 0]
        if hit:
            expect[hit[0]] = max(w[i, j] for i, j in pairs)
        out = cbgm_rescore(w[0], np.zeros(n, int), gf, qf, 10)
        assert out == pytest.approx(expect)


def _reference_search(q, boxes, scores, feats, proto, det_thresh, ks):
    """SeqNet's procedure written plainly: per query, per gallery image, the best-matching
    detection by similarity; AP from the sorted ranking; top-k from a stable sort."""
    aps, hits = [], []
    for i, (gal, gt) in enumerate(zip(proto.galleries, proto.gt_boxes)):
        gal, first = np.unique(gal, return_index=True)
        gt = gt[first]
        labels, sims, count_gt = [], [], 0
        for j, g in zip(gal, gt):
            keep = scores[j] >= det_thresh
            b, f = boxes[j][keep], feats[j][keep]
            sim = f @ q[i]
            lab = np.zeros(len(b))
            if not np.isnan(g).any():
                count_gt += 1
                w, h = g[2] - g[0], g[3] - g[1]
                thr = min(0.5, w * h / ((w + 10) * (h + 10)))
                iw = np.clip(np.minimum(b[:, 2], g[2]) - np.maximum(b[:, 0], g[0]), 0, None)
                ih = np.clip(np.minimum(b[:, 3], g[3]) - np.maximum(b[:, 1], g[1]), 0, None)
                inter = iw * ih
                iou = inter / ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) + w * h - inter)
                ok = np.flatnonzero(iou >= thr)
                if len(ok):
                    lab[ok[np.argmax(sim[ok])]] = 1
            labels.append(lab)
            sims.append(sim)
        lab, sim = np.concatenate(labels), np.concatenate(sims)
        tp = lab.sum()
        aps.append(0.0 if tp == 0 else average_precision(lab, sim) * tp / count_gt)
        ranked = lab[np.argsort(-sim, kind="stable")]
        hits.append([ranked[:k].sum() > 0 for k in ks])
    return np.array(aps), np.array(hits, dtype=np.int64)


@pytest.mark.parametrize("every_frame", [False, True])  # CUHK-SYSU-like / PRW-like galleries
def test_matches_the_plain_procedure_on_random_cases_with_ties(every_frame):
    """Random scenes, features quantised so that similarities tie, galleries of a few
    images (per-query products) or of every frame (the chunked all-detection product)."""
    rng = np.random.default_rng(3)
    n_img, nq, dim = 150, 70, 4
    boxes, scores, feats = [], [], []
    for _ in range(n_img):
        n = int(rng.integers(0, 7))
        xy = rng.uniform(0, 200, (n, 2))
        wh = rng.uniform(5, 60, (n, 2))
        boxes.append(np.concatenate([xy, xy + wh], 1))
        scores.append(rng.choice([0.3, 0.5, 0.9], n))
        feats.append(rng.integers(-1, 2, (n, dim)).astype(np.float64))
    q = rng.integers(-1, 2, (nq, dim)).astype(np.float64)
    gals, gts = [], []
    for i in range(nq):
        gal = np.delete(np.arange(n_img), i) if every_frame else rng.choice(n_img, 12)
        gt = np.full((len(gal), 4), np.nan)
        for r in rng.choice(len(gal), 4, replace=False):
            j = gal[r]
            if len(boxes[j]) and rng.random() < 0.8:  # near a detection, or missed
                d = rng.integers(len(boxes[j]))
                gt[r] = boxes[j][d] + rng.normal(0, 3, 4)
                if rng.random() < 0.5:  # often found: the detection looks like the query
                    feats[j][d] = q[i]
            else:
                gt[r] = [20, 20, 40, 70]
        gals.append(gal)
        gts.append(gt)
    proto = SearchProtocol(tuple(gals), tuple(gts))
    ks = (1, 3, 10)
    r = evaluate_search(q, boxes, scores, feats, proto, topk=ks)
    aps, hits = _reference_search(q, boxes, scores, feats, proto, 0.5, ks)
    assert (aps > 0).sum() > nq // 3 and 0 < hits[:, 0].sum() < nq  # a case with content
    np.testing.assert_allclose(r.ap, aps, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(r.hits, hits)


@pytest.mark.parametrize("k", [1, 3, 32, 33, 200])  # few positives: comparisons; many: a sort
def test_positive_ranks_equal_the_sorted_ranking(k):
    rng = np.random.default_rng(k)
    sim = rng.integers(0, 40, 500) / 10.0  # many ties
    pos = np.sort(rng.choice(500, k, replace=False))
    label = np.zeros(500)
    label[pos] = 1
    ap, first = _positive_ranks(sim, pos)
    assert ap == pytest.approx(average_precision(label, sim), abs=1e-12)
    assert first == np.flatnonzero(label[np.argsort(-sim, kind="stable")])[0]


# --------------------------------------------------------------------------------------
# Detection recall and AP (SeqNet's eval_detection)
# --------------------------------------------------------------------------------------
def test_detection_hand_computed():
    """Image 0: two people; detections A (IoU 1 with person 1, score .9), B (IoU 0.6 with
    person 1, score .8: person 1's best is A, so B is a false positive), C (nothing, .7).
    Image 1: one person, missed (its only detection, .6, has IoU 1/3).  Image 2: a person,
    its detection under the threshold.  Recall 1/4; ranking .9 (TP) .8 .7 .6 -> precision 1
    at the one positive, AP = 1 x 1/4."""
    gts = [np.array([[0, 0, 10, 20], [50, 0, 60, 20]], float), np.array([[0, 0, 10, 30]], float),
           np.array([[0, 0, 10, 10]], float)]
    boxes = [np.array([[0, 0, 10, 20], [0, 0, 10, 12], [100, 100, 110, 120]], float),
             np.array([[0, 0, 10, 10]], float), np.array([[0, 0, 10, 10]], float)]
    scores = [np.array([.9, .8, .7]), np.array([.6]), np.array([.005])]
    recall, ap = evaluate_detection(gts, boxes, scores)
    assert recall == pytest.approx(0.25) and ap == pytest.approx(0.25)
    # at threshold 0.001 image 2's detection counts: recall 2/4, ranking .9 T .8 .7 .6 .005 T
    recall, ap = evaluate_detection(gts, boxes, scores, det_thresh=0.001)
    assert recall == pytest.approx(0.5)
    assert ap == pytest.approx((0.5 * 1 + 0.5 * 2 / 5) * 0.5)


def test_detection_mutual_best_and_edge_cases():
    # one detection between two people: it matches only the one it overlaps most
    gts = [np.array([[0, 0, 10, 20], [2, 0, 12, 20]], float)]
    recall, ap = evaluate_detection(gts, [np.array([[1.5, 0, 11.5, 20]])], [np.array([.9])])
    assert recall == 0.5 and ap == 0.5
    # no detections at all; no ground truth at all (every detection a false positive)
    assert evaluate_detection(gts, [np.zeros((0, 4))], [np.zeros(0)]) == (0.0, 0.0)
    assert evaluate_detection([np.zeros((0, 4))], [np.array([[0, 0, 5, 5]], float)],
                              [np.array([.9])]) == (0.0, 0.0)
    assert evaluate_detection([], [], []) == (0.0, 0.0)
    with pytest.raises(ValueError, match="one entry per image"):
        evaluate_detection(gts, [], [])


def _reference_detection(gts, boxes, scores, det_thresh=0.01, iou_thresh=0.5):
    """SeqNet's eval_detection written plainly (loops; first index on ties)."""
    y_true, y_score, count_gt, count_tp = [], [], 0, 0
    for g, b, s in zip(gts, boxes, scores):
        keep = s >= det_thresh
        b, s = b[keep], s[keep]
        if len(b) == 0 or len(g) == 0:
            count_gt += len(g)
            y_true += [False] * len(b)
            y_score += list(s)
            continue
        iou = np.zeros((len(g), len(b)))
        for i in range(len(g)):
            for j in range(len(b)):
                iw = max(0.0, min(g[i, 2], b[j, 2]) - max(g[i, 0], b[j, 0]))
                ih = max(0.0, min(g[i, 3], b[j, 3]) - max(g[i, 1], b[j, 1]))
                inter = iw * ih
                iou[i, j] = inter / ((g[i, 2] - g[i, 0]) * (g[i, 3] - g[i, 1])
                                     + (b[j, 2] - b[j, 0]) * (b[j, 3] - b[j, 1]) - inter)
        tf = iou >= iou_thresh
        for j in range(len(b)):
            tf[np.arange(len(g)) != np.argmax(iou[:, j]), j] = False
        for i in range(len(g)):
            tf[i, np.arange(len(b)) != np.argmax(iou[i])] = False
        y_true += list(tf.any(0))
        y_score += list(s)
        count_tp += tf.sum()
        count_gt += len(g)
    recall = count_tp / count_gt
    return recall, (average_precision(np.array(y_true), np.array(y_score)) * recall
                    if count_tp else 0.0)


def test_detection_matches_the_plain_procedure_on_random_scenes():
    """Crowded random scenes with duplicate and shifted detections, tied scores and IoUs."""
    rng = np.random.default_rng(5)
    gts, boxes, scores = [], [], []
    for _ in range(60):
        n = int(rng.integers(0, 6))
        xy = rng.integers(0, 40, (n, 2)).astype(float)
        g = np.concatenate([xy, xy + rng.integers(8, 30, (n, 2))], 1)
        dets = [g[i] + rng.integers(-4, 5, 4) for i in rng.integers(0, max(n, 1), 2 * n)] if n \
            else []
        dets += [np.r_[xy0, xy0 + 15] for xy0 in rng.integers(0, 60, (int(rng.integers(0, 3)), 2))]
        b = np.array(dets, float).reshape(-1, 4)
        gts.append(g)
        boxes.append(b)
        scores.append(rng.choice([0.005, 0.3, 0.6, 0.9], len(b)))
    got = evaluate_detection(gts, boxes, scores)
    want = _reference_detection(gts, boxes, scores)
    assert 0.2 < want[0] < 0.95  # a case with content
    assert got == pytest.approx(want, abs=1e-12)
