"""Pedestrian attribute recognition: RethinkPAR's baseline as SOLIDER's attribute fork runs it.

Paper: Jia et al., "Rethinking of Pedestrian Attribute Recognition: A Reliable Evaluation
under Zero-Shot Pedestrian Identity Setting" (valencebond/Rethinking_of_PAR); SOLIDER's fork
(tinyvision/SOLIDER-PersonAttributeRecognition) swaps in the Swin backbone.

Method.  The backbone's last stage is average-pooled and a linear layer gives one logit per
attribute (``LinearClassifier``, BN off).  The loss is binary cross-entropy weighted per
attribute by exp(t·(1-r) + (1-t)·r), r the attribute's positive rate in the training split,
summed over attributes and averaged over the batch (:mod:`bench.metrics.attributes`).
Images are resized to 256x128 (PA100k) or 256x192 (PETA-zs, RAP-zs), padded by 10 and
randomly cropped back, flipped, and normalised with ImageNet statistics.  Adam in two
parameter groups as RethinkPAR builds it (``LR_FT`` for the backbone, ``LR_NEW`` for the
classifier; SOLIDER's configs set both to 1e-5), batch 64, 30 epochs; PA100k and RAP: no
weight decay and ``ReduceLROnPlateau`` (x0.1, patience 4) stepped on the loss of the
evaluation split after each epoch, as RethinkPAR does (its validation split is the test
split); PETA: weight decay 5e-4 and x0.1 steps at epochs 10 and 15.  λ = 0.8.
Training uses the ``trainval`` split and evaluation the ``test`` split, on the attributes
the benchmark evaluates (PETA 35, RAP-zs 53, PA100k 26).  Metrics: label-based mA and the
instance-based accuracy, precision, recall and F1, in percent.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from torchvision.transforms import v2 as T

from adapters import Metric, TaskSpec, register_task
from adapters._engine import (IMAGENET, ImageList, build_backbone, extract, fit, num_workers,
                              schedule_for, seed_everything)
from bench.data import dataset_root, read_dataset
from bench.errors import BenchError
from bench.io import atomic_write_bytes
from bench.metrics.attributes import (AttributeMetrics, pedestrian_metrics, positive_ratio,
                                      weighted_bce)
from bench.metrics.bootstrap import resamples_of, summarize

SPEC = TaskSpec(
    name="attribute", version=1, title="Pedestrian attribute recognition",
    paper="RethinkPAR", reference_code="tinyvision/SOLIDER-PersonAttributeRecognition "
                                       "(Rethinking_of_PAR fork)",
    datasets=("peta_zs", "rap_zs", "pa100k"),
    metrics=(Metric("mA"), Metric("Accu"), Metric("Prec"), Metric("Recall"), Metric("F1")),
    semantic_weight=0.8,
    notes="metrics in percent; threshold 0.5; trainval -> test",
)


@dataclass(frozen=True)
class Schedule:
    input_size: tuple[int, int] = (256, 128)  # (256, 192) for PETA-zs and RAP-zs
    wide_input_size: tuple[int, int] = (256, 192)
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-5  # RethinkPAR's LR_FT: the backbone's learning rate
    head_lr: float | None = None  # its LR_NEW, the classifier's (None: the same as lr)
    weight_decay: float = 0.0  # 5e-4 for PETA
    peta_weight_decay: float = 5e-4
    milestones: tuple[int, ...] = (10, 15)  # PETA's multistep; others use a plateau scheduler
    pad: int = 10
    drop_path_rate: float = 0.0
    eval_batch_size: int = 128


SCHEDULES = {
    "paper": Schedule(),
    # smoke: the new classifier learns at 10x the backbone's rate (RethinkPAR's LR_NEW next to
    # LR_FT); at one rate the head hardly moves in the few dozen steps a CPU affords, and a
    # pretrained backbone then scores no better than a random one
    "smoke": Schedule(input_size=(128, 64), wide_input_size=(128, 96), epochs=4,
                      batch_size=32, lr=3e-4, head_lr=3e-3, pad=4, eval_batch_size=64),
}


class AttributeModel(nn.Module):
    def __init__(self, backbone: nn.Module, num_attributes: int, semantic_weight: float | None):
        super().__init__()
        self.backbone = backbone
        self.semantic_weight = semantic_weight
        self.classifier = nn.Linear(backbone.num_features, num_attributes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kw = {} if self.semantic_weight is None else {"semantic_weight": self.semantic_weight}
        return self.classifier(self.backbone(x, **kw))


def transforms(size: tuple[int, int], pad: int, train: bool):
    mean, std = IMAGENET
    steps = [T.Resize(list(size))]
    if train:
        steps += [T.Pad(pad), T.RandomCrop(list(size)), T.RandomHorizontalFlip()]
    return T.Compose(steps + [T.ToImage(), T.ToDtype(torch.float32, scale=True),
                              T.Normalize(mean, std)])


def evaluate(gt, probs, threshold: float = 0.5, index=None) -> AttributeMetrics:
    """mA and instance metrics on plain arrays (see :mod:`bench.metrics.attributes`)."""
    return pedestrian_metrics(gt, probs, threshold, index)


@register_task(SPEC)
class Attribute:
    def run(self, ctx):
        from bench.runner import Measurement

        s = schedule_for(ctx, SCHEDULES)
        for key in ctx.datasets:
            root, _ = dataset_root(ctx.config, key, profile=ctx.profile)
            data = read_dataset(key, root)
            m = self.train_and_test(ctx, s, data, key)
            for name, value in m.as_dict().items():
                yield Measurement(key, "test", name, 100.0 * value)

    def train_and_test(self, ctx, s: Schedule, data, key: str) -> AttributeMetrics:
        gen = seed_everything(ctx.seed)
        size = s.input_size if key == "pa100k" else s.wide_input_size
        train_idx, test_idx = data.splits["trainval"], data.splits["test"]
        # RethinkPAR (DATASET.LABEL = 'eval') learns and predicts the evaluated attributes only
        label_np = data.labels[:, data.eval_attr_idx]
        labels = torch.as_tensor(label_np, dtype=torch.float32)
        model = AttributeModel(build_backbone(ctx, drop_path_rate=s.drop_path_rate),
                               labels.shape[1], ctx.semantic_weight).to(ctx.device)
        ratio = torch.as_tensor(positive_ratio(label_np[train_idx]), dtype=torch.float32)
        items = [(data.images[i], labels[i]) for i in train_idx]
        loader = DataLoader(ImageList(items, transforms(size, s.pad, True)),
                            batch_size=s.batch_size, shuffle=True, drop_last=len(items) > s.batch_size,
                            num_workers=num_workers(), generator=gen)
        peta = key.startswith("peta")
        head_lr = s.lr if s.head_lr is None else s.head_lr
        optimizer = torch.optim.Adam(  # RethinkPAR's two groups: LR_FT, LR_NEW
            [{"params": model.backbone.parameters(), "lr": s.lr},
             {"params": model.classifier.parameters(), "lr": head_lr}],
            weight_decay=s.peta_weight_decay if peta else s.weight_decay)

        test_items = [(data.images[i], labels[i]) for i in test_idx]
        test_loader = DataLoader(ImageList(test_items, transforms(size, s.pad, False)),
                                 batch_size=s.eval_batch_size, num_workers=num_workers())

        def step(batch):
            x, y = batch
            logits = model(x.to(ctx.device))
            return weighted_bce(logits.float(), y.to(ctx.device), ratio.to(ctx.device))

        if peta:  # multistep, x0.1 at each milestone
            plateau = None
            lr_at = lambda e: [lr * 0.1 ** sum(e >= m for m in s.milestones)  # noqa: E731
                               for lr in (s.lr, head_lr)]
        else:  # ReduceLROnPlateau on the evaluation split's loss, as RethinkPAR steps it
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1,
                                                                 patience=4)
            lr_at = None

        def after_epoch(epoch: int, _train_loss: float) -> None:
            if plateau is not None:
                model.eval()
                logits, (gt,) = extract(ctx, model, test_loader, "validation loss")
                plateau.step(float(weighted_bce(logits, gt, ratio)))

        fit(ctx, model, loader, step, optimizer, s.epochs, lr_at, state_name=f"{key}_state.pt",
            after_epoch=after_epoch, stateful={"plateau": plateau} if plateau else None)
        model.eval()
        logits, (gt,) = extract(ctx, model, test_loader, "test")
        probs = torch.sigmoid(logits).numpy()
        buf = io.BytesIO()  # saved for `bench eval attribute <file> <dataset>`
        np.savez(buf, probs=probs, images=[data.images[i] for i in test_idx],
                 attributes=list(data.eval_attr_names))
        atomic_write_bytes(Path(ctx.work_dir) / f"{key}_predictions.npz", buf.getvalue())
        return evaluate(gt.numpy(), probs)

    @staticmethod
    def evaluate_file(path, data) -> dict[str, float]:
        """Re-evaluate saved predictions (``<dataset>_predictions.npz`` of a run: scores of
        the evaluated attributes for test images, with their paths) against dataset records."""
        gt, probs, _ = _load_predictions(path, data)
        return {k: 100.0 * v for k, v in evaluate(gt, probs).as_dict().items()}

    @staticmethod
    def compare_files(path, baseline, data, resamples: int = 1000, seed: int = 0
                      ) -> dict[str, dict[str, float]]:
        """Two runs' saved predictions on the same test images, compared: each metric of
        both, their difference and its 95% paired-bootstrap interval (the test images
        resampled with replacement, the same resample for both runs)."""
        gt, probs, names = _load_predictions(path, data)
        _, probs_b, names_b = _load_predictions(baseline, data)
        if sorted(names) != sorted(names_b):
            raise BenchError(f"{baseline}: its test images differ from those of {path}")
        order = {n: i for i, n in enumerate(names_b)}
        probs_b = probs_b[[order[n] for n in names]]
        return paired_bootstrap(gt, probs, probs_b, resamples, seed)


def paired_bootstrap(gt, probs_a, probs_b, resamples: int = 1000, seed: int = 0
                     ) -> dict[str, dict[str, float]]:
    """``{metric: {a, b, diff, lo, hi}}`` in percent: a and b evaluated on all rows, and
    the 2.5 and 97.5 percentiles of a − b over ``resamples`` paired resamples of the rows."""
    full_a, full_b = evaluate(gt, probs_a).as_dict(), evaluate(gt, probs_b).as_dict()
    draws = resamples_of(len(gt), resamples, seed)
    diffs = {k: np.empty(resamples) for k in full_a}
    for r, rows in enumerate(draws):
        ma = evaluate(gt[rows], probs_a[rows]).as_dict()
        mb = evaluate(gt[rows], probs_b[rows]).as_dict()
        for k in diffs:
            diffs[k][r] = ma[k] - mb[k]
    return summarize(full_a, full_b, diffs)


def _load_predictions(path, data) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(ground truth, scores, image names) of a ``<dataset>_predictions.npz``."""
    pred = np.load(path)
    index = {Path(p).name: i for i, p in enumerate(data.images)}
    if list(pred["attributes"]) != list(data.eval_attr_names):
        raise BenchError(f"{path}: its attributes differ from {data.name}'s evaluated ones")
    names = [Path(p).name for p in pred["images"]]
    try:
        rows = [index[n] for n in names]
    except KeyError as e:
        raise BenchError(f"{path}: image {e.args[0]} is not in dataset {data.name}") from None
    return data.labels[rows][:, data.eval_attr_idx], pred["probs"], names
