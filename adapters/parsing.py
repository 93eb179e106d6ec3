"""Human parsing: SCHP (Self-Correction for Human Parsing) as SOLIDER's parsing fork runs it.

Papers: Li et al., "Self-Correction for Human Parsing" (TPAMI 2020;
GoGoDuck912/Self-Correction-Human-Parsing), whose network is the AugmentCE2P head of Ruan et
al. (CE2P, AAAI 2019).  SOLIDER's fork (tinyvision/SOLIDER-HumanParsing) puts the head inside
its Swin class (``networks/swin_transformer.py``); the settings below are its
``train_swin.sh`` (Swin-T/S lines) and ``evaluate_swin.sh``.

Method.  The backbone runs with strides (4, 2, 2, 1), so its four normed maps have strides
4, 8, 16, 16.  A PSP module (pooled bins 1, 2, 3, 6, each a 1x1 conv to 512; concatenated
with the map and fused by a 3x3 conv to 512) encodes the last map.  The decoder reduces that
context to 256 channels, upsamples it to the first (stride-4) map, concatenates the first map
reduced to C0/2 channels (48 for Swin-T/S, 64 for Swin-B), and two 1x1 convs (256) give the
parsing feature and a 1x1 classifier the *parsing* logits.  The edge branch reduces maps 0-2
to 2·C0 channels each (192 / 256 in SOLIDER), a shared 3x3 conv predicts two edge logits per
map, and a 1x1 conv fuses the three upsampled predictions into the *edge* logits.  The fusion
branch concatenates the parsing feature with the three edge features, 1x1 conv to 256, BN,
ReLU, dropout 0.1, 1x1 to the 20 LIP classes: the *fusion* logits, which are the prediction.
Convs in the head are followed by BatchNorm + leaky ReLU (0.01), SCHP's ``InPlaceABNSync``.

Loss (SCHP ``CriterionAll``, λs = λe = 1, λc = 0.1), all maps upsampled (bilinear, aligned
corners) to the label size: for the parsing and the fusion logits each
0.5·λs·(lovasz-softmax + cross-entropy), ignoring label 255; plus λe·the edge cross-entropy
with class-balanced weights (positives weighted by the negative fraction and vice versa)
against edges derived from the label map (a pixel whose right, lower or diagonal neighbour
has another label, both labels valid, dilated 3x3); plus λc·the consistency term.  As
released, that term compares the argmax edge with the edge of the argmax parsing only where
*both* are 1, so it is identically 0 and carries no gradient: :func:`consistency_term`
reproduces it (and a test shows it is 0), and the training loss leaves it out.

Self-correction (SCHP, on in the paper schedule): from epoch ``schp_start`` every
``cycle_epochs`` epochs the SCHP model is updated as the running average of the trained
weights, w_schp ← (1-1/(n+1))·w_schp + 1/(n+1)·w (cycle n = 0, 1, ...), and its BatchNorm
statistics re-estimated over the training set.  From the first cycle on, the cross-entropy
of both parsing outputs is replaced by the KL divergence to softmax((1-α)·z + α·onehot(y)),
z the SCHP model's fusion logits and α = 1/(n+1); likewise the edge loss with the SCHP
model's edge logits.  The SCHP model is what is evaluated once a cycle has run.

Data.  A training image is fitted (centre, aspect ratio kept) into the 572x384 (h, w)
input by an affine warp, with a random scale factor clip(1 + 0.25·N(0,1), 0.75, 1.25), a
rotation clip(30·N(0,1), ±60)° with probability 0.6, and a horizontal flip with probability
0.5 that also swaps left/right labels; the border is black (label 255).  RGB, ImageNet
statistics.  The patch embedding is frozen.  SGD (momentum 0.9, weight decay 0), learning
rate 7e-3, batch 8 x 8 GPUs, 150 epochs: SCHP's SGDR per epoch (linear warm-up from lr/500
over 30 epochs, cosine to lr/500 until epoch 120, then cosine cycles of 10 epochs from lr/2).
Evaluation on LIP val at the original resolution: each image is warped into the input, run at
scales (0.5, 0.75, 1, 1.25, 1.5) and mirrored (the mirrored logits flipped back with their
left/right channels swapped), the logits averaged, warped back to the image and arg-maxed;
mIoU, pixel accuracy and mean accuracy follow SCHP's ``compute_mean_ioU``
(:mod:`bench.metrics.segmentation`), in percent; the per-class IoU and accuracy go to
``<dataset>_class_iou.csv`` in the task folder.

λ.  SOLIDER's README gives λ = 0.8 for parsing, but the released code builds the Swin with
``semantic_weight=0.`` and never passes another value, so every number it produced used
λ = 0.0 (the controller is present and applied at 0).  The task's official λ is therefore
**0.0**, the λ the code ran (``TaskSpec.semantic_weight``, as for every task); the README's
value is kept in ``SPEC.extra["readme_semantic_weight"]`` and ``[tasks.parsing]
semantic_weight = 0.8`` runs it.

Deviations from SCHP's code, none intended to move the numbers much: the SCHP model is run
in eval mode when it gives soft labels (SCHP leaves it in train mode, so its dropout is on and
its BN uses and updates batch statistics); SCHP's ``to_one_hot`` overwrites ignore labels with
0 in place, so its later loss terms treat ignored pixels as background, which we do not; a
single affine warp on tensors (bilinear image, nearest label) replaces OpenCV's
``warpAffine``; BN is per-process, not synchronised; the learning rate is set per epoch as
SCHP's scheduler is stepped.

The ``smoke`` schedule keeps the method (self-correction included) and shrinks the data:
128x96 inputs, batch 8, no warm-up, ten epochs with a cycle after epochs 8, 9 and 10,
single-scale flip test.  On the smoke world's 32 training images that is 40 steps, a few
minutes on a 2-core CPU with the test backbone; with ``--profile small`` (400 images) it is
500 steps, 13 minutes on one thread, where three epochs (150 steps) left a VAL-PAT
pretrained backbone and a random one alike (mIoU 7.9 and 7.4) and ten tell them apart
(the README's "Does pretraining help?").
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from adapters import Metric, TaskSpec, register_task
from adapters._engine import (IMAGENET, autocast, build_backbone, fit, num_workers,
                              schedule_for, seed_everything)
from bench.data import dataset_root
from bench.errors import BenchError
from bench.io import atomic_write_text
from bench.data.lip import (FLIP_PAIRS, LIP_CLASSES, NUM_CLASSES, flip_labels, load_mask,
                            read_lip)
from bench.metrics.segmentation import (IGNORE_LABEL, ConfusionMatrix, SegmentationResult,
                                        confusion_matrix, metrics_from_confusion,
                                        paired_bootstrap)

SPEC = TaskSpec(
    name="parsing", version=1, title="Human parsing",
    paper="SCHP", reference_code="tinyvision/SOLIDER-HumanParsing "
                                 "(Self-Correction-Human-Parsing fork)",
    datasets=("lip",),
    metrics=(Metric("mIoU"), Metric("PixelAcc"), Metric("MeanAcc")),
    semantic_weight=0.0,
    notes="metrics in percent on LIP val at original resolution; λ = 0.0 as the released "
          "code runs it (README: 0.8); multi-scale + flip test",
    extra={"readme_semantic_weight": 0.8, "num_classes": NUM_CLASSES,
           "ignore_label": IGNORE_LABEL},
)


@dataclass(frozen=True)
class Schedule:
    input_size: tuple[int, int] = (572, 384)  # (h, w)
    epochs: int = 150
    batch_size: int = 64  # 8 per GPU x 8 GPUs
    lr: float = 7e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    warmup_epochs: int = 30
    lr_divider: float = 500.0  # eta_min = lr / lr_divider
    cyclical_lr_divider: float = 2.0  # self-correction cycles restart at lr / 2
    self_correction: bool = True
    schp_start: int = 120
    cycle_epochs: int = 10
    bn_reestimate_batches: int = 0  # 0: the whole training loader, as SCHP
    lambda_seg: float = 1.0
    lambda_edge: float = 1.0
    edge_width: int = 3
    scale_factor: float = 0.25
    rotation_factor: float = 30.0
    rotation_p: float = 0.6
    flip_p: float = 0.5
    freeze_patch_embed: bool = True
    drop_path_rate: float = 0.0
    test_scales: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5)
    test_flip: bool = True
    max_train_images: int = 0  # 0: all
    max_val_images: int = 0  # 0: all


SCHEDULES = {
    "paper": Schedule(),
    "smoke": Schedule(input_size=(128, 96), epochs=10, batch_size=8, lr=1e-2, warmup_epochs=0,
                      schp_start=8, cycle_epochs=1, test_scales=(1.0,)),
}


# --------------------------------------------------------------------------------------
# The head (AugmentCE2P as SOLIDER's Swin class carries it)
# --------------------------------------------------------------------------------------
def conv_abn(cin: int, cout: int, k: int = 1) -> nn.Sequential:
    """Conv (no bias) + BatchNorm + leaky ReLU(0.01): SCHP's conv + ``InPlaceABNSync``."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.LeakyReLU(0.01))


