"""Pedestrian detection on CityPersons: CSP as SOLIDER's detection fork trains it.

Paper: Liu et al., "High-level Semantic Feature Detection: A New Perspective for Pedestrian
Detection" (CVPR 2019; liuwei16/CSP).  SOLIDER's fork (tinyvision/SOLIDER-PedestrianDetection)
is Pedestron (hasanirtiza/Pedestron, mmdet 1.x): detector ``CSP``, ``CSPNeck`` and
``CSPHead`` (``mmdet/models/anchor_heads/csp_head.py``) on the Swin backbone, configs
``configs/solider/cp/swin_{tiny,small,base}.py``, evaluation with
``tools/cityPerson/eval_MR_multisetup.py`` (:mod:`bench.metrics.detection`).

Method.  The Swin backbone runs with strides (4, 2, 2, 1) and ``out_indices`` (1, 2, 3), so its
last three stages have output strides 8, 16 and 16, at the detection λ = 1.0 (drop path 0.1).
SOLIDER's configuration (``configs/solider/cp/swin_small.py``, the ``solider`` variant, the
default): the neck (Pedestron's ``CSPNeck``) brings each map to stride 4 with a transposed
convolution (kernel 4, stride 2, padding 1 for x2; kernel 4, stride 4 for x4) to 256
channels, L2-normalises each position's channel vector, multiplies it by a learnable
per-channel scale (initialised 10) and concatenates the three (768 channels).  The head
(Pedestron's ``CSPHead`` with ``stacked_convs=1`` and ``predict_width=True``) has three
branches, each a 3x3 convolution to 256 channels + GroupNorm(32) + ReLU and a 3x3 output
convolution: the centre heatmap (1 channel, sigmoid, bias initialised to the prior 0.01), the
scale (log height and log width in stride-4 units) and the offset (y, x) of the centre within
its 4-pixel cell, the last two multiplied by a learnable scalar (1.0).  Every head convolution
is drawn from N(0, 0.01²); the transposed convolutions keep PyTorch's default initialisation
(the neck's Xavier initialisation is for ``nn.Conv2d`` only).

The CSP paper's own variant (``variant="csp"``, liuwei16/CSP's Keras ``nn_p3p4p5``): the same
three transposed convolutions (Xavier-normal) and L2 norms, the concatenation fused by one
3x3 convolution to 256 channels + BN + ReLU, then 1x1 branches for the centre, the log
height only (every box has the fixed aspect ratio w = 0.41 h) and the offset.

Targets (:func:`encode`), at stride r = 4, as CSP's ``calc_gt_center`` builds them.  Ignore
regions (every non-pedestrian box and, in training, pedestrians under ``train_min_height``)
zero the centre loss mask over their (floor, ceil) cell extent.  Each pedestrian box
(x1, y1, x2, y2)/r spans cells ceil(x1)..x2, ceil(y1)..y2; a separable Gaussian over that
extent (σ = ((k-1)/2 - 1)·0.3 + 0.8 for a side of k cells) is max-pooled into the Gaussian
channel, the mask is set to 1 over the box, and the centre cell (int(cx), int(cy)) is the one
positive.  The scale targets log(h / r), log(w / r) and their mask cover the (2·radius + 1)²
cells around the centre (radius 8 px = 2 cells); the offset target is the centre's position
in its cell minus 0.5, masked at the centre only.

Losses (Pedestron's ``cls_pos``, ``reg_hw_pos``, ``offset_pos``; CSP's ``cls_center``,
``regr_h``, ``regr_offset`` are the same with the height alone).  Centre: binary
cross-entropy weighted by (1-p)² at positives and by (1-G)⁴·p² at the other unmasked cells (G
the Gaussian), summed and divided by the number of positives, weight 0.01.  Scale: smooth L1
(β = 1) of pred / target against 1 under the scale mask, over the mask's size times the
number of regressed channels, weight 1.  Offset: smooth L1 under its mask, over the number of
centres, weight 0.1.  (SOLIDER's config names FocalLoss, IoULoss and CrossEntropyLoss, but
Pedestron's head only reads their ``loss_weight``: the losses are the ones above.)

Data.  Training images are augmented as Pedestron's ``CocoCSPORIDataset`` does: brightness x
U(0.5, 2) in HSV (p = 0.5), horizontal flip (p = 0.5), resize x U(0.4, 1.5), then a crop of
the training size around a random pedestrian's centre (or a paste onto a mean-coloured canvas
when the image is smaller than it); boxes are clipped and kept when at least 16 px wide with
half their area inside (ignore regions when >= 8 px on both sides).  The training size is
SOLIDER's ``img_scale`` (2048, 1024), the whole CityPersons image (CSP's Keras code crops
640x1280).  ImageNet mean/std.  Testing runs the whole image (padded at the right and bottom
to a multiple of 16).

Decoding (:func:`decode`).  The 1000 best cells by centre score, those above 0.01
(``test_cfg.score_thr``), give boxes of height exp(scale_h)·r and width exp(scale_w)·r (CSP:
0.41·h), centred at ((x + 0.5 + o_x)·r, (y + 0.5 + o_y)·r), clipped to the image; NMS at IoU
0.5; at most 100 per image.

Optimisation.  Adam, lr 1e-4, 240 epochs with x0.1 steps at epochs 110 and 160, constant
warm-up (lr/3) for the first 500 iterations, 3 images per GPU x 8 (2 x 8 for Swin-B) on one
device.  Mean teacher: an exponential moving average (decay 0.999) of the weights after every
step; testing uses the averaged model (``--mean_teacher``).

Deviations from SOLIDER's run: one device with the total batch instead of 8 GPUs; the official
run tests every epoch and reports the best, here the final (EMA) model is tested once; boxes
are (x, y, x + w, y + h) where Pedestron's loader subtracts 1 from x2 and y2.

The ``smoke`` schedule keeps the method and shrinks it to run on a 2-core CPU in about a
minute: every image is first resized to 128 rows (``image_height``; 128x256 for the synthetic
worlds' 1:2 images) and the training size is that whole image, as SOLIDER's is the whole
1024x2048 image; a few epochs, a short warm-up, EMA decay 0.9.  Test images are resized the
same way and their boxes scaled back, so evaluation is at the dataset's own coordinates; the
minimum widths that keep a training box stay in dataset pixels.  (Cropping 128x256 out of the
256x512 images instead, as version 2 of this task did, cut the larger pedestrians: a box half
inside a crop was kept with its clipped height as the target, and the detector learnt to put
short boxes on tall people.)
"""
from __future__ import annotations

