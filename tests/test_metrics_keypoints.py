"""COCO keypoint evaluation, OKS-NMS and mmpose's top-down rescoring (bench.metrics.keypoints)."""
import contextlib
import copy
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from bench.metrics import keypoints as K


def _gt(seed=0, n_images=6):
    """A small in-memory COCO person-keypoints ground truth with medium and large people."""
    rng = np.random.default_rng(seed)
    images, anns, aid = [], [], 0
    for i in range(n_images):
        images.append({"id": i + 1, "width": 640, "height": 480, "file_name": f"{i}.jpg"})
        for _ in range(int(rng.integers(1, 4))):
            h = float(rng.uniform(40, 300))
            w = h * float(rng.uniform(0.3, 0.6))
            x, y = float(rng.uniform(0, 640 - w)), float(rng.uniform(0, 480 - h))
            kp = np.zeros((17, 3))
            kp[:, 0] = x + rng.uniform(0, w, 17)
            kp[:, 1] = y + rng.uniform(0, h, 17)
            kp[:, 2] = rng.choice([0, 1, 2], 17, p=[0.2, 0.2, 0.6])
            kp[kp[:, 2] == 0, :2] = 0
            if (kp[:, 2] > 0).sum() == 0:
                kp[0] = (x + w / 2, y + 5, 2)
            aid += 1
            anns.append({"id": aid, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                         "bbox": [x, y, w, h], "area": w * h * 0.6,
                         "keypoints": kp.reshape(-1).tolist(),
                         "num_keypoints": int((kp[:, 2] > 0).sum())})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns,
                    "categories": [{"id": 1, "name": "person"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _gt_arrays(coco):
    anns = coco.dataset["annotations"]
    ids = np.array([a["image_id"] for a in anns])
    kps = np.array([a["keypoints"] for a in anns], np.float64).reshape(-1, 17, 3)
    return anns, ids, kps


def test_ground_truth_as_predictions_is_perfect():
    coco = _gt()
    _, ids, kps = _gt_arrays(coco)
    m = K.coco_keypoint_eval(coco, ids, kps, np.ones(len(ids)))
    assert m.AP == pytest.approx(1.0) and m.AR == pytest.approx(1.0)
    assert m.AP50 == m.AP75 == pytest.approx(1.0)
    assert m.APm == pytest.approx(1.0) and m.APl == pytest.approx(1.0)
    assert list(m.as_dict()) == ["AP", "AP50", "AP75", "APm", "APl", "AR"]


def test_perturbed_predictions_match_cocoeval_exactly():
    coco = _gt(seed=1, n_images=8)
    anns, ids, kps = _gt_arrays(coco)
    rng = np.random.default_rng(3)
    pred = kps.copy()
    scale = np.sqrt([a["area"] for a in anns])[:, None, None]
    pred[..., :2] += rng.normal(0, 1, pred[..., :2].shape) * scale * 0.06
    pred[..., 2] = rng.uniform(0, 1, pred[..., 2].shape)
    # a false positive and a duplicate
    pred = np.concatenate([pred, pred[:1] + 80.0, pred[1:2] + 2.0])
    ids = np.concatenate([ids, ids[:1], ids[1:2]])
    scores = rng.uniform(0.1, 1, len(ids))
    ours = K.coco_keypoint_eval(coco, ids, pred, scores)

    res = K.to_coco_results(ids, pred, scores)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(res)), "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert [getattr(ours, n) for n in K.STAT_NAMES] == [float(v) for v in ev.stats]
    assert 0 < ours.AP < 1


def test_no_predictions_gives_zeros():
    m = K.coco_keypoint_eval(_gt(), [], np.zeros((0, 17, 3)), [])
    assert m.AP == 0.0 and m.AR == 0.0


def _hard_case(seed, n_images=12, cats=({"id": 1, "name": "person"},)):
    """Ground truth and predictions built to reach COCOeval's corners: crowds (with
    keypoints, so that only iscrowd makes them ignored), people without labelled keypoints,
    integer coordinates, people outside every area range, duplicated people (equal OKS: the
    last one wins), more than 20 predictions on an image (only the best 20 count), tied
    scores, images with no people, a second category."""
    rng = np.random.default_rng(seed)
    images = [{"id": 100 + i, "width": 640, "height": 480} for i in range(n_images)]
    anns, aid = [], 0
    for i in range(n_images - 2):  # the last two images have no people
        for _ in range(int(rng.integers(1, 6))):
            h = float(rng.choice([rng.uniform(20, 60), rng.uniform(60, 200), rng.uniform(200, 460)]))
            w = h * float(rng.uniform(0.3, 0.6))
            x, y = float(rng.uniform(0, 640 - w)), float(rng.uniform(0, 480 - h))
            kp = np.zeros((17, 3))
            kp[:, 0], kp[:, 1] = x + rng.uniform(0, w, 17), y + rng.uniform(0, h, 17)
            kind = rng.choice(["normal", "none", "crowd", "int"], p=[0.6, 0.15, 0.1, 0.15])
            kp[:, 2] = 0 if kind == "none" else rng.choice([0, 1, 2], 17, p=[.3, .2, .5])
            if kind == "int":
                kp = np.round(kp)
            kp[kp[:, 2] == 0, :2] = 0
            ann = {"image_id": 100 + i, "category_id": 1, "iscrowd": int(kind == "crowd"),
                   "bbox": [x, y, w, h], "area": w * h * float(rng.uniform(0.4, 0.7)),
                   "keypoints": (kp.astype(int) if kind == "int" else kp).reshape(-1).tolist(),
                   "num_keypoints": int((kp[:, 2] > 0).sum())}
            copies = 2 if rng.random() < 0.15 else 1
            for _ in range(copies):
                aid += 1
                anns.append({**ann, "id": aid})
    for c in cats[1:]:  # people of another category: in the ground truth, never predicted
        for a in anns[:5]:
            aid += 1
            anns.append({**a, "id": aid, "category_id": c["id"]})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns, "categories": list(cats)}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    people = [a for a in anns if a["category_id"] == 1]
    ids, kps = [], []
    for a in people:
        for _ in range(int(rng.integers(0, 4))):
            k = np.array(a["keypoints"], float).reshape(17, 3)
            k[:, :2] += rng.normal(0, 1, (17, 2)) * np.sqrt(a["area"]) * rng.choice([0.01, 0.05, 0.2])
            ids.append(a["image_id"])
            kps.append(k)
    for _ in range(30):  # stray poses, and a crowded image with more than 20
        img = 100 + int(rng.integers(0, n_images))
        ids.append(img if rng.random() < 0.5 else 100)
        kps.append(np.stack([rng.uniform(0, 640, 17), rng.uniform(0, 480, 17), np.ones(17)], 1))
    scores = np.round(rng.uniform(0, 1, len(ids)), 1)  # many ties
    return coco, np.array(ids), np.stack(kps), scores


