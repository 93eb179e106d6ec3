"""Pedestrian attribute metrics and loss, as RethinkPAR defines them.

Reference: Jia et al., "Rethinking of Pedestrian Attribute Recognition" (valencebond/
Rethinking_of_PAR, ``metrics/pedestrian_metrics.py::get_pedestrian_metrics`` and
``losses/bceloss.py``), which SOLIDER's attribute fork uses unchanged.

Label-based: per attribute, positive recall TP/(TP+FN) and negative recall TN/(TN+FP), each
divided with an epsilon of 1e-20 added to the denominator, so an attribute with no positive
in the split has positive recall 0 (not undefined) and mA = negative recall / 2 for it;
mA is the mean of (pos recall + neg recall)/2 over the evaluated attributes.
Instance-based: per sample, accuracy = |pred ∩ gt| / |pred ∪ gt|, precision = |pred ∩ gt| /
|pred|, recall = |pred ∩ gt| / |gt| (same epsilon: a sample with no positive label has recall
0), averaged over samples; F1 is the harmonic mean of the *averaged* precision and recall,
as RethinkPAR computes it (not the mean of per-sample F1).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

EPS = 1e-20


@dataclass(frozen=True)
class AttributeMetrics:
    mA: float
    label_mA: np.ndarray  # per attribute
    label_pos_recall: np.ndarray
    label_neg_recall: np.ndarray
    instance_acc: float
    instance_prec: float
    instance_recall: float
    instance_f1: float

    def as_dict(self) -> dict[str, float]:
        return {"mA": self.mA, "Accu": self.instance_acc, "Prec": self.instance_prec,
                "Recall": self.instance_recall, "F1": self.instance_f1}


def pedestrian_metrics(gt, probs, threshold: float = 0.5, index=None) -> AttributeMetrics:
    """``gt`` (N, A) in {0, 1}, ``probs`` (N, A) scores; ``index`` selects evaluated attributes.
    A prediction is positive when its score is strictly above ``threshold``."""
    gt = np.asarray(gt)
    pred = np.asarray(probs) > threshold
    if gt.shape != pred.shape:
        raise ValueError(f"labels {gt.shape} and predictions {pred.shape} differ in shape")
    if index is not None:
        gt, pred = gt[:, index], pred[:, index]
    pos, neg = gt == 1, gt == 0
    tp = (pos & pred).sum(0).astype(float)
    tn = (neg & ~pred).sum(0).astype(float)
    pos_recall = tp / (pos.sum(0) + EPS)
    neg_recall = tn / (neg.sum(0) + EPS)
    label_ma = (pos_recall + neg_recall) / 2
    inter = (pos & pred).sum(1).astype(float)
    union = (pos | pred).sum(1).astype(float)
    acc = float(np.mean(inter / (union + EPS)))
    prec = float(np.mean(inter / (pred.sum(1) + EPS)))
    rec = float(np.mean(inter / (pos.sum(1) + EPS)))
    return AttributeMetrics(float(np.mean(label_ma)), label_ma, pos_recall, neg_recall, acc, prec,
                            rec, 2 * prec * rec / (prec + rec + EPS))


def positive_ratio(labels) -> np.ndarray:
    """Per-attribute positive rate of the training labels (RethinkPAR's ``sample_weight``)."""
    return (np.asarray(labels) == 1).mean(0)


def weighted_bce(logits: torch.Tensor, targets: torch.Tensor, ratio: torch.Tensor | None,
                 size_sum: bool = True) -> torch.Tensor:
    """BCE with RethinkPAR's weighting exp(t·(1-r) + (1-t)·r), r the attribute's positive rate:
    positives of rare attributes and negatives of common ones weigh more.  ``size_sum``
    sums over attributes and averages over samples (RethinkPAR's default)."""
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if ratio is not None:
        t = (targets > 0.5).to(logits.dtype)
        r = ratio.to(logits.dtype)
        loss = loss * torch.exp(t * (1 - r) + (1 - t) * r)
    return loss.sum(1).mean() if size_sum else loss.sum()