import copy
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from adapters import Metric, TaskSpec, register_task
from adapters._engine import (IMAGENET, StepWarmup, autocast, build_backbone, fit, num_workers,
                              schedule_for, seed_everything)
from bench.data import dataset_root
from bench.data.citypersons import CityPersonsImage, read_citypersons
from bench.errors import BenchError
from bench.io import atomic_write_bytes
from bench.metrics.detection import GroundTruth, miss_rates, named

STRIDE = 4
ASPECT = 0.41  # width / height of every box in the CSP variant (no width regressed)
VARIANTS = ("solider", "csp")
REPORTED = ("Reasonable", "Reasonable_occ=heavy")


def _check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise BenchError(f"detection: variant {variant!r} is not one of {VARIANTS}")
    return variant


SPEC = TaskSpec(
    name="detection", version=3, title="Pedestrian detection (CityPersons, CSP)",
    paper="CSP", reference_code="tinyvision/SOLIDER-PedestrianDetection (Pedestron, mmdet 1.x)",
    datasets=("citypersons",),
    metrics=(Metric("MR^-2 Reasonable", higher_is_better=False),
             Metric("MR^-2 Heavy", higher_is_better=False)),
    semantic_weight=1.0,
    notes="log-average miss rate over FPPI 1e-2..1e0 in percent (eval_MR_multisetup), "
          "train -> val; mean-teacher weights",
)