@pytest.mark.parametrize("seed", range(8))
def test_equals_cocoeval_to_the_last_bit_on_hard_cases(seed):
    cats = ({"id": 1, "name": "person"},) + (({"id": 2, "name": "other"},) if seed % 4 == 3 else ())
    coco, ids, kps, scores = _hard_case(seed, cats=cats)
    kw = {}
    if seed % 4 == 1:
        kw["eval_image_ids"] = [100, 101, 102, 103, 999]
    if seed % 4 == 2:
        kw["sigmas"] = K.COCO_SIGMAS * 1.7
    ours = K.coco_keypoint_eval(coco, ids, kps, scores, **kw)
    ref = K.coco_keypoint_eval_pycocotools(coco, ids, kps, scores, **kw)
    assert ours == ref
    assert ours.AP > 0


def test_predictions_on_unknown_images_are_an_error():
    coco = _gt()
    _, ids, kps = _gt_arrays(coco)
    with pytest.raises(ValueError, match="not in the ground truth"):
        K.coco_keypoint_eval(coco, ids + 1000, kps, np.ones(len(ids)))


@pytest.mark.parametrize("n_kpt", [5, 17, 40])
def test_pairwise_sum_adds_as_numpy_does(n_kpt):
    rng = np.random.default_rng(n_kpt)
    a = np.exp(-rng.uniform(0, 30, (3000, n_kpt)))
    n = rng.integers(1, n_kpt + 1, 3000)
    got = K._pairwise_sum(a, n)
    want = np.array([np.sum(a[i, :n[i]].copy()) for i in range(len(a))])
    assert np.array_equal(got, want)


