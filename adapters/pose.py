"""Human pose estimation on COCO keypoints: the top-down heatmap model SOLIDER-HumanPose trains.

Papers: HRFormer (Yuan et al., NeurIPS 2021), whose code base SOLIDER's pose fork is
(tinyvision/SOLIDER-HumanPose: HRFormer's copy of mmpose 0.x, ``TopDown`` detector,
configs ``swin_{tiny,small,base}_coco_384x288_release.py``); the top-down recipe itself is
SimpleBaseline's (Xiao et al., ECCV 2018) as mmpose 0.x implements it.  "HRFormer head" in
the SOLIDER tables therefore means *HRFormer's mmpose pipeline with a Swin backbone and
mmpose's* ``TopdownHeatmapSimpleHead``: no HRFormer backbone is involved (none is in the
zoo); the backbone under test replaces it.

Method.  The Swin backbone runs with strides (4, 2, 1, 1), so its last stage has output
stride 8, at the pose λ = 0.8 and drop-path 0.  The head (``in_index=3``) takes that last,
normed stage: one 4x4 stride-2 transposed convolution to 256 channels (no bias) + BN +
ReLU, then a 1x1 convolution to the 17 keypoint heatmaps; a 384x288 crop gives 96x72
heatmaps.  Deconvolution and final-conv weights are drawn from N(0, 0.001²), BN 1/0.

Data.  Training crops come from the ground-truth boxes of non-crowd people with at least
one labelled keypoint (boxes clipped to the image as mmpose's loader does); testing crops
come from the person detection-result file (every box, ``det_bbox_thr=0``) or, with
``use_gt_bbox``, the ground-truth boxes with score 1.  A box becomes a centre and a size: the
box is widened or heightened to the input aspect ratio and padded by 1.25.  Training
augmentation, in mmpose's order: horizontal flip (p = 0.5; keypoints mirrored as
``x -> W - 1 - x`` with left/right swapped); half-body (p = 0.3 when more than 8 keypoints
are labelled: the upper (0-10) or lower (11-16) keypoints, chosen as mmpose does with
``randn() < 0.5`` (upper about 69% of the time) when both have > 2, give a new box, aspect
corrected and enlarged 1.5x); scale x clip(1 + 0.5·N(0,1), 0.5, 1.5); rotation
clip(40·N(0,1), ±80)° with p = 0.6.  The crop is an affine warp (bilinear, zero border) that
maps the box centre to the crop centre and the box width to the crop width; ImageNet mean/std.

Targets and loss (:func:`encode`).  Each labelled keypoint inside the heatmap gets an
unnormalised Gaussian (σ = 2 heatmap pixels, as the official config sets even at 96x72)
centred on the heatmap pixel nearest to it and cut at 3σ, with target weight 1; unlabelled
keypoints and those whose Gaussian window misses the heatmap get weight 0 and a zero map.
``JointsMSELoss(use_target_weight=True)``: the mean over batch, keypoints and pixels of
(w·(pred - target))².

Optimisation.  AdamW (β 0.9/0.999), no weight decay on ``relative_position_bias_table``;
Swin-T lr 7e-4, wd 0, 210 epochs with x0.1 at 170 and 200, 8x16 images per batch; Swin-S lr
1e-3, wd 0.01, 210 epochs [170, 200], 8x8; Swin-B lr 1e-3, wd 0.01, 160 epochs [120, 150],
8x12.  Linear warm-up over the first 11710 iterations from 0.001x (mmcv's ``linear``).
The batch is the official total (8 GPUs) on one device, with the official learning rate.

Testing (:func:`decode`, :func:`flip_back`).  Flip test: the mirrored crop's heatmaps are
mirrored back, left/right channels swapped, shifted one pixel right (``shift_heatmap``) and
averaged with the plain ones.  Decoding (``post_process='default'``): each heatmap's argmax,
moved a quarter pixel towards the higher neighbour in x and in y (where the argmax is not on
the border); the heatmap maximum is the keypoint score.  DARK (``'unbiased'``: Gaussian
modulation with kernel 11, log, second-order Taylor step) is a switch.  Heatmap coordinates
go back to the image with the crop's centre and size.  Then :mod:`bench.metrics.keypoints`:
rescoring (box score x mean keypoint score above 0.2), OKS-NMS at 0.9 per image, and COCO
keypoint AP/AR through pycocotools, against all val images.  Metrics in percent; a COCOeval
bucket with no ground truth (-1, e.g. APm on a world without medium people) is left out.

Deviations from mmpose 0.x: no fp16 loss scaling (the profile's autocast instead); one
device with the total batch instead of 8 GPUs and SyncBN; the flip is folded into the affine
matrix instead of mirroring the whole image first (same sampled pixels); the MSRA Gaussian
window is ``int(3σ)`` pixels (equal to mmpose's for the integer 3σ the configs use); an
image whose box has zero area after clipping is dropped from training as mmpose does.

The ``smoke`` schedule keeps the method and shrinks it (128x96 crops, 32x24 heatmaps, a few
epochs, a short warm-up) to run on a 2-core CPU in a couple of minutes.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import cv2
import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from adapters import Metric, TaskSpec, register_task
from adapters._engine import (IMAGENET, StepWarmup, autocast, build_backbone, fit, num_workers,
                              schedule_for, seed_everything)
from bench.data import dataset_root
from bench.data.coco import DETECTIONS_FILE, FLIP_PAIRS, NUM_KEYPOINTS, read_coco_keypoints
from bench.errors import BenchError
from bench.io import atomic_write_text
from bench.metrics.keypoints import KeypointMetrics, coco_keypoint_eval, topdown_postprocess

UPPER_BODY = tuple(range(11))  # nose, eyes, ears, shoulders, elbows, wrists
METRICS = ("AP", "AP50", "AP75", "APm", "APl", "AR")

SPEC = TaskSpec(
    name="pose", version=1, title="Human pose estimation (COCO keypoints, top-down)",
    paper="HRFormer", reference_code="tinyvision/SOLIDER-HumanPose (HRFormer's mmpose 0.x fork)",
    datasets=("coco_keypoints",),
    metrics=tuple(Metric(m) for m in METRICS),
    semantic_weight=0.8,
    notes="COCO OKS AP/AR in percent on val2017; person detection boxes; flip test; "
          "OKS-NMS 0.9 + rescoring",
)


@dataclass(frozen=True)
class Schedule:
    input_size: tuple[int, int] = (384, 288)  # (h, w); heatmaps are input / 4
    sigma: float = 2.0
    # None: the official value for the backbone's arch (OFFICIAL; Swin-B's for other arches)
    lr: float | None = None
    weight_decay: float | None = None
    epochs: int | None = None
    milestones: tuple[int, ...] | None = None
    batch_size: int | None = None
    gamma: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_iters: int = 11710
    warmup_ratio: float = 0.001
    padding: float = 1.25
    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    half_body_min_joints: int = 8
    scale_factor: float = 0.5
    rot_factor: float = 40.0
    rot_prob: float = 0.6
    flip_test: bool = True
    shift_heatmap: bool = True
    post_process: Literal["default", "unbiased", "none"] = "default"
    modulate_kernel: int = 11
    use_gt_bbox: bool = False
    det_bbox_thr: float = 0.0
    vis_thr: float = 0.2
    oks_thr: float = 0.9
    use_nms: bool = True
    drop_path_rate: float = 0.0
    eval_batch_size: int = 32


# (lr, weight decay, epochs, milestones, total batch = 8 GPUs x per GPU)
OFFICIAL = {
    "swin_t": (7e-4, 0.0, 210, (170, 200), 8 * 16),
    "swin_s": (1e-3, 0.01, 210, (170, 200), 8 * 8),
    "swin_b": (1e-3, 0.01, 160, (120, 150), 8 * 12),
}

SCHEDULES = {
    "paper": Schedule(),
    "smoke": Schedule(input_size=(128, 96), lr=1e-3, weight_decay=0.01, epochs=4,
                      milestones=(3,), batch_size=16, warmup_iters=10, eval_batch_size=32),
}


def resolve(s: Schedule, arch: str) -> tuple[float, float, int, tuple[int, ...], int]:
    """(lr, weight decay, epochs, milestones, batch size): the schedule's, else the official
    values for ``arch``."""
    lr, wd, ep, ms, bs = OFFICIAL.get(arch, OFFICIAL["swin_b"])
    pick = lambda v, d: d if v is None else v  # noqa: E731
    return (pick(s.lr, lr), pick(s.weight_decay, wd), pick(s.epochs, ep),
            tuple(pick(s.milestones, ms)), pick(s.batch_size, bs))


# --------------------------------------------------------------------------------------
# Boxes and the crop geometry
# --------------------------------------------------------------------------------------
def box_to_center_size(box: np.ndarray, aspect: float, padding: float = 1.25
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(x, y, w, h) -> centre and (w, h) in pixels, widened or heightened to ``aspect`` =
    w / h of the input, then scaled by ``padding`` (mmpose ``_xywh2cs``; its ``scale`` is
    this size / 200)."""
    x, y, w, h = (float(v) for v in box[:4])
    center = np.array([x + w * 0.5, y + h * 0.5], np.float64)
    if w > aspect * h:
        h = w / aspect
    elif w < aspect * h:
        w = h * aspect
    return center, np.array([w, h], np.float64) * padding