@dataclass(frozen=True)
class Schedule:
    variant: str = "solider"  # SOLIDER's Pedestron CSP (width regressed), or "csp" (the paper's)
    train_size: tuple[int, int] = (1024, 2048)  # (h, w) training crop: SOLIDER's img_scale
    epochs: int = 240
    milestones: tuple[int, ...] = (110, 160)
    gamma: float = 0.1
    batch_size: int | None = None  # None: 3 x 8 (Swin-B: 2 x 8)
    lr: float = 1e-4
    warmup_iters: int = 500
    warmup_ratio: float = 1.0 / 3
    mean_teacher: bool = True
    ema_decay: float = 0.999
    neck_channels: int = 256
    radius: int = 8  # px around the centre carrying the scale target
    center_weight: float = 0.01
    scale_weight: float = 1.0
    offset_weight: float = 0.1
    train_min_height: float = 50.0  # smaller pedestrians are ignore regions in training
    scale_range: tuple[float, float] = (0.4, 1.5)
    brightness: tuple[float, float] = (0.5, 2.0)
    min_box_width: float = 16.0
    score_thr: float = 0.01
    nms_iou: float = 0.5
    nms_pre: int = 1000
    max_per_img: int = 100
    drop_path_rate: float = 0.1
    eval_batch_size: int = 1
    image_height: int | None = None  # every image resized to this many rows first (None: as is)

    def __post_init__(self):
        _check_variant(self.variant)

    @property
    def predict_width(self) -> bool:
        return self.variant == "solider"


SCHEDULES = {
    "paper": Schedule(),
    "smoke": Schedule(image_height=128, train_size=(128, 256), epochs=6, milestones=(5,),
                      batch_size=4, lr=1e-3, warmup_iters=4, ema_decay=0.9, eval_batch_size=2),
}


def batch_size_for(s: Schedule, arch: str) -> int:
    if s.batch_size is not None:
        return s.batch_size
    return 2 * 8 if arch == "swin_b" else 3 * 8


# --------------------------------------------------------------------------------------
# Model: backbone -> CSP neck -> centre / scale / offset
# --------------------------------------------------------------------------------------
class L2Norm(nn.Module):
    def __init__(self, channels: int, scale: float = 10.0):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1, eps=1e-10) * self.weight[None, :, None, None]


def _upsample(c_in: int, c_out: int, factor: int) -> nn.Module:
    if factor == 1:
        return nn.Conv2d(c_in, c_out, 1)
    k = max(4, factor)
    return nn.ConvTranspose2d(c_in, c_out, k, stride=factor, padding=(k - factor) // 2)


class CSPNeck(nn.Module):
    """Each stage to stride 4 and ``channels`` (transposed conv), L2-norm x 10, concatenated;
    ``fuse`` (the CSP variant): then a 3x3 conv + BN + ReLU to ``channels``."""

    def __init__(self, in_channels: Sequence[int], in_strides: Sequence[int], channels: int = 256,
                 fuse: bool = False):
        super().__init__()
        for s in in_strides:
            if s % STRIDE:
                raise BenchError(f"detection: backbone stride {s} is not a multiple of {STRIDE}")
        self.up = nn.ModuleList(_upsample(c, channels, s // STRIDE)
                                for c, s in zip(in_channels, in_strides))
        self.norm = nn.ModuleList(L2Norm(channels) for _ in in_channels)
        self.out_channels = channels * len(in_channels)
        self.fuse = None
        if fuse:
            self.fuse = nn.Sequential(nn.Conv2d(self.out_channels, channels, 3, padding=1,
                                                bias=False),
                                      nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
            self.out_channels = channels
            for m in self.up:
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)
            nn.init.xavier_normal_(self.fuse[0].weight)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        maps = [n(u(f)) for f, u, n in zip(feats, self.up, self.norm)]
        h = min(m.shape[-2] for m in maps)
        w = min(m.shape[-1] for m in maps)
        x = torch.cat([m[..., :h, :w] for m in maps], 1)
        return x if self.fuse is None else self.fuse(x)


class CSPHead(nn.Module):
    """Centre logit (prior 0.01), log height [and log width], (y, x) offset.

    ``stacked`` (Pedestron's ``CSPHead``, ``stacked_convs=1``): per branch a 3x3 conv +
    GroupNorm(32) + ReLU and a 3x3 output conv, the scale and offset outputs times learnable
    scalars; otherwise (CSP's) a 1x1 conv per branch."""

    def __init__(self, in_channels: int, channels: int = 256, scale_channels: int = 2,
                 stacked: bool = True):
        super().__init__()

        def branch(out: int) -> nn.Module:
            if not stacked:
                return nn.Conv2d(in_channels, out, 1)
            return nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                                 nn.GroupNorm(32, channels), nn.ReLU(inplace=True),
                                 nn.Conv2d(channels, out, 3, padding=1))

        self.center, self.scale, self.offset = branch(1), branch(scale_channels), branch(2)
        self.gains = nn.Parameter(torch.ones(2)) if stacked else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)  # Pedestron's head init
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        last = self.center[-1] if stacked else self.center
        nn.init.constant_(last.bias, -math.log((1 - 0.01) / 0.01))

    def forward(self, x: torch.Tensor):
        c, h, o = self.center(x), self.scale(x), self.offset(x)
        if self.gains is not None:
            h, o = h * self.gains[0], o * self.gains[1]
        return c, h, o


