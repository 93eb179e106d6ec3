"""Unsupervised person re-identification: Cluster Contrast fine-tuning, and frozen features.

Paper: Dai et al., "Cluster Contrast for Unsupervised Person Re-Identification" (ACCV 2022);
reference code alibaba/cluster-contrast-reid (``examples/cluster_contrast_train_usl.py``,
``clustercontrast/models/cm.py``), of which damo-cv/TransReID-SSL keeps the copy that the
LUPerson-pretrained transformers are fine-tuned with.

Why this task, and what is our choice.  VAL-PAT reports unsupervised reID numbers
(``results/published/valpat_reported.csv``), but its source names the benchmarks only by
slug: reading them as Market-1501 and MSMT17 is our inference (each row says so), and so is
the protocol, Cluster Contrast, the standard fine-tuning of a pretrained backbone without
identity labels.  Its rows are compared with our fine-tuned rows (metrics ``mAP``,
``Rank-k``), never with the frozen ones.

Method (fine-tuning, ``mode = "train"``).  No identity label is read.  Every epoch starts by
re-labelling the training set: the current model's test feature of every training image,
k-reciprocal Jaccard distances between them (k1 = 30, k2 = 6;
:func:`bench.metrics.reid.jaccard_distance`, the machinery of re-ranking), and DBSCAN on that
precomputed matrix (eps = 0.6 for Market-1501 and 0.7 for MSMT17, min_samples = 4;
:func:`dbscan`); the outliers (label -1) sit the epoch out.  A cluster memory is
initialised with the L2-normalised centroids of the clusters.  Batches hold P = 16 clusters
x K = 16 images (the reference's ``RandomMultipleGallerySampler``: an anchor, then K-1 other
images of its cluster taken from other cameras where there are any); an epoch is a fixed
number of iterations (200 for Market-1501, 400 for MSMT17).  The loss is ClusterNCE: the
cross-entropy of the L2-normalised feature's similarities to every centroid over a
temperature τ = 0.05.  After each step the memory moves towards the batch, c ← m·c + (1-m)·q
renormalised, m = 0.1, with q the batch's hardest instance of the cluster, the one least
similar to c (the paper's update, ``--use-hard``; ``memory_update = "hard"``), or the batch
mean of the cluster (``"mean"``), or each instance in turn (``"instance"``, the reference's
update without ``--use-hard``).  The model is the backbone's pooled feature followed by a
BatchNorm1d with a frozen bias (the reference's output BN); its output, L2-normalised, is
the feature that is clustered and tested.  Adam (learning rate 3.5e-4, weight decay 5e-4),
50 epochs, the rate divided by 10 every 20.  Images 256x128, flipped, padded by 10 and
cropped back, ImageNet normalisation, random erasing (p = 0.5, filled with the mean values
after normalisation, as the reference does).

Frozen features (``mode = "frozen"``).  The backbone as it comes, no training at all: its
pooled feature, L2-normalised, is compared by Euclidean distance.  This is also the
fine-tuning's starting point (a fresh BatchNorm1d in eval mode only rescales).  Its rows are
named ``frozen mAP``, ``frozen Rank-k``; ``mode = "both"`` (the default) reports both.

Evaluation: CMC/mAP under the Market-1501 protocol, as :mod:`adapters.reid` evaluates; the
predictions (``<dataset>_predictions.npz`` fine-tuned, ``<dataset>_frozen_predictions.npz``)
re-evaluate with ``bench eval reid_unsup``.  The log gives chance level
(:func:`adapters.reid.chance`: random distance matrices under the same protocol) and, per
epoch, the number of clusters and outliers.

Our choices beyond the reference: λ = 0.2 with the semantic controller frozen and drop path
0.1, as supervised reID (SOLIDER-REID); the final model is tested, where the reference tests
every 10 epochs and keeps the best on the test set; the re-labelling is a deterministic
function of the model at the start of an epoch, so a resumed run recomputes it instead of
saving labels or memory (the memory is re-initialised every epoch anyway); an epoch in which
DBSCAN finds no cluster is logged and trains nothing.

The ``smoke`` schedule keeps the method and shrinks everything for a 2-core CPU (128x64,
3 epochs of 4 iterations of 8 clusters x 4 images); the synthetic world has 3 to 12 images
per identity, so smoke-only clustering settings take smaller neighbourhoods (k1 = 10,
k2 = 3) and min_samples = 3 (see ``SCHEDULES``).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler

from adapters import Metric, TaskSpec, register_task
from adapters._engine import (IMAGENET, ImageList, build_backbone, crop_transforms, extract,
                              fit, num_workers, schedule_for, seed_everything)
from adapters.reid import ReID, _measure, chance, evaluate, features
from bench.data import dataset_root, read_dataset
from bench.errors import BenchError
from bench.io import atomic_write_bytes
from bench.metrics.reid import RankResult, jaccard_distance, pairwise_distance

RANKS = (1, 5, 10)
SPEC = TaskSpec(
    name="reid_unsup", version=1, title="Unsupervised person re-identification",
    paper="Cluster Contrast", reference_code="alibaba/cluster-contrast-reid",
    datasets=("market1501", "msmt17"),
    metrics=tuple(Metric(f"{prefix}{m}") for prefix in ("", "frozen ")
                  for m in ("mAP", "Rank-1", "Rank-5", "Rank-10")),
    semantic_weight=0.2,
    notes="metrics in percent; no identity label in training; 'frozen' rows: the backbone "
          "as it comes; VAL-PAT's datasets inferred (results/published)",
)

# The reference's per-dataset settings (alibaba/cluster-contrast-reid README; MSMT17's eps
# as TransReID-SSL's msmt_usl.sh sets it for transformers).
REFERENCE_EPS = {"market1501": 0.6, "msmt17": 0.7}
REFERENCE_ITERS = {"market1501": 200, "msmt17": 400}


@dataclass(frozen=True)
class Schedule:
    mode: Literal["both", "train", "frozen"] = "both"
    input_size: tuple[int, int] = (256, 128)
    epochs: int = 50
    iters: int | None = None  # iterations per epoch; None: REFERENCE_ITERS of the dataset
    batch_size: int = 256
    k: int = 16  # images per cluster in a batch
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    step_size: int = 20  # the learning rate is multiplied by gamma every step_size epochs
    gamma: float = 0.1
    eps: float | None = None  # DBSCAN radius on Jaccard distances; None: REFERENCE_EPS
    min_samples: int = 4
    k1: int = 30
    k2: int = 6
    momentum: float = 0.1
    temperature: float = 0.05
    memory_update: Literal["hard", "mean", "instance"] = "hard"
    mean: tuple[float, float, float] = IMAGENET[0]
    std: tuple[float, float, float] = IMAGENET[1]
    erase_p: float = 0.5
    pad: int = 10
    freeze_controller: bool = True
    drop_path_rate: float = 0.1
    eval_batch_size: int = 256


SCHEDULES = {
    "paper": Schedule(),
    # smoke-only clustering: ~7 images per identity in the synthetic world, so smaller
    # k-reciprocal neighbourhoods and min_samples; eps as the reference's Market-1501 value
    "smoke": Schedule(input_size=(128, 64), epochs=3, iters=4, batch_size=32, k=4,
                      step_size=2, eps=0.6, min_samples=3, k1=10, k2=3, pad=4,
                      drop_path_rate=0.0, eval_batch_size=64),
}


# --------------------------------------------------------------------------------------
# Clustering
# --------------------------------------------------------------------------------------
def dbscan(dist, eps: float, min_samples: int) -> np.ndarray:
    """DBSCAN on a precomputed (N, N) distance matrix: labels 0..C-1, -1 for outliers.

    Vectorised: the neighbourhood of i is {j : d(i, j) <= eps} (itself included); core
    points have at least ``min_samples`` neighbours; clusters are the connected components
    of the core points under that relation; a non-core point with a core neighbour joins the
    lowest-numbered cluster among its core neighbours' clusters, and clusters are numbered
    by their lowest-index core point.  This is what scikit-learn's
    ``DBSCAN(metric="precomputed")`` returns (it expands clusters from core points in index
    order, so a border point goes to the first cluster that reaches it).
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    d = dist.numpy() if isinstance(dist, torch.Tensor) else np.asarray(dist)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"dbscan needs a square distance matrix, got shape {d.shape}")
    near = d <= eps
    core = near.sum(1) >= min_samples
    labels = np.full(len(d), -1, dtype=np.int64)
    core_idx = np.flatnonzero(core)
    if len(core_idx) == 0:
        return labels
    _, comp = connected_components(csr_matrix(near[np.ix_(core_idx, core_idx)]), directed=False)
    # number the components by their lowest core index (core_idx is sorted)
    _, first = np.unique(comp, return_index=True)
    order = np.empty(len(first), dtype=np.int64)
    order[np.argsort(first)] = np.arange(len(first))
    labels[core_idx] = order[comp]
    border = np.flatnonzero(~core & near[:, core].any(1))
    if len(border):
        cand = np.where(near[np.ix_(border, core_idx)], labels[core_idx][None, :], len(first))
        labels[border] = cand.min(1)
    return labels


