"""Person re-identification: the TransReID head as SOLIDER-REID fine-tunes it.

Papers: TransReID (He et al., ICCV 2021) and its self-supervised fork TransReID-SSL, which
SOLIDER-REID (tinyvision/SOLIDER-REID) is; the settings below are that repository's
``run.sh`` and ``configs/{market,msmt17}/swin_*.yml`` (see shared/reference).

Method.  The backbone's pooled feature ``f`` (average of its last, normed stage) feeds a
BNNeck: ``BatchNorm1d`` whose bias is frozen, then a bias-free linear classifier over the
training identities.  The loss is identity cross-entropy on the classifier's logits
(label smoothing off in SOLIDER) plus a soft-margin triplet loss (``NO_MARGIN=True``:
``log(1 + exp(d_ap - d_an))``) with batch-hard mining on ``f``, each with weight 1.
Batches hold P identities x K=4 images (64 per batch).  Training images are resized to
384x128, flipped, padded by 10 and cropped back, normalised with mean = std = 0.5, and
randomly erased (p = 0.5).  SGD with momentum 0.9 and weight decay 1e-4 (biases: twice the
learning rate), base learning rate 2e-4 for Swin-S/B and 8e-4 for Swin-T, 120 epochs of
cosine decay with 20 warm-up epochs from 0.01x and down to 0.002x the base rate.  The
semantic weight is λ = 0.2 and the controller is frozen.  At test time the feature before
the BNNeck, L2-normalised, is compared by Euclidean distance, and CMC/mAP follow the
Market-1501 protocol (:mod:`bench.metrics.reid`); k-reciprocal re-ranking is a switch.

The ``smoke`` schedule keeps the method and shrinks the data (128x64 crops, 8x4 batches, a
few epochs, one warm-up epoch) to run on a 2-core CPU in minutes, at the official Swin-T base
rate 8e-4.  (An earlier 1e-2 wiped out what pretraining had learnt: a VAL-PAT-pretrained test
backbone whose frozen features reach 27.6 kNN mAP on the synthetic Market-1501 fell to 8.1
after the smoke fine-tune at 1e-2, and stays at 27.8 at 8e-4; random init: 5.5 and 11.0.)
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision.transforms import v2 as T

from adapters import Metric, TaskSpec, register_task
from adapters._engine import (IdentitySampler, ImageList, build_backbone, cosine_warmup, extract,
                              fit, num_workers, schedule_for, seed_everything)
from bench.data import dataset_root, read_dataset
from bench.errors import BenchError
from bench.io import atomic_write_bytes
from bench.metrics.reid import RankResult, evaluate_rank, pairwise_distance, re_ranking

SPEC = TaskSpec(
    name="reid", version=1, title="Person re-identification",
    paper="TransReID", reference_code="tinyvision/SOLIDER-REID (TransReID-SSL fork)",
    datasets=("market1501", "msmt17"),
    metrics=(Metric("mAP"), Metric("Rank-1"), Metric("Rank-5"), Metric("Rank-10")),
    semantic_weight=0.2,
    notes="metrics in percent; single query; same-camera matches and junk removed",
)


@dataclass(frozen=True)
class Schedule:
    input_size: tuple[int, int] = (384, 128)
    epochs: int = 120
    batch_size: int = 64
    k: int = 4  # images per identity in a batch
    base_lr: float = 2e-4  # 8e-4 for Swin-T (SOLIDER-REID run.sh)
    bias_lr_factor: float = 2.0
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_epochs: int = 20
    label_smoothing: float = 0.0
    triplet_margin: float | None = None  # None: soft margin (NO_MARGIN=True)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    erase_p: float = 0.5
    pad: int = 10
    neck_feat: str = "before"  # test feature: "before" or "after" the BNNeck
    metric: str = "euclidean"
    rerank: bool = False
    freeze_controller: bool = True
    drop_path_rate: float = 0.1
    eval_batch_size: int = 256


SCHEDULES = {
    "paper": Schedule(),
    "smoke": Schedule(input_size=(128, 64), epochs=6, batch_size=32, base_lr=8e-4,
                      warmup_epochs=1, erase_p=0.5, pad=4, drop_path_rate=0.0,
                      eval_batch_size=64),
}


class ReIDModel(nn.Module):
    """Backbone -> pooled feature -> BNNeck -> bias-free identity classifier."""

    def __init__(self, backbone: nn.Module, num_classes: int, semantic_weight: float | None,
                 neck_feat: str = "before"):
        super().__init__()
        self.backbone = backbone
        self.semantic_weight = semantic_weight
        self.neck_feat = neck_feat
        c = backbone.num_features
        self.bottleneck = nn.BatchNorm1d(c)
        self.bottleneck.bias.requires_grad_(False)
        self.classifier = nn.Linear(c, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, x: torch.Tensor):
        kw = {} if self.semantic_weight is None else {"semantic_weight": self.semantic_weight}
        feat = self.backbone(x, **kw)
        bn = self.bottleneck(feat)
        if self.training:
            return self.classifier(bn), feat
        return feat if self.neck_feat == "before" else bn


def batch_hard_triplet(feat: torch.Tensor, pids: torch.Tensor,
                       margin: float | None = None) -> torch.Tensor:
    """Hardest positive and hardest negative per anchor (Euclidean), soft margin if None."""
    d = pairwise_distance(feat, feat)
    same = pids[:, None] == pids[None, :]
    d_ap = torch.where(same, d, torch.full_like(d, -1.0)).max(1).values
    d_an = torch.where(same, torch.full_like(d, float("inf")), d).min(1).values
    if margin is None:
        return F.softplus(d_ap - d_an).mean()  # SoftMarginLoss(d_an - d_ap, 1)
    return F.relu(d_ap - d_an + margin).mean()


def transforms(s: Schedule, train: bool):
    size = list(s.input_size)
    if not train:
        return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
                          T.ToImage(), T.ToDtype(torch.float32, scale=True),
                          T.Normalize(s.mean, s.std)])
    from timm.data.random_erasing import RandomErasing

    return T.Compose([
        T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(0.5), T.Pad(s.pad), T.RandomCrop(size),
        T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(s.mean, s.std),
        RandomErasing(probability=s.erase_p, mode="pixel", max_count=1, device="cpu"),
    ])


def evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50) -> RankResult:
    """CMC and mAP on plain arrays (Market-1501 protocol); see :mod:`bench.metrics.reid`."""
    return evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank)


@register_task(SPEC)
class ReID:
    def run(self, ctx):
        s = schedule_for(ctx, SCHEDULES)
        for key in ctx.datasets:
            root, _ = dataset_root(ctx.config, key, profile=ctx.profile)
            data = read_dataset(key, root)
            result = self.train_and_test(ctx, s, data, key)
            for name, value in result.as_dict((1, 5, 10)).items():
                yield _measure(key, name, 100.0 * value)

    @staticmethod
    def evaluate_file(path, data) -> dict[str, float]:
        """Re-evaluate saved predictions (``<dataset>_predictions.npz`` of a run: query and
        gallery features with their image paths) against dataset records."""
        pred = np.load(path)
        ids = {Path(im.path).name: im for im in (*data.query, *data.gallery)}
        try:
            q = [ids[Path(p).name] for p in pred["query_paths"]]
            g = [ids[Path(p).name] for p in pred["gallery_paths"]]
        except KeyError as e:
            raise BenchError(f"{path}: image {e.args[0]} is not in dataset {data.name}") from None
        metric = str(pred["metric"]) if "metric" in pred else "euclidean"
        dist = pairwise_distance(torch.from_numpy(pred["qf"]), torch.from_numpy(pred["gf"]), metric)
        r = evaluate(dist, [i.pid for i in q], [i.pid for i in g], [i.camid for i in q],
                     [i.camid for i in g])
        return {k: 100.0 * v for k, v in r.as_dict((1, 5, 10)).items()}

    def train_and_test(self, ctx, s: Schedule, data, key: str) -> RankResult:
        gen = seed_everything(ctx.seed)
        train = [im for im in data.train if im.pid > 0 or key == "msmt17"]
        labels = {pid: i for i, pid in enumerate(sorted({im.pid for im in train}))}
        backbone = build_backbone(ctx, drop_path_rate=s.drop_path_rate)
        if s.freeze_controller:
            for name, p in backbone.named_parameters():
                if name.startswith("semantic_embed"):
                    p.requires_grad_(False)
        model = ReIDModel(backbone, len(labels), ctx.semantic_weight, s.neck_feat).to(ctx.device)
        items = [(im.path, labels[im.pid]) for im in train]
        sampler = IdentitySampler([y for _, y in items], s.batch_size, s.k, seed=ctx.seed)
        loader = DataLoader(ImageList(items, transforms(s, True)), batch_size=s.batch_size,
                            sampler=sampler, num_workers=num_workers(), drop_last=True,
                            generator=gen)
        decay, bias = [], []
        for name, p in model.named_parameters():
            if p.requires_grad:
                (bias if "bias" in name else decay).append(p)
        optimizer = torch.optim.SGD(
            [{"params": decay, "lr": s.base_lr, "weight_decay": s.weight_decay},
             {"params": bias, "lr": s.base_lr * s.bias_lr_factor, "weight_decay": s.weight_decay}],
            momentum=s.momentum)
        lr = cosine_warmup(s.base_lr, s.epochs, s.warmup_epochs, 0.01 * s.base_lr,
                           0.002 * s.base_lr)

        def step(batch):
            x, y = batch
            x, y = x.to(ctx.device), y.to(ctx.device)
            logits, feat = model(x)
            id_loss = F.cross_entropy(logits.float(), y, label_smoothing=s.label_smoothing)
            return id_loss + batch_hard_triplet(feat.float(), y, s.triplet_margin)

        fit(ctx, model, loader, step, optimizer, s.epochs,
            lambda e: (lr(e), lr(e) * s.bias_lr_factor), state_name=f"{key}_state.pt")
        return self.test(ctx, s, model, data)

    def test(self, ctx, s: Schedule, model: nn.Module, data) -> RankResult:
        model.eval()
        tf = transforms(s, False)
        qf, qp, qc = features(ctx, model, data.query, tf, s.eval_batch_size, "query features")
        gf, gp, gc = features(ctx, model, data.gallery, tf, s.eval_batch_size, "gallery features")
        buf = io.BytesIO()  # saved for `bench eval reid <file> <dataset>`
        np.savez(buf, qf=qf.numpy(), gf=gf.numpy(), metric=s.metric,
                 query_paths=[im.path for im in data.query],
                 gallery_paths=[im.path for im in data.gallery])
        atomic_write_bytes(Path(ctx.work_dir) / f"{data.name}_predictions.npz", buf.getvalue())
        dist = (re_ranking(qf, gf, 20, 6, 0.3) if s.rerank
                else pairwise_distance(qf, gf, s.metric))
        return evaluate(dist, qp, gp, qc, gc)


def features(ctx, fn, images, tf, batch_size: int, label: str):
    """L2-normalised features of ``fn`` over reID images, with their ids and cameras."""
    items = [(im.path, im.pid, im.camid) for im in images]
    loader = DataLoader(ImageList(items, tf), batch_size=batch_size, num_workers=num_workers())
    f, (pids, cams) = extract(ctx, fn, loader, label)
    return F.normalize(f, dim=1), pids.numpy(), cams.numpy()


def _measure(dataset: str, metric: str, value: float):
    from bench.runner import Measurement

    return Measurement(dataset, "test", metric, value)


def chance(data, max_queries: int = 500) -> dict[str, float]:
    """Chance level in percent: the mean over random distance matrices under the same
    protocol, on at most ``max_queries`` random queries (so that MSMT17 stays cheap) and
    with more draws for fewer queries (5,000 query rankings, 3 to 100 draws)."""
    rng = np.random.default_rng(0)
    q = [data.query[i] for i in np.sort(rng.permutation(len(data.query))[:max_queries])]
    draws = min(100, max(3, 5000 // max(len(q), 1)))
    args = ([i.pid for i in q], [g.pid for g in data.gallery], [i.camid for i in q],
            [g.camid for g in data.gallery])
    runs = [evaluate(rng.random((len(q), len(data.gallery)), dtype=np.float32), *args)
            for _ in range(draws)]
    return {k: 100.0 * float(np.mean([r.as_dict((1,))[k] for r in runs]))
            for k in ("mAP", "Rank-1")}