class CSPModel(nn.Module):
    def __init__(self, backbone: nn.Module, semantic_weight: float | None, channels: int = 256,
                 variant: str = "solider"):
        super().__init__()
        csp = _check_variant(variant) == "csp"
        self.backbone = backbone
        self.semantic_weight = semantic_weight
        self.neck = CSPNeck(backbone.feature_channels, backbone.feature_strides, channels,
                            fuse=csp)
        self.head = CSPHead(self.neck.out_channels, channels, scale_channels=1 if csp else 2,
                            stacked=not csp)

    def forward(self, x: torch.Tensor):
        kw = {} if self.semantic_weight is None else {"semantic_weight": self.semantic_weight}
        return self.head(self.neck(self.backbone.forward_intermediates(x, **kw)))


class MeanTeacher:
    """EMA of every parameter and buffer: t <- d·t + (1-d)·s after each optimiser step
    (integer buffers are copied).  ``shadow`` is a state dict for the model."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            t = self.shadow[k]
            if t.dtype.is_floating_point:
                t.mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)
            else:
                t.copy_(v)

    def state_dict(self) -> dict:
        return dict(self.shadow)

    def load_state_dict(self, state: dict) -> None:
        self.shadow = {k: v.detach().clone() for k, v in state.items()}


# --------------------------------------------------------------------------------------
# Codec: boxes <-> CSP maps
# --------------------------------------------------------------------------------------
def _gaussian(k: int) -> np.ndarray:
    sigma = ((k - 1) * 0.5 - 1) * 0.3 + 0.8
    return np.exp(-np.square(np.arange(k) - k // 2) / (2 * sigma ** 2))


def encode(boxes: np.ndarray, ignores: np.ndarray, map_hw: tuple[int, int], radius: int = 8,
           stride: int = STRIDE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pedestrian boxes and ignore regions (x1, y1, x2, y2, input pixels) -> centre maps
    (3, H, W: Gaussian, loss mask, centres), scale maps (3, H, W: log(h / stride),
    log(w / stride), mask) and offset maps (3, H, W: y, x, mask), float32."""
    H, W = map_hw
    pos = np.zeros((3, H, W), np.float32)
    pos[1] = 1
    scale = np.zeros((3, H, W), np.float32)
    off = np.zeros((3, H, W), np.float32)
    r = radius // stride
    for b in np.asarray(ignores, np.float64).reshape(-1, 4) / stride:
        x1, y1 = max(int(b[0]), 0), max(int(b[1]), 0)
        pos[1, y1:int(math.ceil(b[3])), x1:int(math.ceil(b[2]))] = 0
    for b in np.asarray(boxes, np.float64).reshape(-1, 4) / stride:
        x1, y1, x2, y2 = int(math.ceil(b[0])), int(math.ceil(b[1])), int(b[2]), int(b[3])
        cx, cy = int((b[0] + b[2]) / 2), int((b[1] + b[3]) / 2)
        if not (0 <= cx < W and 0 <= cy < H) or x2 <= x1 or y2 <= y1:
            continue
        g = _gaussian(y2 - y1)[:, None] * _gaussian(x2 - x1)[None, :]
        ys, xs = slice(max(y1, 0), min(y2, H)), slice(max(x1, 0), min(x2, W))
        g = g[ys.start - y1: ys.stop - y1, xs.start - x1: xs.stop - x1]
        pos[0, ys, xs] = np.maximum(pos[0, ys, xs], g)
        pos[1, ys, xs] = 1
        pos[2, cy, cx] = 1
        ry = slice(max(cy - r, 0), min(cy + r + 1, H))
        rx = slice(max(cx - r, 0), min(cx + r + 1, W))
        scale[0, ry, rx] = math.log(b[3] - b[1])
        scale[1, ry, rx] = math.log(b[2] - b[0])
        scale[2, ry, rx] = 1
        off[0, cy, cx] = (b[1] + b[3]) / 2 - cy - 0.5
        off[1, cy, cx] = (b[0] + b[2]) / 2 - cx - 0.5
        off[2, cy, cx] = 1
    return pos, scale, off


