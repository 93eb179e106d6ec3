"""MR^-2 as eval_MR_multisetup computes it, on hand-made cases."""
import math

import numpy as np
import pytest

from bench.metrics.detection import (FPPI_REFS, GroundTruth, log_average_miss_rate, miss_curve,
                                     miss_rates, overlaps)


def gt(boxes, vis=None, ignore=None):
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    n = len(boxes)
    return GroundTruth.of(boxes, np.ones(n) if vis is None else vis,
                          np.zeros(n, bool) if ignore is None else ignore)


PERSON = [100, 50, 41, 100]  # x, y, w, h: height 100, Reasonable


def test_perfect_detections_give_zero():
    g = [gt([PERSON]), gt([[300, 20, 30, 80], [10, 10, 25, 60]])]
    dets = [np.array([PERSON]), np.array([[300, 20, 30, 80], [10, 10, 25, 60]])]
    scores = [np.array([0.9]), np.array([0.8, 0.7])]
    assert log_average_miss_rate(g, dets, scores, "Reasonable") == 0.0


def test_no_detections_give_hundred():
    g = [gt([PERSON]), gt([[300, 20, 30, 80]])]
    assert log_average_miss_rate(g, [np.zeros((0, 4))] * 2, [np.zeros(0)] * 2) == 100.0


def test_detection_in_ignore_region_is_not_a_false_positive():
    # two pedestrians (one found) plus a "person group" ignore region; the detection on the
    # region has the top score.
    region = [400, 40, 200, 120]
    other = [250, 50, 41, 100]
    inside = [450, 50, 40, 100]  # IoA = 1 with the region, IoU with it only 1/6
    assert overlaps(np.array([inside]), np.array([region]), np.array([True]))[0, 0] == 1.0
    dets, sc = [np.array([inside, PERSON])], [np.array([0.9, 0.5])]
    g = [gt([PERSON, other, region], ignore=[False, False, True])]
    # ignored: recall 1/2 at FPPI 0 -> miss 0.5 at every reference
    assert log_average_miss_rate(g, dets, sc) == pytest.approx(50.0, abs=1e-9)
    # without the region the same box is a false positive first: FPPI 1 before any recall,
    # so miss 1 at the 8 references below 1 and 0.5 at 1
    g2 = [gt([PERSON, other])]
    want = 100 * math.exp(math.log(0.5) / 9)
    assert log_average_miss_rate(g2, dets, sc) == pytest.approx(want, abs=1e-9)


def test_setups_select_by_height_and_visibility():
    # a: h 100 vis 0.9 (Reasonable); b: h 100 vis 0.4 (Heavy); c: h 30 (neither)
    boxes = [[0, 0, 41, 100], [200, 0, 41, 100], [400, 0, 12, 30]]
    g = [gt(boxes, vis=[0.9, 0.4, 1.0])]
    only_a = [np.array([boxes[0]])], [np.array([1.0])]
    only_b = [np.array([boxes[1]])], [np.array([1.0])]
    r = miss_rates(g, *only_a)
    assert r["Reasonable"] == 0.0 and r["Reasonable_occ=heavy"] == 100.0
    r = miss_rates(g, *only_b)
    assert r["Reasonable"] == 100.0 and r["Reasonable_occ=heavy"] == 0.0
    # b detected under Reasonable is matched to an ignored box: no false positive either
    both = [np.array(boxes[:2])], [np.array([0.5, 1.0])]
    assert miss_rates(g, *both)["Reasonable"] == 0.0
    # a setup without regular boxes is undefined
    assert math.isnan(log_average_miss_rate([gt(boxes[2:])], *only_a, "Reasonable"))


def test_log_average_by_hand():
    # 4 images, one pedestrian each; 8 detections ordered TP FP TP FP FP TP FP FP
    people = [[10 + 100 * i, 10, 41, 100] for i in range(4)]
    far = lambda i: [600 + 60 * i, 300, 41, 100]  # noqa: E731
    g = [gt([p]) for p in people]
    order = ["tp0", "fp", "tp1", "fp", "fp", "tp2", "fp", "fp"]
    boxes = [[] for _ in range(4)]
    scores = [[] for _ in range(4)]
    for k, kind in enumerate(order):
        img = int(kind[2]) if kind.startswith("tp") else k % 4
        boxes[img].append(people[img] if kind.startswith("tp") else far(k))
        scores[img].append(1.0 - 0.1 * k)
    boxes = [np.array(b).reshape(-1, 4) for b in boxes]
    scores = [np.array(s) for s in scores]
    # fppi after each: 0 .25 .25 .5 .75 .75 1 1.25; recall .25 .25 .5 .5 .5 .75 .75 .75
    # refs .01...1778 -> recall .25 (6x), .3162 -> .5, .5623 -> .5, 1.0 -> .75
    want = 100 * math.exp((6 * math.log(0.75) + 2 * math.log(0.5) + math.log(0.25)) / 9)
    assert log_average_miss_rate(g, boxes, scores) == pytest.approx(want, abs=1e-6)


def test_greedy_matching_by_score_and_duplicates():
    # two detections on one person: the higher-scored is the TP, the other a FP
    g = [gt([PERSON])] + [gt(np.zeros((0, 4)))] * 99
    dup = [np.array([PERSON, [101, 51, 41, 100]])] + [np.zeros((0, 4))] * 99
    sc = [np.array([0.9, 0.8])] + [np.zeros(0)] * 99
    assert log_average_miss_rate(g, dup, sc) == 0.0  # FP at FPPI 0.01 comes after recall 1
    # detections far too small for the setup are dropped before matching (expFilter 1.25)
    tiny = [np.array([[0, 0, 10, 30]])] + [np.zeros((0, 4))] * 99
    assert log_average_miss_rate(g, tiny, [np.array([0.99])] + [np.zeros(0)] * 99) == 100.0


def test_official_wraparound_is_optional():
    # top detection a FP on a 2-image set: FPPI 0.5 before any TP
    tp = np.array([False, True])
    assert miss_curve(tp, 1, 2)[:7].tolist() == [0.0] * 7
    assert miss_curve(tp, 1, 2, wraparound=True)[:7].tolist() == [1.0] * 7
    assert len(FPPI_REFS) == 9
