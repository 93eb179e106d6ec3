"""Attribute metrics on hand-computed cases, as RethinkPAR's get_pedestrian_metrics defines them."""
import math

import numpy as np
import pytest
import torch

from bench.metrics.attributes import pedestrian_metrics, positive_ratio, weighted_bce


def test_hand_computed_case():
    gt = np.array([[1, 0, 0],
                   [1, 1, 0],
                   [0, 0, 0],    # a sample with no positive label
                   [0, 1, 0]])   # attribute 2 has no positive at all
    probs = np.array([[0.9, 0.2, 0.1],
                      [0.4, 0.8, 0.7],
                      [0.6, 0.1, 0.2],
                      [0.1, 0.5, 0.3]])  # 0.5 is not above the threshold
    m = pedestrian_metrics(gt, probs)
    # attr0: TP=1 (s0), FN=1 (s1); TN=1 (s3), FP=1 (s2) -> (0.5 + 0.5)/2
    # attr1: TP=1 (s1), FN=1 (s3); TN=2 -> (0.5 + 1)/2
    # attr2: no positives -> pos recall 0; TN=3 of 4 -> (0 + 0.75)/2
    np.testing.assert_allclose(m.label_mA, [0.5, 0.75, 0.375])
    assert m.mA == pytest.approx((0.5 + 0.75 + 0.375) / 3)
    np.testing.assert_allclose(m.label_pos_recall, [0.5, 0.5, 0.0])
    # per sample: s0 pred{0} gt{0}: acc 1, prec 1, rec 1
    # s1 pred{1,2} gt{0,1}: inter 1, union 3, prec 1/2, rec 1/2
    # s2 pred{0} gt{}: acc 0, prec 0, rec 0 (epsilon)
    # s3 pred{} gt{1}: acc 0, prec 0, rec 0
    assert m.instance_acc == pytest.approx((1 + 1 / 3) / 4)
    assert m.instance_prec == pytest.approx((1 + 0.5) / 4)
    assert m.instance_recall == pytest.approx((1 + 0.5) / 4)
    p = r = 1.5 / 4
    assert m.instance_f1 == pytest.approx(2 * p * r / (p + r))


def test_index_selects_evaluated_attributes():
    gt = np.array([[1, 0], [0, 1]])
    probs = np.array([[0.9, 0.9], [0.1, 0.9]])
    assert pedestrian_metrics(gt, probs, index=[0]).mA == 1.0
    # attribute 1 predicted positive everywhere: positive recall 1, negative recall 0
    assert pedestrian_metrics(gt, probs, index=[1]).mA == pytest.approx(0.5)
    with pytest.raises(ValueError, match="differ in shape"):
        pedestrian_metrics(gt, probs[:, :1])


def test_perfect_and_empty():
    gt = np.array([[1, 0], [0, 1]])
    m = pedestrian_metrics(gt, gt.astype(float))
    assert m.mA == 1.0 and m.instance_f1 == pytest.approx(1.0)
    with pytest.warns(RuntimeWarning):
        m = pedestrian_metrics(np.zeros((0, 2)), np.zeros((0, 2)))
    assert math.isnan(m.instance_acc)  # no samples: undefined, as numpy's mean of nothing


def test_weighted_bce_matches_formula():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ratio = torch.tensor(positive_ratio([[1, 0], [0, 0], [1, 1], [0, 0]]), dtype=torch.float32)
    assert ratio.tolist() == [0.5, 0.25]
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    w = torch.tensor([[math.exp(0.5), math.exp(0.25)], [math.exp(0.5), math.exp(0.75)]])
    assert weighted_bce(logits, targets, ratio).item() == pytest.approx((bce * w).sum(1).mean().item())
    assert weighted_bce(logits, targets, None).item() == pytest.approx(bce.sum(1).mean().item())