def decode(center: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor,
           image_hw: tuple[int, int], score_thr: float = 0.1, nms_iou: float = 0.5,
           nms_pre: int = 1000, max_per_img: int = 100, stride: int = STRIDE
           ) -> tuple[np.ndarray, np.ndarray]:
    """One image's maps (centre probabilities (H, W), log heights (H, W) or log heights and
    widths (2, H, W), offsets (2, H, W)) -> boxes (N, 4) x1, y1, x2, y2 in input pixels,
    clipped to [0, size - 1] as Pedestron's ``csp_heightwidth2bbox``, and scores (N,), best
    first.  Without a width map every box is 0.41 times as wide as high."""
    from torchvision.ops import nms

    H, W = center.shape
    scores = center.reshape(-1).float()
    k = min(nms_pre, scores.numel()) if nms_pre > 0 else scores.numel()
    scores, idx = scores.topk(k)
    keep = scores > score_thr
    scores, idx = scores[keep], idx[keep]
    ys, xs = (idx // W).float(), (idx % W).float()
    scale = scale.reshape(-1, H * W) if scale.dim() == 3 else scale.reshape(1, -1)
    h = scale[0, idx].float().exp() * stride
    w = scale[1, idx].float().exp() * stride if len(scale) > 1 else ASPECT * h
    cy = (ys + 0.5 + offset[0].reshape(-1)[idx].float()) * stride
    cx = (xs + 0.5 + offset[1].reshape(-1)[idx].float()) * stride
    ih, iw = image_hw
    boxes = torch.stack([(cx - w / 2).clamp(0, iw - 1), (cy - h / 2).clamp(0, ih - 1),
                         (cx + w / 2).clamp(0, iw - 1), (cy + h / 2).clamp(0, ih - 1)], 1)
    keep = nms(boxes, scores, nms_iou)[:max_per_img]
    return (boxes[keep].cpu().numpy().astype(np.float64),
            scores[keep].cpu().numpy().astype(np.float64))


# --------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------
def center_loss(logit: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """CSP's focal-style centre loss; ``logit`` (N, 1, H, W), ``pos`` (N, 3, H, W)."""
    logit = logit[:, 0]
    bce = F.binary_cross_entropy_with_logits(logit, pos[:, 2], reduction="none")
    p = logit.sigmoid()
    positives = pos[:, 2]
    negatives = pos[:, 1] - pos[:, 2]
    w = positives * (1 - p) ** 2 + negatives * (1 - pos[:, 0]) ** 4 * p ** 2
    return (w * bce).sum() / positives.sum().clamp(min=1.0)


def scale_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Smooth L1 of pred / target against 1 for each regressed channel (log height [, log
    width]) under the mask, over the mask's size times the channels (Pedestron's
    ``reg_hw_pos``; CSP's ``regr_h`` with the height alone)."""
    k = pred.shape[1]
    t, m = target[:, :k], target[:, 2:3]
    loss = m * F.smooth_l1_loss(pred / (t + 1e-10), t / (t + 1e-10), reduction="none", beta=1.0)
    return loss.sum() / (k * m.sum()).clamp(min=1.0)


def offset_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    m = target[:, 2:3]
    l1 = m * F.smooth_l1_loss(pred, target[:, :2], reduction="none")
    return l1.sum() / m.sum().clamp(min=1.0)


def csp_loss(out, pos, scale, off, s: Schedule) -> torch.Tensor:
    c, h, o = (t.float() for t in out)
    return (s.center_weight * center_loss(c, pos) + s.scale_weight * scale_loss(h, scale)
            + s.offset_weight * offset_loss(o, off))


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------
def _xyxy(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1)


def training_boxes(im: CityPersonsImage, min_height: float) -> tuple[np.ndarray, np.ndarray]:
    """(pedestrians, ignore regions) x1y1x2y2: pedestrians under ``min_height`` and every
    other label are ignore regions."""
    gts, igs = [], []
    for o in im.objects:
        (gts if not o.ignore and o.height >= min_height else igs).append(o.bbox)
    return _xyxy(np.array(gts)), _xyxy(np.array(igs))


def _brightness(img: np.ndarray, lo: float, hi: float, rng) -> np.ndarray:
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 2] = np.minimum(hsv[..., 2] * rng.uniform(lo, hi), 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def read_resized(im: CityPersonsImage, height: int | None) -> tuple[np.ndarray, float]:
    """The record's image scaled to ``height`` rows (``None``: as it is) and the scale factor;
    the file must have the size its annotation gives (boxes are scaled by that size)."""
    from bench.data.base import read_image

    img = read_image(im.image_path)
    if img.shape[:2] != (im.height, im.width):
        raise BenchError(f"{im.image_path}: image is {img.shape[1]}x{img.shape[0]}, its "
                         f"annotation {im.ann_path} says {im.width}x{im.height}")
    if height is None or im.height == height:
        return img, 1.0
    f = height / im.height
    return cv2.resize(img, (round(im.width * f), height), interpolation=cv2.INTER_AREA), f


def augment(img: np.ndarray, gts: np.ndarray, igs: np.ndarray, s: Schedule, rng,
            unit: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pedestron's CSP augmentation (see the module docstring); boxes x1y1x2y2.  ``unit``:
    the image's pixels per dataset pixel (``image_height``); the minimum widths that keep a
    box are in dataset pixels."""
    gts, igs = gts.copy(), igs.copy()
    H, W = img.shape[:2]
    for b in (gts, igs):
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, W - 1)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, H - 1)
    if rng.integers(0, 2) == 0:
        img = _brightness(img, *s.brightness, rng)
    if rng.integers(0, 2) == 0:
        img = img[:, ::-1]
        for b in (gts, igs):
            b[:, [0, 2]] = W - b[:, [2, 0]]
    ratio = rng.uniform(*s.scale_range)
    img = cv2.resize(np.ascontiguousarray(img), (int(W * ratio), int(H * ratio)))
    gts, igs = gts * ratio, igs * ratio
    H, W = img.shape[:2]
    ch, cw = s.train_size
    if H >= ch:  # crop around a random pedestrian
        if len(gts):
            j = rng.integers(0, len(gts))
            sx, sy = int((gts[j, 0] + gts[j, 2]) / 2), int((gts[j, 1] + gts[j, 3]) / 2)
        else:
            sx = int(rng.integers(0, max(W - cw, 0) + 1) + cw * 0.5)
            sy = int(rng.integers(0, H - ch + 1) + ch * 0.5)
        x0, y0 = max(sx - cw // 2, 0), max(sy - ch // 2, 0)
        x0 -= max(x0 + cw - W, 0)
        y0 -= max(y0 + ch - H, 0)
        x0 = max(x0, 0)
        canvas = np.zeros((ch, cw, 3), img.dtype) + np.asarray(img.mean((0, 1)), img.dtype)
        part = img[y0:y0 + ch, x0:x0 + cw]
        canvas[:part.shape[0], :part.shape[1]] = part
        dx, dy = -x0, -y0
    else:  # paste onto a mean-coloured canvas
        canvas = np.zeros((ch, cw, 3), img.dtype) + np.asarray(img.mean((0, 1)), img.dtype)
        dx = int(rng.integers(0, max(cw - W, 0) + 1))
        dy = int(rng.integers(0, ch - H + 1))
        part = img[:ch, :cw]
        canvas[dy:dy + part.shape[0], dx:dx + part.shape[1]] = part
    shift = np.array([dx, dy, dx, dy], np.float64)
    before = (gts[:, 2] - gts[:, 0]) * (gts[:, 3] - gts[:, 1])
    gts = gts + shift
    igs = igs + shift
    for b in (gts, igs):
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, cw)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, ch)
    after = (gts[:, 2] - gts[:, 0]) * (gts[:, 3] - gts[:, 1])
    gts = gts[((gts[:, 2] - gts[:, 0]) >= s.min_box_width * unit) & (after >= 0.5 * before)]
    igs = igs[((igs[:, 2] - igs[:, 0]) >= 8 * unit) & ((igs[:, 3] - igs[:, 1]) >= 8 * unit)]
    return canvas, gts, igs


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    mean = np.asarray(IMAGENET[0], np.float32) * 255
    std = np.asarray(IMAGENET[1], np.float32) * 255
    x = (img.astype(np.float32) - mean) / std
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


class TrainImages(Dataset):
    """Augmented training crops -> (image, centre maps, scale maps, offset maps)."""

    def __init__(self, images: Sequence[CityPersonsImage], s: Schedule):
        self.images, self.s = list(images), s

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        rng = np.random.default_rng(np.random.randint(0, 2**31))  # seeded per run / worker
        im = self.images[i]
        gts, igs = training_boxes(im, self.s.train_min_height)
        img, f = read_resized(im, self.s.image_height)
        img, gts, igs = augment(img, gts * f, igs * f, self.s, rng, unit=f)
        h, w = self.s.train_size
        pos, scale, off = encode(gts, igs, (h // STRIDE, w // STRIDE), self.s.radius)
        return (_to_tensor(img), torch.from_numpy(pos), torch.from_numpy(scale),
                torch.from_numpy(off))


class TestImages(Dataset):
    """Whole images, resized to ``height`` rows (``None``: as they are), padded (right,
    bottom) to a multiple of ``multiple``."""

    def __init__(self, images: Sequence[CityPersonsImage], multiple: int = 16,
                 height: int | None = None):
        self.images, self.multiple, self.height = list(images), multiple, height
        self.factors = [1.0 if height is None else height / im.height for im in self.images]
        h = max((round(im.height * f) for im, f in zip(self.images, self.factors)), default=0)
        w = max((round(im.width * f) for im, f in zip(self.images, self.factors)), default=0)
        self.hw = (-(-h // multiple) * multiple, -(-w // multiple) * multiple)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img, _ = read_resized(self.images[i], self.height)
        x = torch.zeros(3, *self.hw)
        t = _to_tensor(img)
        x[:, :t.shape[1], :t.shape[2]] = t
        return x, i


# --------------------------------------------------------------------------------------
# Inference and evaluation
# --------------------------------------------------------------------------------------
@torch.no_grad()
def predict(ctx, model: nn.Module, images: Sequence[CityPersonsImage], s: Schedule
            ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per image: boxes (N, 4) x, y, w, h in image pixels and scores (N,)."""
    model.eval()
    data = TestImages(images, height=s.image_height)
    loader = DataLoader(data, batch_size=s.eval_batch_size, num_workers=num_workers())
    boxes: list[np.ndarray] = [np.zeros((0, 4))] * len(images)
    scores: list[np.ndarray] = [np.zeros(0)] * len(images)
    with ctx.out.progress() as progress:
        bar = progress.add_task(f"{ctx.spec.name}: test", total=len(loader))
        for x, idx in loader:
            with autocast(ctx.device, ctx.precision):
                c, h, o = model(x.to(ctx.device))
            c = c.float().sigmoid()
            for j, i in enumerate(idx.tolist()):
                im, f = images[i], data.factors[i]
                b, sc = decode(c[j, 0], h[j].float(), o[j].float(),
                               (round(im.height * f), round(im.width * f)),
                               s.score_thr, s.nms_iou, s.nms_pre, s.max_per_img)
                b[:, 2:] -= b[:, :2]
                b /= f
                boxes[i], scores[i] = b, sc
            progress.advance(bar)
    return boxes, scores


def ground_truth(images: Sequence[CityPersonsImage]) -> list[GroundTruth]:
    return [GroundTruth.of([o.bbox for o in im.objects], [o.vis_ratio for o in im.objects],
                           [o.ignore for o in im.objects]) for im in images]


def evaluate(gts: Sequence[GroundTruth], boxes: Sequence, scores: Sequence,
             setups: Sequence[str] = REPORTED) -> dict[str, float]:
    """MR^-2 (percent) per setup on plain arrays (see :mod:`bench.metrics.detection`)."""
    return miss_rates(gts, boxes, scores, setups)


def save_predictions(path: Path, images: Sequence[CityPersonsImage], boxes, scores) -> None:
    buf = io.BytesIO()
    np.savez(buf, names=np.array([im.name for im in images]),
             counts=np.array([len(b) for b in boxes], np.int64),
             boxes=np.concatenate([np.asarray(b).reshape(-1, 4) for b in boxes]
                                  or [np.zeros((0, 4))]),
             scores=np.concatenate([np.asarray(x).reshape(-1) for x in scores] or [np.zeros(0)]))
    atomic_write_bytes(path, buf.getvalue())


@register_task(SPEC)
class Detection:
    def run(self, ctx):
        from bench.runner import Measurement

        s = schedule_for(ctx, SCHEDULES)
        for key in ctx.datasets:
            root, _ = dataset_root(ctx.config, key, profile=ctx.profile)
            rates = self.train_and_test(ctx, s, Path(root), key)
            for name, value in named(rates).items():
                if not math.isfinite(value):
                    ctx.log(f"{key}: {name} undefined (no ground truth in that setup); left out")
                    continue
                yield Measurement(key, "val", name, value)

    def train_and_test(self, ctx, s: Schedule, root: Path, key: str) -> dict[str, float]:
        gen = seed_everything(ctx.seed)
        h, w = s.train_size
        if h % 16 or w % 16:
            raise BenchError(f"detection: training size {h}x{w} must be a multiple of 16")
        backbone = build_backbone(ctx, strides=(4, 2, 2, 1), out_indices=(1, 2, 3),
                                  drop_path_rate=s.drop_path_rate)
        model = CSPModel(backbone, ctx.semantic_weight, s.neck_channels,
                         s.variant).to(ctx.device)
        train = [im for im in read_citypersons(root, "train")
                 if any(not o.ignore and o.height >= s.train_min_height for o in im.objects)]
        if not train:
            raise BenchError(f"{key}: no training image with a pedestrian in {root}")
        bs = batch_size_for(s, str(ctx.backbone_meta.get("arch")))
        loader = DataLoader(TrainImages(train, s), batch_size=bs, shuffle=True,
                            drop_last=len(train) > bs, num_workers=num_workers(), generator=gen,
                            worker_init_fn=_seed_worker)
        optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
        sched = StepWarmup(s.lr, s.milestones, s.gamma, s.warmup_iters, s.warmup_ratio,
                           len(loader), warmup="constant")
        teacher = MeanTeacher(model, s.ema_decay) if s.mean_teacher else None
        pending = [False]

        def sync_teacher() -> None:  # the EMA step for the optimiser step just taken
            if teacher is not None and pending[0]:
                teacher.update(model)
            pending[0] = False

        def step(batch):
            sync_teacher()
            x, pos, scale, off = (t.to(ctx.device) for t in batch)
            sched.step(optimizer)
            loss = csp_loss(model(x), pos, scale, off, s)
            pending[0] = True
            return loss

        stateful = {"lr": sched, **({"ema": teacher} if teacher else {})}
        t0 = time.time()
        fit(ctx, model, loader, step, optimizer, s.epochs, None, state_name=f"{key}_state.pt",
            after_epoch=lambda e, l: sync_teacher(), stateful=stateful)
        ctx.log(f"trained {s.epochs} epochs on {len(train)} images in {time.time() - t0:.1f}s")

        val = read_citypersons(root, "val")
        if teacher is not None:  # test the mean teacher (the student is saved in the state)
            model.load_state_dict(teacher.shadow)
        boxes, scores = predict(ctx, model, val, s)
        save_predictions(Path(ctx.work_dir) / f"{key}_predictions.npz", val, boxes, scores)
        return evaluate(ground_truth(val), boxes, scores)

    @staticmethod
    def evaluate_file(path, data) -> dict[str, float]:
        """Re-evaluate saved predictions (``<dataset>_predictions.npz`` of a run: x, y, w, h
        boxes and scores per val image name) against the val records; an image without an
        entry has no detections."""
        pred = np.load(path)
        names = [str(n) for n in pred["names"]]
        index = {im.name: i for i, im in enumerate(data)}
        unknown = [n for n in names if n not in index]
        if unknown:
            raise BenchError(f"{path}: image {unknown[0]} is not in the dataset's val split")
        ends = np.cumsum(pred["counts"])
        starts = ends - pred["counts"]
        boxes: list[np.ndarray] = [np.zeros((0, 4))] * len(data)
        scores: list[np.ndarray] = [np.zeros(0)] * len(data)
        for n, a, b in zip(names, starts, ends):
            boxes[index[n]], scores[index[n]] = pred["boxes"][a:b], pred["scores"][a:b]
        rates = miss_rates(ground_truth(data), boxes, scores,
                           ("Reasonable", "Reasonable_occ=heavy", "Reasonable_small", "All"))
        return named(rates)


def _seed_worker(worker_id: int) -> None:
    np.random.seed(torch.initial_seed() % 2**32)