def _oks_ref(g, d, a_g, a_d, sigmas):
    """mmpose 0.x ``oks_iou`` written out keypoint by keypoint."""
    var = (sigmas * 2) ** 2
    out = []
    for j in range(len(d)):
        e = [((d[j][k][0] - g[k][0]) ** 2 + (d[j][k][1] - g[k][1]) ** 2) / var[k]
             / ((a_g + a_d[j]) / 2 + np.spacing(1)) / 2 for k in range(17)]
        out.append(np.mean(np.exp(-np.array(e))))
    return np.array(out)


def test_oks_matrix_matches_mmpose_formula():
    rng = np.random.default_rng(0)
    kps = rng.uniform(0, 100, (5, 17, 3))
    areas = rng.uniform(500, 5000, 5)
    M = K.oks_matrix(kps, areas)
    for i in range(5):
        np.testing.assert_allclose(M[i], _oks_ref(kps[i], kps, areas[i], areas, K.COCO_SIGMAS),
                                   rtol=1e-12)
    np.testing.assert_allclose(np.diag(M), 1.0)


def _nms_ref(kps, scores, areas, thr):
    order = scores.argsort()[::-1]
    keep = []
    while len(order):
        i = order[0]
        keep.append(i)
        ovr = _oks_ref(kps[i], kps[order[1:]], areas[i], areas[order[1:]], K.COCO_SIGMAS)
        order = order[np.where(ovr <= thr)[0] + 1]
    return keep


def test_oks_nms_hand_case_and_reference():
    base = np.zeros((17, 3))
    base[:, 0] = np.arange(17) * 5
    base[:, 1] = np.arange(17) * 3
    kps = np.stack([base, base + [0.5, 0.5, 0], base + [200, 0, 0]])
    keep = K.oks_nms(kps, np.array([0.5, 0.9, 0.3]), np.array([4000.0] * 3), thr=0.9)
    assert keep.tolist() == [1, 2]  # the near-duplicate of the best pose goes
    assert K.oks_nms(np.zeros((0, 17, 3)), np.zeros(0), np.zeros(0)).tolist() == []

    rng = np.random.default_rng(5)
    centers = rng.uniform(0, 60, (30, 1, 2))
    kps = np.concatenate([centers + rng.normal(0, 6, (30, 17, 2)), np.ones((30, 17, 1))], -1)
    scores, areas = rng.uniform(0, 1, 30), rng.uniform(300, 3000, 30)
    for thr in (0.3, 0.5, 0.9):
        assert K.oks_nms(kps, scores, areas, thr).tolist() == _nms_ref(kps, scores, areas, thr)


def test_rescore_and_postprocess():
    kp = np.zeros((3, 17, 3))
    kp[0, :, 2] = 0.1
    kp[0, :4, 2] = [0.3, 0.5, 0.7, 0.2]  # 0.2 is not above vis_thr
    kp[1, :, 2] = 0.1  # none above
    kp[2, :, 2] = 0.8
    s = K.rescore(kp, np.array([0.5, 1.0, 0.9]), vis_thr=0.2)
    np.testing.assert_allclose(s, [0.5 * 0.5, 0.0, 0.8 * 0.9], atol=1e-12)

    kp[:, :, 0] = np.arange(17) * 10
    kp[:, :, 1] = np.arange(17) * 7
    kp[2, :, :2] += 300  # far away
    ids = np.array([7, 7, 7])
    keep, scores = K.topdown_postprocess(ids, kp, np.array([0.5, 1.0, 0.9]),
                                         np.full(3, 5000.0))
    assert keep.tolist() == [2, 0]  # 1 is a duplicate of 0 with a lower (zero) score
    keep, _ = K.topdown_postprocess(np.array([1, 2, 3]), kp, np.ones(3), np.full(3, 5000.0))
    assert sorted(keep.tolist()) == [0, 1, 2]  # NMS never crosses images
    keep, _ = K.topdown_postprocess(ids, kp, np.ones(3), np.full(3, 5000.0), use_nms=False)
    assert keep.tolist() == [0, 1, 2]