def pseudo_labels(features: torch.Tensor, eps: float, min_samples: int, k1: int,
                  k2: int) -> np.ndarray:
    """Cluster Contrast's labelling: DBSCAN on the k-reciprocal Jaccard distances."""
    return dbscan(jaccard_distance(features, k1, k2), eps, min_samples)


def centroids(features: torch.Tensor, labels) -> torch.Tensor:
    """(C, D) L2-normalised mean feature of each cluster 0..C-1 (outliers ignored)."""
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    keep = labels >= 0
    n = int(labels.max()) + 1 if keep.any() else 0
    f = features.float()
    sums = torch.zeros(n, f.shape[1]).index_add_(0, labels[keep], f[keep])
    counts = torch.bincount(labels[keep], minlength=n).clamp_(min=1)
    return F.normalize(sums / counts[:, None], dim=1)


# --------------------------------------------------------------------------------------
# Cluster memory and ClusterNCE
# --------------------------------------------------------------------------------------
class ClusterMemory(nn.Module):
    """One L2-normalised feature per cluster; ``forward`` gives the ClusterNCE loss of a
    batch and then moves each batch cluster's entry towards the batch (momentum update).

    The logits use the memory as it was before the update (the reference updates in the
    backward pass of its autograd function).  Computed in fp32 whatever the autocast.
    """

    def __init__(self, dim: int, temperature: float = 0.05, momentum: float = 0.1,
                 update: str = "hard"):
        super().__init__()
        if update not in ("hard", "mean", "instance"):
            raise ValueError(f"memory update must be hard, mean or instance, got {update!r}")
        self.temperature, self.momentum, self.update_rule = temperature, momentum, update
        self.register_buffer("features", torch.zeros(0, dim))

    def reset(self, centroids: torch.Tensor) -> None:
        self.features = F.normalize(centroids.float(), dim=1).to(self.features.device)

    def forward(self, feat: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=feat.device.type, enabled=False):
            q = F.normalize(feat.float(), dim=1)
            loss = F.cross_entropy(q @ self.features.T / self.temperature, labels)
            self.update(q.detach(), labels)
        return loss

    @torch.no_grad()
    def update(self, q: torch.Tensor, labels: torch.Tensor) -> None:
        mem, m = self.features.clone(), self.momentum  # a new tensor: autograd keeps the old
        if self.update_rule == "instance":
            for x, y in zip(q, labels.tolist()):
                mem[y] = F.normalize(m * mem[y] + (1 - m) * x, dim=0)
        else:
            for y in labels.unique().tolist():
                xs = q[labels == y]
                x = xs[(xs @ mem[y]).argmin()] if self.update_rule == "hard" else xs.mean(0)
                mem[y] = F.normalize(m * mem[y] + (1 - m) * x, dim=0)
        self.features = mem


