"""Semantic-segmentation metrics from a confusion matrix, as SCHP's ``compute_mean_ioU``.

Reference: ``utils/miou.py`` of GoGoDuck912/Self-Correction-Human-Parsing (kept unchanged in
SOLIDER-HumanParsing).  Pixels whose ground truth is the ignore label (255) are dropped; the
rest fill a ``num_classes x num_classes`` confusion matrix ``M[gt, pred]``.  With
``pos = M.sum(1)`` (ground-truth pixels per class), ``res = M.sum(0)`` (predicted pixels per
class) and ``tp = diag(M)``:

* pixel accuracy  = ``tp.sum() / pos.sum()``
* mean accuracy   = ``mean(tp / max(1, pos))`` over **all** classes
* IoU per class   = ``tp / max(1, pos + res - tp)``; mIoU = their mean over **all** classes.

So a class that appears neither in the ground truth nor in the prediction counts as IoU 0
(and accuracy 0) and still divides the mean, exactly as SCHP computes it; a class only in
the prediction has IoU 0.  Values are fractions here; adapters report percent.

One deviation: SCHP's pixel accuracy is 0/0 (NaN) when no pixel was evaluated; here it is
0.0, so a degenerate evaluation gives a finite, obviously-bad row instead of a crash.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.metrics.bootstrap import resamples_of, summarize

IGNORE_LABEL = 255


@dataclass(frozen=True)
class SegmentationResult:
    mIoU: float
    pixel_accuracy: float
    mean_accuracy: float
    iou: np.ndarray  # (num_classes,)
    confusion: np.ndarray  # (num_classes, num_classes) int64, rows = ground truth

    def as_dict(self) -> dict[str, float]:
        """The task's metrics as fractions: mIoU, PixelAcc, MeanAcc."""
        return {"mIoU": self.mIoU, "PixelAcc": self.pixel_accuracy,
                "MeanAcc": self.mean_accuracy}


def confusion_matrix(pred, gt, num_classes: int, ignore: int = IGNORE_LABEL) -> np.ndarray:
    """``M[gt, pred]`` pixel counts over the pixels whose ground truth is not ``ignore``.

    Ground truth and prediction must have the same shape; every kept ground-truth label and
    every prediction on a kept pixel must lie in ``0..num_classes-1``.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    keep = gt != ignore
    g = gt[keep].astype(np.int64, copy=False)
    p = pred[keep].astype(np.int64, copy=False)
    if g.size:
        for name, a in (("ground truth", g), ("prediction", p)):
            lo, hi = int(a.min()), int(a.max())
            if lo < 0 or hi >= num_classes:
                raise ValueError(f"{name} label {lo if lo < 0 else hi} outside "
                                 f"0..{num_classes - 1} (ignore label {ignore})")
    counts = np.bincount(g * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def metrics_from_confusion(m: np.ndarray) -> SegmentationResult:
    m = np.asarray(m, dtype=np.int64)
    iou, pixel_acc, mean_acc = _scores(m)
    return SegmentationResult(float(iou.mean()), float(pixel_acc), float(mean_acc), iou, m)


def _scores(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(IoU per class, pixel accuracy, mean accuracy) of one ``(K, K)`` confusion matrix or
    of a stack ``(..., K, K)``, as SCHP defines them (the module docstring)."""
    m = np.asarray(m, dtype=np.float64)
    pos, res = m.sum(-1), m.sum(-2)
    tp = np.diagonal(m, axis1=-2, axis2=-1)
    total = pos.sum(-1)
    pixel_acc = np.where(total > 0, tp.sum(-1) / np.maximum(total, 1.0), 0.0)
    mean_acc = (tp / np.maximum(1.0, pos)).mean(-1)
    iou = tp / np.maximum(1.0, pos + res - tp)
    return iou, pixel_acc, mean_acc


def paired_bootstrap(per_image_a: np.ndarray, per_image_b: np.ndarray, resamples: int = 1000,
                     seed: int = 0) -> dict[str, dict[str, float]]:
    """Two predictions of the same images compared, from their per-image confusion matrices
    ``(N, K, K)``: ``{metric: {a, b, diff, lo, hi}}`` in percent, a and b on all images and
    (lo, hi) the 2.5 and 97.5 percentiles of a − b over ``resamples`` resamples of the images
    with replacement (the same resample for both).  Vectorised: a resample is a vector of
    image counts, and its confusion matrix the count-weighted sum."""
    a, b = np.asarray(per_image_a, np.int64), np.asarray(per_image_b, np.int64)
    if a.shape != b.shape or a.ndim != 3 or a.shape[1] != a.shape[2]:
        raise ValueError(f"per-image confusion matrices of shape (N, K, K) expected, "
                         f"got {a.shape} and {b.shape}")
    n, k = a.shape[0], a.shape[1]
    draws = resamples_of(n, resamples, seed)
    counts = np.zeros((resamples, n))
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1.0)

    def metrics(m):  # m: (..., K, K) -> {name: values}
        iou, pixel_acc, mean_acc = _scores(m)
        return {"mIoU": iou.mean(-1), "PixelAcc": pixel_acc, "MeanAcc": mean_acc}

    full_a, full_b = metrics(a.sum(0)), metrics(b.sum(0))
    boot_a = metrics((counts @ a.reshape(n, k * k)).reshape(resamples, k, k))
    boot_b = metrics((counts @ b.reshape(n, k * k)).reshape(resamples, k, k))
    return summarize(full_a, full_b, {name: boot_a[name] - boot_b[name] for name in full_a})


class ConfusionMatrix:
    """Streaming accumulator: ``update(pred, gt)`` per image or batch, then ``compute()``."""

    def __init__(self, num_classes: int, ignore: int = IGNORE_LABEL):
        self.num_classes, self.ignore = num_classes, ignore
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred, gt) -> None:
        self.matrix += confusion_matrix(_np(pred), _np(gt), self.num_classes, self.ignore)

    def compute(self) -> SegmentationResult:
        return metrics_from_confusion(self.matrix)


def mean_iou(preds, gts, num_classes: int, ignore: int = IGNORE_LABEL) -> SegmentationResult:
    """SCHP's ``compute_mean_ioU`` on plain arrays: one (pred, gt) pair or lists of them
    (images of different sizes)."""
    acc = ConfusionMatrix(num_classes, ignore)
    if isinstance(preds, (list, tuple)):
        for p, g in zip(preds, gts, strict=True):
            acc.update(p, g)
    else:
        acc.update(preds, gts)
    return acc.compute()


def _np(a) -> np.ndarray:
    if hasattr(a, "detach"):  # a torch tensor
        return a.detach().cpu().numpy()
    return np.asarray(a)


__all__ = ["ConfusionMatrix", "IGNORE_LABEL", "SegmentationResult", "confusion_matrix",
           "mean_iou", "metrics_from_confusion", "paired_bootstrap"]