def clean_box(box: np.ndarray, width: int, height: int) -> np.ndarray | None:
    """mmpose's training-box sanitation: clip to the image; None if nothing is left."""
    x, y, w, h = (float(v) for v in box)
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(width - 1.0, x1 + max(0.0, w - 1.0))
    y2 = min(height - 1.0, y1 + max(0.0, h - 1.0))
    if x2 > x1 and y2 > y1:
        return np.array([x1, y1, x2 - x1, y2 - y1], np.float64)
    return None


def crop_matrix(center: np.ndarray, size: np.ndarray, rotation: float,
                out_wh: tuple[int, int]) -> np.ndarray:
    """The 2x3 affine map image -> crop: the centre goes to the crop centre, the box width
    (``size[0]``) to the crop width, the image turned by ``rotation`` degrees as mmpose's
    ``get_affine_transform`` (non-UDP) turns it."""
    r = math.radians(rotation)
    k = out_wh[0] / float(size[0])
    c, s = math.cos(r), math.sin(r)
    A = k * np.array([[c, s], [-s, c]])
    t = np.array([out_wh[0] * 0.5, out_wh[1] * 0.5]) - A @ np.asarray(center, np.float64)
    return np.concatenate([A, t[:, None]], axis=1)


def apply_affine(points: np.ndarray, M: np.ndarray) -> np.ndarray:
    return points[..., :2] @ M[:, :2].T + M[:, 2]


