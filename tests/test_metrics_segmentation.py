"""Segmentation metrics on hand-computed cases, as SCHP's compute_mean_ioU defines them."""
import numpy as np
import pytest
import torch

from bench.metrics.segmentation import (ConfusionMatrix, confusion_matrix, mean_iou,
                                        metrics_from_confusion)

N = 4  # classes 0..3


def test_hand_computed_case():
    # class 2 only in the prediction, class 3 in neither; one ignore pixel (255)
    gt = np.array([[0, 0, 1, 1],
                   [0, 1, 1, 255]])
    pred = np.array([[0, 1, 1, 2],
                     [0, 1, 0, 3]])  # the prediction under the ignore pixel does not count
    m = confusion_matrix(pred, gt, N)
    np.testing.assert_array_equal(m, [[2, 1, 0, 0],
                                      [1, 2, 1, 0],
                                      [0, 0, 0, 0],
                                      [0, 0, 0, 0]])
    r = metrics_from_confusion(m)
    # IoU: c0 2/(3+3-2)=0.5, c1 2/(4+3-2)=0.4, c2 0/(0+1-0)=0, c3 0/max(1,0)=0 -> all 4 averaged
    np.testing.assert_allclose(r.iou, [0.5, 0.4, 0.0, 0.0], atol=1e-6)
    assert r.mIoU == pytest.approx(0.9 / 4, abs=1e-6)
    assert r.pixel_accuracy == pytest.approx(4 / 7, abs=1e-6)  # 7 valid pixels, 4 right
    # per-class accuracy tp/max(1,pos): 2/3, 2/4, 0, 0 over all 4 classes
    assert r.mean_accuracy == pytest.approx((2 / 3 + 0.5) / 4, abs=1e-6)
    assert r.as_dict() == {"mIoU": r.mIoU, "PixelAcc": r.pixel_accuracy,
                           "MeanAcc": r.mean_accuracy}


def test_perfect_prediction_with_absent_classes_is_not_100():
    gt = np.array([[0, 1], [1, 0]])
    r = mean_iou(gt.copy(), gt, N)
    # classes 2 and 3 absent from both: IoU 0 each, still in the mean (SCHP)
    assert r.mIoU == pytest.approx(0.5, abs=1e-6)
    assert r.pixel_accuracy == pytest.approx(1.0)
    assert r.mean_accuracy == pytest.approx(0.5, abs=1e-6)


def test_all_ignored_and_empty_inputs():
    gt = np.full((2, 3), 255)
    pred = np.zeros((2, 3), dtype=np.int64)
    r = mean_iou(pred, gt, N)
    assert r.confusion.sum() == 0
    assert (r.mIoU, r.pixel_accuracy, r.mean_accuracy) == (0.0, 0.0, 0.0)  # SCHP: acc NaN
    r = mean_iou(np.zeros((0, 0), int), np.zeros((0, 0), int), N)
    assert r.confusion.sum() == 0 and r.mIoU == 0.0


def test_empty_prediction_all_background():
    gt = np.array([[0, 1, 1], [2, 2, 0]])
    r = mean_iou(np.zeros_like(gt), gt, N)
    # c0: tp 2, pos 2, res 6 -> 2/6; c1, c2: 0; c3 absent: 0
    np.testing.assert_allclose(r.iou, [1 / 3, 0, 0, 0], atol=1e-6)
    assert r.mIoU == pytest.approx(1 / 12, abs=1e-6)
    assert r.pixel_accuracy == pytest.approx(2 / 6, abs=1e-6)
    assert r.mean_accuracy == pytest.approx(1 / 4, abs=1e-6)


def test_streaming_equals_one_shot():
    rng = np.random.default_rng(0)
    gts = [rng.integers(0, N, size=(h, w)) for h, w in [(5, 7), (3, 3), (8, 2)]]
    preds = [rng.integers(0, N, size=g.shape) for g in gts]
    gts[1][0, :] = 255
    acc = ConfusionMatrix(N)
    for p, g in zip(preds, gts):
        acc.update(torch.as_tensor(p), torch.as_tensor(g))  # tensors accepted too
    one = mean_iou(np.concatenate([p.ravel() for p in preds]),
                   np.concatenate([g.ravel() for g in gts]), N)
    streamed = acc.compute()
    np.testing.assert_array_equal(streamed.confusion, one.confusion)
    assert streamed.mIoU == pytest.approx(one.mIoU, abs=1e-12)
    assert mean_iou(preds, gts, N).mIoU == pytest.approx(one.mIoU, abs=1e-12)
    # against a literal per-class loop
    g = np.concatenate([x.ravel() for x in gts])
    p = np.concatenate([x.ravel() for x in preds])
    keep = g != 255
    ious = []
    for c in range(N):
        inter = np.sum((g[keep] == c) & (p[keep] == c))
        union = np.sum((g[keep] == c) | (p[keep] == c))
        ious.append(inter / max(1, union))
    assert one.mIoU == pytest.approx(np.mean(ious), abs=1e-12)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), N)
    with pytest.raises(ValueError, match="prediction label 7"):
        confusion_matrix(np.full((2, 2), 7), np.zeros((2, 2)), N)
    with pytest.raises(ValueError, match="ground truth label 9"):
        confusion_matrix(np.zeros((2, 2)), np.full((2, 2), 9), N)


def test_paired_bootstrap_resamples_images():
    from bench.metrics.segmentation import paired_bootstrap

    rng = np.random.default_rng(0)
    gts = rng.integers(0, N, size=(12, 5, 6))
    good = np.where(rng.random(gts.shape) < 0.8, gts, (gts + 1) % N)  # 80% of pixels right
    bad = np.where(rng.random(gts.shape) < 0.5, gts, (gts + 1) % N)
    conf = lambda preds: np.stack([confusion_matrix(p, g, N) for p, g in zip(preds, gts)])
    out = paired_bootstrap(conf(good), conf(bad), resamples=200)
    # the full-sample numbers are the plain metrics of all images pooled
    whole = metrics_from_confusion(conf(good).sum(0))
    assert out["mIoU"]["a"] == pytest.approx(100 * whole.mIoU)
    assert out["PixelAcc"]["diff"] == pytest.approx(
        100 * (whole.pixel_accuracy - metrics_from_confusion(conf(bad).sum(0)).pixel_accuracy))
    for r in out.values():
        assert 0 < r["lo"] <= r["diff"] <= r["hi"]  # clearly better, interval around the gain
    # a prediction against itself: no difference in any resample
    same = paired_bootstrap(conf(good), conf(good), resamples=50)
    assert all(r["diff"] == r["lo"] == r["hi"] == 0 for r in same.values())
    # one image resampled n times is that image: the interval of a single image is a point
    one = paired_bootstrap(conf(good)[:1], conf(bad)[:1], resamples=20)
    assert one["mIoU"]["lo"] == pytest.approx(one["mIoU"]["hi"])
    with pytest.raises(ValueError, match="per-image confusion"):
        paired_bootstrap(conf(good), conf(bad)[:3])