# --------------------------------------------------------------------------------------
# Sampling over pseudo-labels
# --------------------------------------------------------------------------------------
class ClusterSampler(Sampler[int]):
    """P clusters x K images per batch over the current pseudo-labels, ``iters`` batches.

    ``set_epoch(epoch)`` re-labels first (``relabel(epoch)`` returns the labels, -1 for
    outliers): the engine's :func:`fit` calls it at the start of every epoch, before the
    model is put in training mode, which is where Cluster Contrast re-clusters.  Groups of
    K come from passes over the clusters in random order (the reference's
    ``RandomMultipleGallerySampler`` cycled by its ``IterLoader``): a random anchor, then
    K-1 other members from other cameras if the cluster has any, else from its other
    members (with replacement when there are too few; a singleton repeats itself).  The
    order depends only on (seed, epoch).  With no cluster, an epoch yields nothing.
    """

    def __init__(self, relabel: Callable[[int], np.ndarray], camids, batch_size: int, k: int,
                 iters: int, seed: int = 0):
        if batch_size % k:
            raise BenchError(f"batch size {batch_size} is not a multiple of K={k}")
        self.relabel, self.camids = relabel, np.asarray(camids)
        self.batch_size, self.k, self.iters, self.seed = batch_size, k, iters, seed
        self.epoch, self.labels = 0, None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.labels = np.asarray(self.relabel(epoch))

    def __len__(self) -> int:
        return self.iters * self.batch_size

    def __iter__(self):
        if self.labels is None:
            raise RuntimeError("ClusterSampler: call set_epoch first (it clusters)")
        members = [np.flatnonzero(self.labels == c) for c in range(int(self.labels.max()) + 1)]
        if not members:
            return iter(())
        rng = np.random.default_rng([self.seed, self.epoch])
        out: list[int] = []
        while len(out) < len(self):
            for c in rng.permutation(len(members)):
                out.extend(self._group(members[c], rng))
        return iter(out[: len(self)])

    def _group(self, idx: np.ndarray, rng: np.random.Generator) -> list[int]:
        anchor = rng.choice(idx)
        others = idx[self.camids[idx] != self.camids[anchor]]
        if len(others) == 0:
            others = idx[idx != anchor]
        if len(others) == 0:
            others = np.array([anchor])
        rest = rng.choice(others, size=self.k - 1, replace=len(others) < self.k - 1)
        return [int(anchor), *map(int, rest)]