def heatmap_to_image(coords: np.ndarray, center: np.ndarray, size: np.ndarray,
                     heatmap_wh: tuple[int, int]) -> np.ndarray:
    """Heatmap pixel coordinates (N, K, 2) -> image coordinates, for crops of ``center``
    (N, 2) and ``size`` (N, 2) without rotation (mmpose ``transform_preds``, non-UDP)."""
    center = np.asarray(center, np.float64)[:, None]
    size = np.asarray(size, np.float64)[:, None]
    return coords * size / np.asarray(heatmap_wh, np.float64) + center - size * 0.5


# --------------------------------------------------------------------------------------
# Codec: Gaussian heatmaps <-> keypoints
# --------------------------------------------------------------------------------------
def encode(joints: np.ndarray, visible: np.ndarray, input_wh: tuple[int, int],
           heatmap_wh: tuple[int, int], sigma: float = 2.0, unbiased: bool = False
           ) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints in crop pixels (K, 2) -> heatmaps (K, H, W) float32 and weights (K,).

    ``unbiased=False`` (mmpose's MSRA target, the official setting): a Gaussian on the
    nearest heatmap pixel, cut at ``int(3σ)``; ``unbiased=True`` (DARK's encoding): a
    Gaussian on the exact sub-pixel position over the whole map.  Either way a keypoint
    gets weight 1 if it is labelled and its 3σ window touches the heatmap."""
    W, H = heatmap_wh
    stride = np.asarray(input_wh, np.float64) / np.asarray(heatmap_wh, np.float64)
    joints = np.asarray(joints, np.float64)[:, :2]
    K = len(joints)
    weight = (np.asarray(visible) > 0).astype(np.float32)
    tmp = int(sigma * 3)
    # mmpose: int() truncation, on the rounded position (MSRA) or the exact one (DARK)
    mu = joints / stride if unbiased else np.trunc(joints / stride + 0.5)
    ul = np.trunc(mu - tmp).astype(np.int64)
    br = np.trunc(mu + tmp + 1).astype(np.int64)
    out = (ul[:, 0] >= W) | (ul[:, 1] >= H) | (br[:, 0] < 0) | (br[:, 1] < 0)
    weight[out] = 0.0
    xs = np.arange(W, dtype=np.float64)[None, None, :]
    ys = np.arange(H, dtype=np.float64)[None, :, None]
    dx = xs - mu[:, 0, None, None]
    dy = ys - mu[:, 1, None, None]
    g = np.exp(-(dx ** 2 + dy ** 2) / (2.0 * sigma ** 2))
    if not unbiased:
        g = g * ((np.abs(dx) <= tmp) & (np.abs(dy) <= tmp))
    g = g * (weight[:, None, None] > 0.5)
    return g.astype(np.float32).reshape(K, H, W), weight


def _argmax(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    N, K, H, W = heatmaps.shape
    flat = heatmaps.reshape(N, K, -1)
    idx = flat.argmax(-1)
    maxvals = np.take_along_axis(flat, idx[..., None], -1)
    coords = np.stack([idx % W, idx // W], -1).astype(np.float64)
    coords = np.where(maxvals > 0.0, coords, -1.0)
    return coords, maxvals.astype(np.float64)


def _modulate(heatmaps: np.ndarray, kernel: int) -> np.ndarray:
    """DARK's distribution modulation: Gaussian blur (zero border), rescaled to the
    original maximum."""
    border = (kernel - 1) // 2
    out = heatmaps.copy()
    N, K, H, W = heatmaps.shape
    for n in range(N):
        for k in range(K):
            origin_max = heatmaps[n, k].max()
            dr = np.zeros((H + 2 * border, W + 2 * border), np.float32)
            dr[border:-border, border:-border] = heatmaps[n, k]
            dr = cv2.GaussianBlur(dr, (kernel, kernel), 0)[border:-border, border:-border]
            m = dr.max()
            out[n, k] = dr * (origin_max / m) if m > 0 else dr
    return out


def decode(heatmaps: np.ndarray, post_process: str | None = "default",
           kernel: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps (N, K, H, W) -> keypoints in heatmap pixels (N, K, 2) and scores (N, K, 1).

    ``"default"``: argmax plus a quarter pixel towards the higher neighbour (x and y
    separately) where 1 < x < W-1 and 1 < y < H-1; ``"unbiased"``: DARK (modulate with a
    ``kernel`` Gaussian, log, one Newton step on the local quadratic) where 1 < x < W-2 and
    1 < y < H-2; ``None``/``"none"``: the argmax.  A map whose maximum is <= 0 gives (-1, -1)."""
    hm = np.asarray(heatmaps, np.float64)
    N, K, H, W = hm.shape
    coords, maxvals = _argmax(hm)
    if post_process in (None, "none"):
        return coords, maxvals
    px, py = coords[..., 0].astype(np.int64), coords[..., 1].astype(np.int64)
    n_idx, k_idx = np.meshgrid(np.arange(N), np.arange(K), indexing="ij")

    def at(m, dy, dx):
        return m[n_idx, k_idx, np.clip(py + dy, 0, H - 1), np.clip(px + dx, 0, W - 1)]

    if post_process == "default":
        ok = (px > 1) & (px < W - 1) & (py > 1) & (py < H - 1)
        diff = np.stack([at(hm, 0, 1) - at(hm, 0, -1), at(hm, 1, 0) - at(hm, -1, 0)], -1)
        return coords + np.where(ok[..., None], np.sign(diff) * 0.25, 0.0), maxvals
    if post_process != "unbiased":
        raise BenchError(f"unknown post_process {post_process!r} (default, unbiased, none)")
    lg = np.log(np.clip(_modulate(hm.astype(np.float32), kernel).astype(np.float64), 1e-3, 50))
    ok = (px > 1) & (px < W - 2) & (py > 1) & (py < H - 2)
    dx = 0.5 * (at(lg, 0, 1) - at(lg, 0, -1))
    dy = 0.5 * (at(lg, 1, 0) - at(lg, -1, 0))
    dxx = 0.25 * (at(lg, 0, 2) - 2 * at(lg, 0, 0) + at(lg, 0, -2))
    dyy = 0.25 * (at(lg, 2, 0) - 2 * at(lg, 0, 0) + at(lg, -2, 0))
    dxy = 0.25 * (at(lg, 1, 1) - at(lg, -1, 1) - at(lg, 1, -1) + at(lg, -1, -1))
    det = dxx * dyy - dxy ** 2
    ok &= det != 0
    safe = np.where(ok, det, 1.0)
    off_x = -(dyy * dx - dxy * dy) / safe
    off_y = -(-dxy * dx + dxx * dy) / safe
    off = np.stack([off_x, off_y], -1)
    return coords + np.where(ok[..., None], off, 0.0), maxvals


def flip_back(heatmaps, flip_pairs: Sequence[tuple[int, int]] = FLIP_PAIRS):
    """Heatmaps of a mirrored crop -> heatmaps of the crop: mirror the width axis and swap
    left/right channels (mmpose ``flip_back``).  numpy or torch, (N, K, H, W)."""
    perm = list(range(heatmaps.shape[1]))
    for a, b in flip_pairs:
        perm[a], perm[b] = b, a
    if isinstance(heatmaps, torch.Tensor):
        return heatmaps[:, perm].flip(-1)
    return np.ascontiguousarray(np.asarray(heatmaps)[:, perm, :, ::-1])


def merge_flip(heatmaps, flipped, flip_pairs=FLIP_PAIRS, shift: bool = True):
    """The flip test: average the heatmaps with those of the mirrored crop mapped back
    (:func:`flip_back`), the latter moved one pixel right when ``shift`` (column 0 kept)."""
    back = flip_back(flipped, flip_pairs)
    if shift:
        back = back.clone() if isinstance(back, torch.Tensor) else back.copy()
        back[..., 1:] = back[..., :-1].clone() if isinstance(back, torch.Tensor) \
            else back[..., :-1].copy()
    return (heatmaps + back) * 0.5


# --------------------------------------------------------------------------------------
# Model and loss
# --------------------------------------------------------------------------------------
class HeatmapHead(nn.Module):
    """mmpose ``TopdownHeatmapSimpleHead`` as SOLIDER configures it: 1 deconvolution
    (4x4, stride 2, 256, no bias) + BN + ReLU, then a 1x1 convolution to the heatmaps."""

    def __init__(self, in_channels: int, num_keypoints: int = NUM_KEYPOINTS,
                 deconv_filters: Sequence[int] = (256,)):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for f in deconv_filters:
            layers += [nn.ConvTranspose2d(c, f, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(f), nn.ReLU(inplace=True)]
            c = f
        self.deconv = nn.Sequential(*layers)
        self.final = nn.Conv2d(c, num_keypoints, 1)
        for m in self.modules():
            if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d)):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final(self.deconv(x))


class PoseModel(nn.Module):
    """Backbone (strides (4, 2, 1, 1)) -> last stage (``in_index=3``) -> heatmap head."""

    def __init__(self, backbone: nn.Module, semantic_weight: float | None,
                 num_keypoints: int = NUM_KEYPOINTS):
        super().__init__()
        self.backbone = backbone
        self.semantic_weight = semantic_weight
        self.head = HeatmapHead(backbone.feature_channels[-1], num_keypoints)
        self.stride = backbone.feature_strides[-1] // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kw = {} if self.semantic_weight is None else {"semantic_weight": self.semantic_weight}
        return self.head(self.backbone.forward_intermediates(x, **kw)[-1])


def joints_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``JointsMSELoss(use_target_weight=True)``: mean of (w (pred - target))² over batch,
    keypoints and pixels; ``weight`` (N, K)."""
    w = weight[:, :, None, None]
    return ((pred * w - target * w) ** 2).mean()


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Crop:
    path: str
    image_id: int
    image_wh: tuple[int, int]
    center: np.ndarray  # (2,)
    size: np.ndarray  # (2,) w, h in pixels, padded
    score: float
    joints: np.ndarray | None = None  # (K, 3): x, y, labelled (0/1)


def train_crops(data, aspect: float, padding: float) -> list[Crop]:
    """One crop per non-crowd person with a labelled keypoint and a non-empty clipped box."""
    images = {im.id: im for im in data.images}
    crops = []
    for p in data.persons:
        im = images[p.image_id]
        if p.iscrowd or p.num_keypoints == 0 or p.keypoints[:, :2].max() <= 0:
            continue
        box = clean_box(p.bbox, im.width, im.height)
        if box is None:
            continue
        c, s = box_to_center_size(box, aspect, padding)
        joints = np.concatenate([p.keypoints[:, :2], np.minimum(1, p.keypoints[:, 2:3])], 1)
        crops.append(Crop(im.path, im.id, (im.width, im.height), c, s, 1.0,
                          joints.astype(np.float64)))
    return crops


def test_crops(data, aspect: float, padding: float, use_gt_bbox: bool,
               det_bbox_thr: float = 0.0) -> list[Crop]:
    """Crops at the detection boxes with score >= ``det_bbox_thr`` (or at the GT boxes, as
    for training, with score 1)."""
    if use_gt_bbox:
        return train_crops(data, aspect, padding)
    images = {im.id: im for im in data.images}
    crops = []
    for d in data.detections or ():
        if d.score < det_bbox_thr:
            continue
        im = images[d.image_id]
        c, s = box_to_center_size(d.bbox, aspect, padding)
        crops.append(Crop(im.path, im.id, (im.width, im.height), c, s, d.score))
    return crops


def half_body(joints: np.ndarray, aspect: float, rng) -> tuple[np.ndarray, np.ndarray] | None:
    """mmpose's half-body box: the labelled upper (or lower) keypoints' extent, aspect
    corrected and enlarged 1.5x, centred on their mean; None if too few."""
    vis = joints[:, 2] > 0
    upper = [j for j in range(len(joints)) if vis[j] and j in UPPER_BODY]
    lower = [j for j in range(len(joints)) if vis[j] and j not in UPPER_BODY]
    if rng.standard_normal() < 0.5 and len(upper) > 2:
        sel = upper
    elif len(lower) > 2:
        sel = lower
    else:
        sel = upper
    if len(sel) < 2:
        return None
    pts = joints[sel, :2]
    center = pts.mean(0)
    w, h = pts.max(0) - pts.min(0)
    if w > aspect * h:
        h = w / aspect
    elif w < aspect * h:
        w = h * aspect
    return center, np.array([w, h]) * 1.5


class TopDownCrops(Dataset):
    """Crops -> (image tensor, heatmaps, weights, index) for training, (image, index) else."""

    def __init__(self, crops: Sequence[Crop], s: Schedule, heatmap_wh: tuple[int, int],
                 train: bool):
        self.crops, self.s, self.train = list(crops), s, train
        self.input_wh = (s.input_size[1], s.input_size[0])
        self.heatmap_wh = heatmap_wh
        self.mean = np.asarray(IMAGENET[0], np.float32) * 255
        self.std = np.asarray(IMAGENET[1], np.float32) * 255

    def __len__(self) -> int:
        return len(self.crops)

    def _image(self, crop: Crop, M: np.ndarray) -> torch.Tensor:
        from bench.data.base import read_image

        img = read_image(crop.path)
        out = cv2.warpAffine(img, M, self.input_wh, flags=cv2.INTER_LINEAR)
        out = (out.astype(np.float32) - self.mean) / self.std
        return torch.from_numpy(out.transpose(2, 0, 1).copy())

    def __getitem__(self, i: int):
        crop, s = self.crops[i], self.s
        if not self.train:
            M = crop_matrix(crop.center, crop.size, 0.0, self.input_wh)
            return self._image(crop, M), i
        rng = np.random
        joints = crop.joints.copy()
        center, size = crop.center.copy(), crop.size.copy()
        W_img = crop.image_wh[0]
        flip = np.eye(3)
        if rng.rand() <= s.flip_prob:  # mirror the image: x -> W - 1 - x, swap left/right
            flip = np.array([[-1.0, 0, W_img - 1], [0, 1, 0], [0, 0, 1]])
            joints[:, 0] = W_img - 1 - joints[:, 0]
            for a, b in FLIP_PAIRS:
                joints[[a, b]] = joints[[b, a]]
            joints[:, :2] *= joints[:, 2:3]
            center[0] = W_img - 1 - center[0]
        aspect = self.input_wh[0] / self.input_wh[1]
        if joints[:, 2].sum() > s.half_body_min_joints and rng.rand() < s.half_body_prob:
            hb = half_body(joints, aspect, rng)
            if hb is not None:
                center, size = hb
        sf, rf = s.scale_factor, s.rot_factor
        size = size * np.clip(rng.randn() * sf + 1, 1 - sf, 1 + sf)
        rot = float(np.clip(rng.randn() * rf, -2 * rf, 2 * rf)) if rng.rand() <= s.rot_prob \
            else 0.0
        M = crop_matrix(center, size, rot, self.input_wh)
        img = self._image(crop, M @ flip)
        vis = joints[:, 2] > 0
        pts = np.where(vis[:, None], apply_affine(joints, M), joints[:, :2])
        target, weight = encode(pts, joints[:, 2], self.input_wh, self.heatmap_wh, s.sigma)
        return img, torch.from_numpy(target), torch.from_numpy(weight)


# --------------------------------------------------------------------------------------
# Optimiser groups (the schedule is the engine's StepWarmup, mmcv's ``step`` policy)
# --------------------------------------------------------------------------------------
def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on the relative position bias tables."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if "relative_position_bias_table" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


# --------------------------------------------------------------------------------------
# Inference and evaluation
# --------------------------------------------------------------------------------------
@torch.no_grad()
def predict_heatmaps(model: nn.Module, x: torch.Tensor, flip_test: bool = True,
                     shift: bool = True) -> torch.Tensor:
    """Heatmaps of a batch of crops, with the flip test if asked."""
    out = model(x).float()
    if flip_test:
        out = merge_flip(out, model(x.flip(-1)).float(), FLIP_PAIRS, shift)
    return out


def predict(ctx, model: nn.Module, crops: Sequence[Crop], s: Schedule,
            heatmap_wh: tuple[int, int]) -> np.ndarray:
    """Keypoints (N, 17, 3) in image pixels with their scores, one row per crop."""
    model.eval()
    loader = DataLoader(TopDownCrops(crops, s, heatmap_wh, train=False),
                        batch_size=s.eval_batch_size, num_workers=num_workers())
    out = np.zeros((len(crops), NUM_KEYPOINTS, 3))
    with ctx.out.progress() as progress:
        bar = progress.add_task(f"{ctx.spec.name}: test", total=len(loader))
        for x, idx in loader:
            with autocast(ctx.device, ctx.precision):
                hm = predict_heatmaps(model, x.to(ctx.device), s.flip_test, s.shift_heatmap)
            coords, maxvals = decode(hm.float().cpu().numpy(), s.post_process,
                                     s.modulate_kernel)
            idx = idx.numpy()
            centers = np.stack([crops[i].center for i in idx])
            sizes = np.stack([crops[i].size for i in idx])
            out[idx, :, :2] = heatmap_to_image(coords, centers, sizes, heatmap_wh)
            out[idx, :, 2:] = maxvals
            progress.advance(bar)
    return out


def evaluate(coco_gt, image_ids, keypoints, box_scores, areas, vis_thr: float = 0.2,
             oks_thr: float = 0.9, use_nms: bool = True) -> KeypointMetrics:
    """Rescoring, OKS-NMS per image and COCO keypoint AP/AR on plain arrays (see
    :mod:`bench.metrics.keypoints`)."""
    keypoints = np.asarray(keypoints, np.float64)
    keep, scores = topdown_postprocess(image_ids, keypoints, box_scores, areas, vis_thr,
                                       oks_thr, use_nms)
    return coco_keypoint_eval(coco_gt, np.asarray(image_ids)[keep], keypoints[keep],
                              scores[keep])


@register_task(SPEC)
class Pose:
    def run(self, ctx):
        from bench.runner import Measurement

        s = schedule_for(ctx, SCHEDULES)
        for key in ctx.datasets:
            root, _ = dataset_root(ctx.config, key, profile=ctx.profile)
            m = self.train_and_test(ctx, s, Path(root), key)
            for name, value in m.as_dict(METRICS).items():
                if value < 0:  # COCOeval: no ground truth in this bucket
                    ctx.log(f"{key}: {name} undefined (no ground truth of that size); left out")
                    continue
                yield Measurement(key, "val", name, 100.0 * value)

    def train_and_test(self, ctx, s: Schedule, root: Path, key: str) -> KeypointMetrics:
        gen = seed_everything(ctx.seed)
        lr, wd, epochs, milestones, batch_size = resolve(s, str(ctx.backbone_meta.get("arch")))
        h, w = s.input_size
        aspect = w / h
        backbone = build_backbone(ctx, strides=(4, 2, 1, 1), drop_path_rate=s.drop_path_rate)
        model = PoseModel(backbone, ctx.semantic_weight).to(ctx.device)
        if h % (model.stride * 4) or w % (model.stride * 4):
            raise BenchError(f"pose: input {h}x{w} must be a multiple of {model.stride * 4}")
        heatmap_wh = (w // model.stride, h // model.stride)

        train = read_coco_keypoints(root, "train")
        crops = train_crops(train, aspect, s.padding)
        if not crops:
            raise BenchError(f"{key}: no training person with keypoints in {root}")
        loader = DataLoader(TopDownCrops(crops, s, heatmap_wh, train=True),
                            batch_size=batch_size, shuffle=True,
                            drop_last=len(crops) > batch_size, num_workers=num_workers(),
                            generator=gen, worker_init_fn=_seed_worker)
        optimizer = torch.optim.AdamW(param_groups(model, wd), lr=lr, betas=s.betas)
        sched = StepWarmup(lr, milestones, s.gamma, s.warmup_iters, s.warmup_ratio,
                           len(loader))

        def step(batch):
            x, target, weight = (t.to(ctx.device) for t in batch)
            sched.step(optimizer)
            return joints_mse(model(x).float(), target, weight)

        t0 = time.time()
        fit(ctx, model, loader, step, optimizer, epochs, None, state_name=f"{key}_state.pt",
            stateful={"lr": sched})
        ctx.log(f"trained {epochs} epochs on {len(crops)} crops in {time.time() - t0:.1f}s")

        det_path = root / DETECTIONS_FILE
        use_gt = s.use_gt_bbox or not det_path.is_file()
        if use_gt and not s.use_gt_bbox:
            ctx.log(f"{key}: no detection file {det_path}; testing on ground-truth boxes")
        val = read_coco_keypoints(root, "val", detections=None if use_gt else det_path)
        tcrops = test_crops(val, aspect, s.padding, use_gt, s.det_bbox_thr)
        kps = np.asarray(predict(ctx, model, tcrops, s, heatmap_wh), np.float64)
        ids = np.asarray([c.image_id for c in tcrops])
        keep, scores = topdown_postprocess(ids, kps, [c.score for c in tcrops],
                                           [float(np.prod(c.size)) for c in tcrops],
                                           s.vis_thr, s.oks_thr, s.use_nms)
        # saved in COCO's results format, for `bench eval pose <file> coco_keypoints`
        results = [{"image_id": int(i), "category_id": 1, "score": float(sc),
                    "keypoints": [round(float(v), 3) for v in k.reshape(-1)]}
                   for i, k, sc in zip(ids[keep], kps[keep], scores[keep])]
        atomic_write_text(Path(ctx.work_dir) / f"{key}_predictions.json",
                          json.dumps(results) + "\n")
        return coco_keypoint_eval(val.coco, ids[keep], kps[keep], scores[keep])

    @staticmethod
    def evaluate_file(path, data) -> dict[str, float]:
        """COCO keypoint AP/AR (percent) of a COCO-format results file (a run's
        ``<dataset>_predictions.json``, already rescored and OKS-NMS'd) against the dataset."""
        try:
            res = json.loads(Path(path).read_text())
            ids = np.asarray([r["image_id"] for r in res])
            kps = np.asarray([r["keypoints"] for r in res], np.float64).reshape(-1, NUM_KEYPOINTS, 3)
            scores = np.asarray([r["score"] for r in res], np.float64)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise BenchError(f"{path}: not a COCO keypoint results file ({e})") from None
        unknown = set(ids.tolist()) - {im.id for im in data.images}
        if unknown:
            raise BenchError(f"{path}: image ids {sorted(unknown)[:5]} are not in the dataset")
        m = coco_keypoint_eval(data.coco, ids, kps, scores)
        return {k: 100.0 * v for k, v in m.as_dict(METRICS).items() if v >= 0}


def _seed_worker(worker_id: int) -> None:
    np.random.seed(torch.initial_seed() % 2**32)