def _up(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


class PSPModule(nn.Module):
    """Pyramid pooling (bins 1, 2, 3, 6) on the last map, fused by a 3x3 conv."""

    def __init__(self, cin: int, cout: int = 512, bins: Sequence[int] = (1, 2, 3, 6)):
        super().__init__()
        self.stages = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(b), conv_abn(cin, cout))
                                    for b in bins)
        self.bottleneck = conv_abn(cin + len(bins) * cout, cout, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return self.bottleneck(torch.cat([_up(s(x), size) for s in self.stages] + [x], 1))


class DecoderModule(nn.Module):
    """Context (512) + the stride-4 map -> parsing logits and the 256-channel parsing feature."""

    def __init__(self, low_channels: int, low_reduced: int, num_classes: int,
                 context: int = 512):
        super().__init__()
        self.reduce_context = conv_abn(context, 256)
        self.reduce_low = conv_abn(low_channels, low_reduced)
        self.fuse = nn.Sequential(conv_abn(256 + low_reduced, 256), conv_abn(256, 256))
        self.classifier = nn.Conv2d(256, num_classes, 1)

    def forward(self, context: torch.Tensor, low: torch.Tensor):
        x = torch.cat([_up(self.reduce_context(context), low.shape[-2:]), self.reduce_low(low)], 1)
        x = self.fuse(x)
        return self.classifier(x), x


class EdgeModule(nn.Module):
    """Maps 0-2 -> ``mid`` channels each; a shared 3x3 conv predicts edges per map; fused."""

    def __init__(self, channels: Sequence[int], mid: int):
        super().__init__()
        self.reduce = nn.ModuleList(conv_abn(c, mid) for c in channels)
        self.predict = nn.Conv2d(mid, 2, 3, padding=1)
        self.fuse = nn.Conv2d(2 * len(channels), 2, 1)

    def forward(self, maps: Sequence[torch.Tensor]):
        size = maps[0].shape[-2:]
        feats = [r(m) for r, m in zip(self.reduce, maps)]
        edges = [_up(self.predict(f), size) for f in feats]
        return self.fuse(torch.cat(edges, 1)), torch.cat([_up(f, size) for f in feats], 1)


class ParsingOutput(NamedTuple):
    parsing: torch.Tensor  # decoder logits (B, K, H/4, W/4)
    fusion: torch.Tensor  # fusion logits, the prediction
    edge: torch.Tensor  # edge logits (B, 2, H/4, W/4)


class ParsingModel(nn.Module):
    """Backbone (strides 4,2,2,1) + PSP + decoder + edge branch + fusion."""

    def __init__(self, backbone: nn.Module, num_classes: int = NUM_CLASSES,
                 semantic_weight: float | None = None):
        super().__init__()
        self.backbone = backbone
        self.semantic_weight = semantic_weight
        ch = list(backbone.feature_channels)
        if len(ch) != 4:
            raise ValueError(f"the parsing head needs four backbone maps, got {len(ch)}")
        mid, low = 2 * ch[0], ch[0] // 2  # 192 / 48 for Swin-T/S, 256 / 64 for Swin-B
        self.context = PSPModule(ch[-1], 512)
        self.decoder = DecoderModule(ch[0], low, num_classes)
        self.edge = EdgeModule(ch[:3], mid)
        self.fusion = nn.Sequential(
            nn.Conv2d(256 + 3 * mid, 256, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU(),
            nn.Dropout2d(0.1), nn.Conv2d(256, num_classes, 1))

    def forward(self, x: torch.Tensor) -> ParsingOutput:
        kw = {} if self.semantic_weight is None else {"semantic_weight": self.semantic_weight}
        maps = self.backbone.forward_intermediates(x, **kw)
        parsing, parsing_feat = self.decoder(self.context(maps[-1]), maps[0])
        edge, edge_feat = self.edge(maps[:3])
        fusion = self.fusion(torch.cat([parsing_feat, edge_feat], 1))
        return ParsingOutput(parsing, fusion, edge)


# --------------------------------------------------------------------------------------
# Targets and losses (SCHP CriterionAll)
# --------------------------------------------------------------------------------------
def edge_targets(labels: torch.Tensor, width: int = 3, ignore: int = IGNORE_LABEL) -> torch.Tensor:
    """(B, H, W) labels -> (B, H, W) 0/1 edges: a pixel is marked where it differs from its
    lower (marking the lower), right (marking itself) or diagonal neighbours (marking the upper
    one), both labels valid; then dilated by a ``width`` x ``width`` box (SCHP's
    ``generate_edge_tensor``)."""
    lab = labels if labels.ndim == 3 else labels[None]
    ok = lab != ignore
    e = torch.zeros_like(lab, dtype=torch.bool)
    e[:, 1:, :] |= (lab[:, 1:, :] != lab[:, :-1, :]) & ok[:, 1:, :] & ok[:, :-1, :]
    e[:, :, :-1] |= (lab[:, :, :-1] != lab[:, :, 1:]) & ok[:, :, :-1] & ok[:, :, 1:]
    e[:, :-1, :-1] |= (lab[:, :-1, :-1] != lab[:, 1:, 1:]) & ok[:, :-1, :-1] & ok[:, 1:, 1:]
    e[:, :-1, 1:] |= (lab[:, :-1, 1:] != lab[:, 1:, :-1]) & ok[:, :-1, 1:] & ok[:, 1:, :-1]
    e = F.max_pool2d(e[:, None].float(), width, stride=1, padding=width // 2)[:, 0]
    e = e.long()
    return e if labels.ndim == 3 else e[0]


def lovasz_softmax(probs: torch.Tensor, labels: torch.Tensor,
                   ignore: int = IGNORE_LABEL) -> torch.Tensor:
    """Lovász-softmax (Berman et al., CVPR 2018) over the batch, classes present in the
    labels only, ignored pixels dropped: the mean over those classes of the Lovász extension
    of the Jaccard loss applied to |onehot - p|.  All classes are sorted at once."""
    C = probs.shape[1]
    p = probs.permute(0, 2, 3, 1).reshape(-1, C)
    lab = labels.reshape(-1)
    keep = lab != ignore
    p, lab = p[keep], lab[keep]
    if lab.numel() == 0:
        return probs.sum() * 0.0
    present = torch.bincount(lab, minlength=C) > 0
    fg = F.one_hot(lab, C).to(p.dtype)[:, present].t()  # (C', N), present classes only
    errors, order = torch.sort((fg - p[:, present].t()).abs(), dim=1, descending=True)
    fg_sorted = torch.gather(fg, 1, order)
    gts = fg_sorted.sum(1, keepdim=True)
    inter = gts - fg_sorted.cumsum(1)
    union = gts + (1.0 - fg_sorted).cumsum(1)
    jac = 1.0 - inter / union
    grad = torch.cat([jac[:, :1], jac[:, 1:] - jac[:, :-1]], 1)
    return (errors * grad).sum(1).mean()


def soft_kl(logits: torch.Tensor, target_logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """KL(softmax(target) || softmax(logits)) summed over classes, averaged over valid pixels
    (SCHP ``KLDivergenceLoss``, T = 1, ``batchmean`` over the kept pixels)."""
    logp = F.log_softmax(logits, 1)
    q = F.softmax(target_logits, 1)
    kl = (q * (torch.log(q.clamp_min(1e-12)) - logp)).sum(1)
    n = valid.sum()
    return (kl * valid).sum() / n.clamp_min(1)


def consistency_term(parsing: torch.Tensor, edge: torch.Tensor, labels: torch.Tensor,
                     width: int = 3, ignore: int = IGNORE_LABEL) -> torch.Tensor:
    """SCHP's ``ConsistencyLoss`` as released: smooth-L1 between the edges of the arg-max
    parsing and the arg-max edge prediction, on valid pixels where *both* are 1.  Both sides
    are 1 there, so it is 0 with no gradient (SCHP returns NaN when that set is empty; 0
    here)."""
    with torch.no_grad():
        pred = parsing.argmax(1)
        pred[labels == ignore] = ignore
        gen = edge_targets(pred, width, ignore).float()
        e = (edge.argmax(1) > 0).float()
        both = (labels != ignore) & (gen == 1) & (e == 1)
    if not both.any():
        return parsing.sum() * 0.0
    return F.smooth_l1_loss(gen[both], e[both])


def parsing_loss(out: ParsingOutput, labels: torch.Tensor, s: Schedule,
                 soft: ParsingOutput | None = None, cycle: int = 0) -> torch.Tensor:
    """SCHP's ``CriterionAll``: see the module docstring."""
    size = labels.shape[-2:]
    edges = edge_targets(labels, s.edge_width)
    valid = labels != IGNORE_LABEL
    pos = (edges == 1).sum().float()
    neg = (edges == 0).sum().float()
    weights = torch.stack([pos, neg]) / (pos + neg)  # [w_neg, w_pos]
    alpha = 1.0 / (cycle + 1.0)
    safe = labels.masked_fill(~valid, 0)
    loss = labels.new_zeros((), dtype=torch.float32)
    for logits in (out.parsing, out.fusion):
        z = _up(logits.float(), size)
        loss = loss + 0.5 * s.lambda_seg * lovasz_softmax(F.softmax(z, 1), labels)
        if soft is None:
            loss = loss + 0.5 * s.lambda_seg * F.cross_entropy(z, labels, ignore_index=IGNORE_LABEL)
        else:
            onehot = F.one_hot(safe, z.shape[1]).permute(0, 3, 1, 2).float()
            target = (1 - alpha) * _up(soft.fusion.float(), size) + alpha * onehot
            loss = loss + 0.5 * s.lambda_seg * soft_kl(z, target, valid)
    e = _up(out.edge.float(), size)
    if soft is None:
        loss = loss + s.lambda_edge * F.cross_entropy(e, edges, weight=weights)
    else:
        onehot = F.one_hot(edges, 2).permute(0, 3, 1, 2).float()
        target = (1 - alpha) * _up(soft.edge.float(), size) + alpha * onehot
        loss = loss + s.lambda_edge * soft_kl(e, target, valid)
    # SCHP adds lambda_c (0.1) x consistency_term for both parsing outputs; that term is
    # identically 0 without gradient (see consistency_term), so it is not computed here.
    return loss


def sgdr_lr(s: Schedule) -> Callable[[int], float]:
    """SCHP's ``SGDRScheduler`` per epoch: linear warm-up from eta_min, cosine to eta_min by
    ``schp_start``, then cosine cycles of ``cycle_epochs`` from lr / cyclical_lr_divider."""
    eta_min = s.lr / s.lr_divider
    cyc_lr = s.lr / s.cyclical_lr_divider

    def lr(e: int) -> float:
        if e < s.warmup_epochs:
            return eta_min + e * (s.lr - eta_min) / s.warmup_epochs
        if e < s.schp_start:
            t = (e - s.warmup_epochs) / max(1, s.schp_start - s.warmup_epochs)
            return eta_min + (s.lr - eta_min) * (1 + math.cos(math.pi * t)) / 2
        t = ((e - s.schp_start) % s.cycle_epochs) / s.cycle_epochs
        return eta_min + (cyc_lr - eta_min) * (1 + math.cos(math.pi * t)) / 2

    return lr


# --------------------------------------------------------------------------------------
# Self-correction
# --------------------------------------------------------------------------------------
class SelfCorrection:
    """The SCHP model: a running average of the trained weights, updated every cycle, whose
    BN statistics are re-estimated on the training data and whose logits refine the labels."""

    def __init__(self, model: nn.Module, start: int, cycle_epochs: int,
                 make: Callable[[], nn.Module] | None = None):
        """``make`` builds a fresh model of the same architecture (default: a deep copy)."""
        if make is None:
            self.model = copy.deepcopy(model)
        else:
            self.model = make()
            self.model.load_state_dict(model.state_dict())
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.start, self.cycle_epochs = start, cycle_epochs
        self.cycle = 0  # cycles done

    def due(self, epoch: int) -> bool:
        """Whether a cycle ends after (0-based) ``epoch``."""
        done = epoch + 1
        return done >= self.start and (done - self.start) % self.cycle_epochs == 0

    @torch.no_grad()
    def soft_targets(self, x: torch.Tensor) -> ParsingOutput | None:
        return self.model(x) if self.cycle >= 1 else None

    @torch.no_grad()
    def update(self, trained: nn.Module) -> None:
        alpha = 1.0 / (self.cycle + 1)
        for avg, cur in zip(self.model.parameters(), trained.parameters()):
            avg.mul_(1.0 - alpha).add_(cur.detach(), alpha=alpha)
        self.cycle += 1

    @torch.no_grad()
    def reestimate_bn(self, loader, device: str, max_batches: int = 0) -> None:
        """Cumulative BN statistics of the SCHP model over the training loader."""
        bns = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not bns:
            return
        momenta = {m: m.momentum for m in bns}
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        self.model.train()
        for i, (x, _) in enumerate(loader):
            if max_batches and i >= max_batches:
                break
            self.model(x.to(device))
        for m, mom in momenta.items():
            m.momentum = mom
        self.model.eval()

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "cycle": self.cycle}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.cycle = int(state["cycle"])


# --------------------------------------------------------------------------------------
# Data: affine fit into the input, SCHP's augmentation
# --------------------------------------------------------------------------------------
def fit_affine(h: int, w: int, out_hw: Sequence[int], scale: float = 1.0,
               rotation: float = 0.0) -> np.ndarray:
    """3x3 matrix taking image pixel centres to input pixel centres: the whole image's box,
    widened to the input's aspect ratio about its centre (SCHP ``_box2cs``), times ``scale``,
    rotated by ``rotation`` degrees, fitted into ``out_hw``."""
    oh, ow = out_hw
    bw, bh = float(w), float(h)
    aspect = ow / oh
    if bw > aspect * bh:
        bh = bw / aspect
    else:
        bw = bh * aspect
    k = ow / (bw * scale)
    t = math.radians(rotation)
    c, s_ = math.cos(t) * k, math.sin(t) * k
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    ocx, ocy = (ow - 1) / 2.0, (oh - 1) / 2.0
    return np.array([[c, -s_, ocx - c * cx + s_ * cy],
                     [s_, c, ocy - s_ * cx - c * cy],
                     [0.0, 0.0, 1.0]])


def warp(t: torch.Tensor, matrix: np.ndarray, out_hw: Sequence[int],
         mode: str = "bilinear") -> torch.Tensor:
    """Warp a (C, H, W) or (B, C, H, W) float tensor by ``matrix`` (source pixel -> target
    pixel); outside the source is 0."""
    squeeze = t.ndim == 3
    x = t[None] if squeeze else t
    H, W = x.shape[-2:]
    oh, ow = out_hw
    inv = torch.as_tensor(np.linalg.inv(matrix), dtype=torch.float64)
    ys, xs = torch.meshgrid(torch.arange(oh, dtype=torch.float64),
                            torch.arange(ow, dtype=torch.float64), indexing="ij")
    src = inv[:2, :2] @ torch.stack([xs.reshape(-1), ys.reshape(-1)]) + inv[:2, 2:]
    gx = 2 * src[0] / max(W - 1, 1) - 1
    gy = 2 * src[1] / max(H - 1, 1) - 1
    grid = torch.stack([gx, gy], -1).reshape(1, oh, ow, 2).to(x.dtype).to(x.device)
    out = F.grid_sample(x, grid.expand(x.shape[0], -1, -1, -1), mode=mode,
                        padding_mode="zeros", align_corners=True)
    return out[0] if squeeze else out


def warp_labels(mask: torch.Tensor, matrix: np.ndarray, out_hw: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour warp of an (H, W) label map; outside the source is 255."""
    shifted = warp((mask.float() + 1)[None], matrix, out_hw, mode="nearest")[0]
    out = shifted.round().long() - 1
    return out.masked_fill(out < 0, IGNORE_LABEL)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean, std = (torch.tensor(v, dtype=x.dtype, device=x.device).view(-1, 1, 1) for v in IMAGENET)
    return (x - mean) / std


class LipTrain(Dataset):
    """LIP training samples -> (normalised image (3, h, w), labels (h, w)) with SCHP's
    random scale, rotation and flip (label swap).  Randomness from torch's global RNG."""

    def __init__(self, samples, s: Schedule, train: bool = True):
        self.samples, self.s, self.train = list(samples), s, train

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        from bench.data.base import read_image

        s = self.s
        smp = self.samples[i]
        image = read_image(smp.image_path)
        mask = load_mask(smp.mask_path, (image.shape[1], image.shape[0]))
        scale, rot = 1.0, 0.0
        if self.train:
            if float(torch.rand(())) < s.flip_p:
                image, mask = image[:, ::-1], flip_labels(mask)
            scale = float(np.clip(1 + s.scale_factor * float(torch.randn(())),
                                  1 - s.scale_factor, 1 + s.scale_factor))
            if float(torch.rand(())) < s.rotation_p:
                rot = float(np.clip(s.rotation_factor * float(torch.randn(())),
                                    -2 * s.rotation_factor, 2 * s.rotation_factor))
        m = fit_affine(image.shape[0], image.shape[1], s.input_size, scale, rot)
        x = normalize(warp(to_tensor(image), m, s.input_size))
        y = warp_labels(torch.from_numpy(np.array(mask, dtype=np.int64)), m, s.input_size)
        return x, y


# --------------------------------------------------------------------------------------
# Evaluation: multi-scale + flip at the original resolution
# --------------------------------------------------------------------------------------
def flip_permutation(num_classes: int = NUM_CLASSES) -> list[int]:
    perm = list(range(num_classes))
    for a, b in FLIP_PAIRS:
        perm[a], perm[b] = b, a
    return perm


@torch.no_grad()
def parse_image(logits_fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor,
                input_size: Sequence[int], scales: Sequence[float] = (1.0,), flip: bool = True,
                num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """Label map (H, W) of one image ((3, H, W) in [0, 1]) at its own resolution.

    The image is fitted into ``input_size``; at each scale the network's logits (of the
    image and, with ``flip``, of its mirror, flipped back with left/right channels swapped,
    averaged) are upsampled to the input size; the scales' logits are averaged, warped back
    onto the image and arg-maxed (SCHP ``evaluate.py``)."""
    H, W = image.shape[-2:]
    m = fit_affine(H, W, input_size)
    x = normalize(warp(image, m, input_size))[None]
    perm = flip_permutation(num_classes)
    total = None
    for sc in scales:
        xs = x if sc == 1.0 else F.interpolate(x, scale_factor=sc, mode="bilinear",
                                               align_corners=True)
        batch = torch.cat([xs, xs.flip(-1)]) if flip else xs
        z = logits_fn(batch).float()
        if flip:
            z = (z[0] + z[1, perm].flip(-1)) / 2
        else:
            z = z[0]
        z = _up(z[None], input_size)[0]
        total = z if total is None else total + z
    total = total / len(scales)
    back = warp(total, np.linalg.inv(m), (H, W))
    return back.argmax(0)


def evaluate(preds, gts, num_classes: int = NUM_CLASSES) -> SegmentationResult:
    """mIoU, pixel and mean accuracy on plain label maps (lists of (H, W) arrays, or one
    pair); see :mod:`bench.metrics.segmentation`."""
    from bench.metrics.segmentation import mean_iou

    return mean_iou(preds, gts, num_classes)


def _per_image_confusion(path, data) -> dict[str, np.ndarray]:
    """``{image id: (K, K) confusion matrix}`` of a folder of predicted ``<id>.png`` label
    maps against the dataset's masks (images without a prediction are left out)."""
    from bench.data.base import read_label_png

    folder = Path(path)
    if not folder.is_dir():
        raise BenchError(f"{folder}: expected a folder of <id>.png label maps")
    out = {}
    for smp in data:
        f = folder / f"{smp.id}.png"
        if f.is_file():
            pred = read_label_png(f)
            out[smp.id] = confusion_matrix(
                pred, load_mask(smp.mask_path, (pred.shape[1], pred.shape[0])), NUM_CLASSES)
    if not out:
        raise BenchError(f"{folder}: no prediction matches an image id of the dataset")
    return out


def class_table(result: SegmentationResult) -> str:
    """The per-class table of one evaluation as CSV: IoU and accuracy (percent) and the
    ground-truth and predicted pixel counts of each LIP class."""
    m = result.confusion
    pos, res, tp = m.sum(1), m.sum(0), np.diag(m)
    lines = ["class,IoU,accuracy,gt_pixels,predicted_pixels"]
    for c, name in enumerate(LIP_CLASSES):
        acc = 100.0 * tp[c] / max(1, pos[c])
        lines.append(f"{name},{100.0 * result.iou[c]:.4f},{acc:.4f},{pos[c]},{res[c]}")
    return "\n".join(lines) + "\n"


@register_task(SPEC)
class Parsing:
    def run(self, ctx):
        from bench.runner import Measurement

        s = schedule_for(ctx, SCHEDULES)
        for key in ctx.datasets:
            root, _ = dataset_root(ctx.config, key, profile=ctx.profile)
            result = self.train_and_test(ctx, s, root, key)
            table = Path(ctx.work_dir) / f"{key}_class_iou.csv"
            atomic_write_text(table, class_table(result))
            worst = sorted(range(NUM_CLASSES), key=lambda c: result.iou[c])[:3]
            ctx.log(f"per-class IoU in {table.name}; lowest: " + ", ".join(
                f"{LIP_CLASSES[c]} {100 * result.iou[c]:.1f}" for c in worst))
            for name, value in result.as_dict().items():
                yield Measurement(key, "val", name, 100.0 * value)

    def build_model(self, ctx, s: Schedule) -> ParsingModel:
        backbone = build_backbone(ctx, strides=(4, 2, 2, 1), drop_path_rate=s.drop_path_rate)
        if s.freeze_patch_embed:
            for p in backbone.patch_embed.parameters():
                p.requires_grad_(False)
        return ParsingModel(backbone, NUM_CLASSES, ctx.semantic_weight).to(ctx.device)

    def train_and_test(self, ctx, s: Schedule, root, key: str) -> SegmentationResult:
        gen = seed_everything(ctx.seed)
        train = read_lip(root, "train")
        val = read_lip(root, "val")
        if s.max_train_images:
            train = train[: s.max_train_images]
        if s.max_val_images:
            val = val[: s.max_val_images]
        model = self.build_model(ctx, s)
        loader = DataLoader(LipTrain(train, s), batch_size=s.batch_size, shuffle=True,
                            drop_last=len(train) > s.batch_size,
                            num_workers=num_workers(), generator=gen)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                                    lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
        schp = (SelfCorrection(model, s.schp_start, s.cycle_epochs,
                               make=lambda: self.build_model(ctx, s))
                if s.self_correction else None)
        ctx.log(f"λ = {ctx.semantic_weight}; self-correction "
                f"{'from epoch ' + str(s.schp_start) if schp else 'off'}")

        def step(batch):
            x, y = batch
            x, y = x.to(ctx.device), y.to(ctx.device)
            soft = schp.soft_targets(x) if schp is not None else None
            out = model(x)
            return parsing_loss(out, y, s, soft, schp.cycle if schp is not None else 0)

        def after_epoch(epoch: int, _loss: float) -> None:
            if schp is not None and schp.due(epoch):
                schp.update(model)
                schp.reestimate_bn(loader, ctx.device, s.bn_reestimate_batches)
                ctx.log(f"self-correction cycle {schp.cycle} after epoch {epoch + 1}")

        lr = sgdr_lr(s)
        fit(ctx, model, loader, step, optimizer, s.epochs, lambda e: [lr(e)],
            state_name=f"{key}_state.pt", after_epoch=after_epoch,
            stateful={"schp": schp} if schp is not None else None)
        final = schp.model if schp is not None and schp.cycle >= 1 else model
        return self.test(ctx, s, final, val, Path(ctx.work_dir) / f"{key}_predictions")

    @staticmethod
    def evaluate_file(path, data) -> dict[str, float]:
        """mIoU etc. (percent) of a folder of predicted label PNGs named ``<id>.png`` (a run's
        ``<dataset>_predictions/``, SCHP's output format) against the dataset's masks."""
        total = sum(_per_image_confusion(path, data).values())
        return {k: 100.0 * v for k, v in metrics_from_confusion(total).as_dict().items()}

    @staticmethod
    def compare_files(path, baseline, data, resamples: int = 1000, seed: int = 0
                      ) -> dict[str, dict[str, float]]:
        """Two runs' saved predictions of the same images, compared: each metric of both,
        their difference and its 95% paired-bootstrap interval over the images
        (:func:`bench.metrics.segmentation.paired_bootstrap`)."""
        a, b = _per_image_confusion(path, data), _per_image_confusion(baseline, data)
        if sorted(a) != sorted(b):
            raise BenchError(f"{baseline}: its predicted images differ from those of {path}")
        ids = sorted(a)
        return paired_bootstrap(np.stack([a[i] for i in ids]), np.stack([b[i] for i in ids]),
                                resamples, seed)

    @torch.no_grad()
    def test(self, ctx, s: Schedule, model: nn.Module, samples,
             save_dir: Path | None = None) -> SegmentationResult:
        from bench.data.base import read_image, write_image

        model.eval()
        acc = ConfusionMatrix(NUM_CLASSES)

        def logits_fn(x):
            with autocast(ctx.device, ctx.precision):
                return model(x.to(ctx.device)).fusion.float().cpu()

        with ctx.out.progress() as progress:
            bar = progress.add_task(f"{ctx.spec.name}: test", total=len(samples))
            for smp in samples:
                image = read_image(smp.image_path)
                gt = load_mask(smp.mask_path, (image.shape[1], image.shape[0]))
                pred = parse_image(logits_fn, to_tensor(image), s.input_size, s.test_scales,
                                   s.test_flip)
                acc.update(pred.numpy(), gt)
                if save_dir is not None:
                    write_image(save_dir / f"{smp.id}.png", pred.numpy().astype(np.uint8))
                progress.advance(bar)
        return acc.compute()