# --------------------------------------------------------------------------------------
# Model, data, the task
# --------------------------------------------------------------------------------------
class UnsupReIDModel(nn.Module):
    """Backbone -> pooled feature -> BatchNorm1d (frozen bias); L2-normalised in eval mode."""

    def __init__(self, backbone: nn.Module, semantic_weight: float | None):
        super().__init__()
        self.backbone = backbone
        self.semantic_weight = semantic_weight
        self.num_features = backbone.num_features
        self.neck = nn.BatchNorm1d(self.num_features)
        self.neck.bias.requires_grad_(False)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        kw = {} if self.semantic_weight is None else {"semantic_weight": self.semantic_weight}
        return self.backbone(x, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.neck(self.pooled(x))
        return f if self.training else F.normalize(f, dim=1)


def transforms(s: Schedule, train: bool):
    return crop_transforms(s.input_size, s.mean, s.std, train=train, pad=s.pad, erase_p=s.erase_p)


@register_task(SPEC)
class ReIDUnsup:
    evaluate_file = staticmethod(ReID.evaluate_file)  # same prediction files as reid

    def run(self, ctx):
        s = schedule_for(ctx, SCHEDULES)
        for key in ctx.datasets:
            root, _ = dataset_root(ctx.config, key, profile=ctx.profile)
            yield from self.run_dataset(ctx, s, read_dataset(key, root), key)

    def run_dataset(self, ctx, s: Schedule, data, key: str):
        gen = seed_everything(ctx.seed)
        backbone = build_backbone(ctx, drop_path_rate=s.drop_path_rate)
        model = UnsupReIDModel(backbone, ctx.semantic_weight).to(ctx.device)
        ctx.log(f"{key}: chance level " + ", ".join(f"{k} {v:.1f}"
                                                     for k, v in chance(data).items()))
        if s.mode in ("both", "frozen"):
            for name, value in self.frozen(ctx, s, model, data).items():
                yield _measure(key, f"frozen {name}", value)
        if s.mode in ("both", "train"):
            self.train(ctx, s, model, data, key, gen)
            result = self.test(ctx, s, model, data)
            for name, value in result.as_dict(RANKS).items():
                yield _measure(key, name, 100.0 * value)

    def frozen(self, ctx, s: Schedule, model: UnsupReIDModel, data) -> dict[str, float]:
        """Metrics of the backbone as it comes (kept in the work folder for a resume)."""
        saved = Path(ctx.work_dir) / f"{data.name}_frozen_predictions.npz"
        if saved.is_file():
            ctx.log(f"{data.name}: frozen features evaluated earlier: {saved.name}")
            return self.evaluate_file(saved, data)
        r = self.test(ctx, s, model, data, frozen=True)
        return {k: 100.0 * v for k, v in r.as_dict(RANKS).items()}

    def train(self, ctx, s: Schedule, model: UnsupReIDModel, data, key: str,
              gen: torch.Generator) -> None:
        train = [im for im in data.train if im.pid > 0 or key == "msmt17"]  # no label is read
        eps = s.eps if s.eps is not None else REFERENCE_EPS.get(key, 0.6)
        iters = s.iters if s.iters is not None else REFERENCE_ITERS.get(key, 200)
        if s.freeze_controller:
            for name, p in model.backbone.named_parameters():
                if name.startswith("semantic_embed"):
                    p.requires_grad_(False)
        memory = ClusterMemory(model.num_features, s.temperature, s.momentum,
                               s.memory_update).to(ctx.device)
        plain = DataLoader(ImageList([(im.path,) for im in train], transforms(s, False)),
                           batch_size=s.eval_batch_size, num_workers=num_workers())

        def relabel(epoch: int) -> np.ndarray:
            model.eval()
            feats, _ = extract(ctx, model, plain, f"cluster epoch {epoch + 1}")
            labels = pseudo_labels(feats, eps, s.min_samples, s.k1, s.k2)
            n = int(labels.max()) + 1
            if n == 0:
                ctx.log(f"epoch {epoch + 1}: DBSCAN found no cluster (all {len(labels)} images "
                        f"are outliers at eps={eps}, min_samples={s.min_samples}); "
                        "this epoch trains nothing")
                memory.reset(torch.zeros(0, model.num_features))
            else:
                ctx.log(f"epoch {epoch + 1}: {n} clusters, {int((labels < 0).sum())} outliers "
                        f"of {len(labels)} images")
                memory.reset(centroids(feats, labels))
            return labels

        sampler = ClusterSampler(relabel, [im.camid for im in train], s.batch_size, s.k, iters,
                                 seed=ctx.seed)
        items = [(im.path, i) for i, im in enumerate(train)]
        loader = DataLoader(ImageList(items, transforms(s, True)), batch_size=s.batch_size,
                            sampler=sampler, num_workers=num_workers(), drop_last=True,
                            generator=gen)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad],
                                     lr=s.lr, weight_decay=s.weight_decay)

        def step(batch):
            x, idx = batch
            y = torch.as_tensor(sampler.labels)[idx].to(ctx.device)
            return memory(model(x.to(ctx.device)), y)

        fit(ctx, model, loader, step, optimizer, s.epochs,
            lambda e: (s.lr * s.gamma ** (e // s.step_size),), state_name=f"{key}_state.pt")

    def test(self, ctx, s: Schedule, model: UnsupReIDModel, data,
             frozen: bool = False) -> RankResult:
        """CMC/mAP of the model's test feature, or of the backbone's pooled feature if
        ``frozen`` (L2-normalised, Euclidean distance), the features saved for ``bench eval``
        as ``<dataset>_predictions.npz`` or ``<dataset>_frozen_predictions.npz``."""
        model.eval()
        fn = model.pooled if frozen else model
        tf = transforms(s, False)
        tag = "frozen " if frozen else ""
        qf, qp, qc = features(ctx, fn, data.query, tf, s.eval_batch_size, f"{tag}query features")
        gf, gp, gc = features(ctx, fn, data.gallery, tf, s.eval_batch_size,
                              f"{tag}gallery features")
        buf = io.BytesIO()
        np.savez(buf, qf=qf.numpy(), gf=gf.numpy(), metric="euclidean",
                 query_paths=[im.path for im in data.query],
                 gallery_paths=[im.path for im in data.gallery])
        name = f"{data.name}_{'frozen_' if frozen else ''}predictions.npz"
        atomic_write_bytes(Path(ctx.work_dir) / name, buf.getvalue())
        return evaluate(pairwise_distance(qf, gf), qp, gp, qc, gc)
