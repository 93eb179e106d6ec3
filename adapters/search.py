"""Person search: SeqNet on the zoo Swin, as SOLIDER-PersonSearch runs it.

Paper: Li & Miao, "Sequential End-to-end Network for Efficient Person Search" (AAAI 2021,
serend1p1ty/SeqNet); SOLIDER-PersonSearch (tinyvision/SOLIDER-PersonSearch) is a SeqNet
fork that swaps the ResNet-50 for the Swin backbone (see shared/reference).

Method.  The Swin is split at its last stage.  The *backbone* runs the patch embedding and
stages 0-2 (the λ controller modulating the post-merge tokens after stages 0 and 1) and
returns ``feat_res4`` = norm2 of stage 2's output, stride 16.  A torchvision RPN (anchors
32-512 x ratios 0.5/1/2, 256 anchors per image, IoU 0.7/0.3, NMS 0.7, 12000/2000 proposals
before/after NMS in training, 6000/300 at test) proposes boxes; RoIAlign (14x14, sampling
ratio 2) cuts them from ``feat_res4``.  The *Res5 head* re-applies ``stages[2].downsample``
(PatchMerging, 14x14 -> 7x7) to the RoI features, then the λ modulation of stage 2, then
stage 3 and norm3; it returns the average-pooled RoI feature (``feat_res4``) and the
average-pooled stage-3 map (``feat_res5``).
SeqNet's two sequential heads:
1. Faster R-CNN head: a Res5 head and a 2-class ``FastRCNNPredictor`` on ``feat_res5``
   (softmax cross-entropy + smooth L1 on 128 sampled proposals, IoU 0.5/0.5, 1/2
   positives); its regressed boxes are the second head's proposals (re-sampled in
   training; at test, score > 0.5 and NMS 0.4 first, the classification score kept as
   the First Classification Score, FCS).
2. Re-ID head: a *copy* of the Res5 head, a ``BBoxRegressor`` (Linear + BN, both weights
   drawn from N(0, 0.01²)) and the norm-aware embedding (NAE): ``feat_res4`` and
   ``feat_res5`` are each projected (Linear + BN) to 128 dims, concatenated, and
   L2-normalised to the 256-d embedding;
   the norm, through a ``BatchNorm1d(1)``, is the person logit (binary cross-entropy).
   The embedding is trained with OIM: a lookup table of one L2-normalised feature per
   labelled training identity (momentum 0.5) and a circular queue of unlabeled people's
   features (5000 CUHK-SYSU, 500 PRW), logits = 30 x cosine, cross-entropy over the
   labelled identities only.
The seven losses (RPN objectness and regression, both heads' classification and
regression, OIM) have weight 1 except the first head's box regression, weight 10
(``SOLVER.LW_PROPOSAL_REG`` of ``defaults.py``); both heads' regression is SeqNet's
``detection_losses``: smooth L1 with β = 1 (``F.smooth_l1_loss``'s default, not
torchvision's 1/9) over the positive samples' deltas, divided by the number of samples.
At test time a gallery image's final boxes are the second head's regressed boxes scored by
FCS, with Confidence Weighted Similarity (CWS: embedding x score), NMS 0.5, at most 300 per
image; a query's embedding is the re-ID head's on its ground-truth box.  Images are resized
to min side 900 / max side 1500, normalised with ImageNet statistics, flipped in training
(p = 0.5).  SGD lr 3e-4, momentum 0.9, weight decay 5e-4, linear warm-up over the first
epoch from 1e-3 x, x0.1 at epoch 16, gradients clipped to norm 10 (``SOLVER.CLIP_GRADIENTS``);
20 epochs CUHK-SYSU, 18 PRW; batch 4/3/2 images for Swin-T/S/B; λ = 0.6; Swin drop path
0.1 (``build_swin``).
Evaluation: :mod:`bench.metrics.search` (``eval_search_cuhk`` with the TestG100 galleries,
``eval_search_prw``: all test frames but the query's), detection threshold 0.5; mAP and
top-1/5/10 in percent; alongside, the detector's AP and recall over every gallery person
(``eval_detection`` as ``engine.py`` calls it: score >= 0.01, IoU 0.5).  Every gallery
image is detected and saved, so the saved predictions evaluate at any CUHK-SYSU gallery
size (``bench eval search <file> cuhk_sysu --gallery-size 50..4000``).
``eval_use_gt`` (SeqNet's ``EVAL_USE_GT``, off in the paper schedule) also searches with
the ground-truth gallery boxes as detections of score 1, each embedded by the re-ID head
from the same backbone pass, reported as "GT mAP" and "GT top-1": the re-ID part's share,
without the detector's.
CBGM (context bipartite graph matching, SeqNet's ``EVAL_USE_CBGM``) is a test-time switch,
``cbgm`` in the schedule, off in both schedules as in SOLIDER-PersonSearch (``defaults.py``
sets ``EVAL_USE_CBGM = False`` and ``run.sh`` does not turn it on; SOLIDER's published
numbers are without it).  On, each query image is also run as a gallery image
(SeqNet's ``query_img_as_gallery``: the query box joins the detections at score 1 before
NMS 0.5, no CWS); the other people found there, by decreasing score, are the query's
context, and :func:`bench.metrics.search.cbgm_rescore` re-scores the gallery images of the
``k1`` most similar detections by bipartite matching of the query and its ``k2 - 1`` best
context people against each image's detections (k1, k2 = 10, 3 on CUHK-SYSU, 30, 4 on
PRW, as ``eval_func.py``).

The ``smoke`` schedule keeps the method and shrinks it (min side 240, few proposals, a
couple of epochs, a larger learning rate, low score thresholds) to run on a CPU in minutes,
and reports the ground-truth-box search too (``eval_use_gt``): a detector trained for a
few hundred steps finds few people, and the GT rows still show what the re-ID head learnt.
"""
from __future__ import annotations

import copy
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import AnchorGenerator, RegionProposalNetwork, RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import boxes as box_ops

from adapters import Metric, TaskSpec, register_task
from adapters._engine import (IMAGENET, autocast, build_backbone, fit, num_workers,
                              schedule_for, seed_everything)
from bench.data import dataset_root, read_dataset
from bench.data.search import UNLABELED
from bench.errors import BenchError
from bench.io import atomic_write_bytes
from bench.metrics.search import SearchResult, evaluate_detection, evaluate_search, protocol_for

DET_THRESH = 0.01  # engine.py calls eval_detection with det_thresh=0.01

SPEC = TaskSpec(
    name="search", version=2, title="Person search",
    paper="SeqNet", reference_code="tinyvision/SOLIDER-PersonSearch (SeqNet fork)",
    datasets=("cuhk_sysu", "prw"),
    metrics=(Metric("mAP"), Metric("top-1"), Metric("top-5"), Metric("top-10"),
             Metric("det AP"), Metric("det recall"), Metric("GT mAP"), Metric("GT top-1")),
    semantic_weight=0.6,
    notes="metrics in percent; CUHK-SYSU gallery 100; PRW all test frames; det score >= 0.5; "
          "CBGM off unless schedule cbgm = true; det AP / recall over every gallery person "
          "(eval_detection, score >= 0.01, IoU 0.5)",
)


@dataclass(frozen=True)
class Schedule:
    min_size: int = 900
    max_size: int = 1500
    epochs: int = 20  # CUHK-SYSU
    prw_epochs: int = 18
    milestone: int = 16  # lr x0.1 from this epoch (0-based count of finished epochs)
    batch_size: int = 4  # Swin-T; Swin-S 3, Swin-B 2 (batch_by_arch)
    batch_by_arch: tuple[tuple[str, int], ...] = (("swin_s", 3), ("swin_b", 2))
    lr: float = 3e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_factor: float = 1e-3
    flip_p: float = 0.5
    # RPN
    rpn_pre_nms_train: int = 12000
    rpn_post_nms_train: int = 2000
    rpn_pre_nms_test: int = 6000
    rpn_post_nms_test: int = 300
    rpn_batch: int = 256
    # RoI heads
    roi_batch: int = 128
    score_thresh: float = 0.5
    nms_thresh: float = 0.4
    proposal_reg_weight: float = 10.0  # SOLVER.LW_PROPOSAL_REG (every other loss weight is 1)
    clip_grad_norm: float = 10.0  # SOLVER.CLIP_GRADIENTS
    detections_per_img: int = 300
    # OIM
    oim_scalar: float = 30.0
    oim_momentum: float = 0.5
    cq_size: int = 5000  # CUHK-SYSU
    prw_cq_size: int = 500
    embedding_dim: int = 256
    # evaluation
    det_thresh: float = 0.5
    cws: bool = True
    ignore_cam_id: bool = True  # PRW: False = the cross-camera protocol
    # CBGM (eval_func.py's cbgm=True): off in SOLIDER-PersonSearch (EVAL_USE_CBGM = False)
    cbgm: bool = False
    # EVAL_USE_GT: also search with the ground-truth gallery boxes (score 1, the re-ID head's
    # embeddings), reported as "GT mAP" / "GT top-1": the re-ID part without the detector's
    eval_use_gt: bool = False
    cbgm_k1: int = 10  # CUHK-SYSU: gallery images of the k1 most similar detections revisited
    cbgm_k2: int = 3  # CUHK-SYSU: the query and its k2 - 1 most confident context people
    prw_cbgm_k1: int = 30
    prw_cbgm_k2: int = 4
    drop_path_rate: float = 0.1  # models/swin.py build_swin


SCHEDULES = {
    "paper": Schedule(),
    "smoke": Schedule(min_size=240, max_size=400, epochs=2, prw_epochs=2, milestone=100,
                      batch_size=2, lr=3e-3, warmup_factor=0.1, rpn_pre_nms_train=1000,
                      rpn_post_nms_train=200, rpn_pre_nms_test=500, rpn_post_nms_test=50,
                      rpn_batch=128, roi_batch=32, score_thresh=0.05, detections_per_img=50,
                      cq_size=100, prw_cq_size=100, det_thresh=0.05, eval_use_gt=True),
}


# --------------------------------------------------------------------------------------
# The Swin split: backbone (stages 0-2) and Res5 head (stage 3 on RoIs)
# --------------------------------------------------------------------------------------
class SwinBody(nn.Module):
    """Patch embedding + stages 0-2 of a zoo Swin -> {"feat_res4": norm2 map (NCHW)}."""

    def __init__(self, swin: nn.Module, semantic_weight: float | None):
        super().__init__()
        self.swin = swin
        self.semantic_weight = semantic_weight
        self.out_channels = swin.stages[2].blocks[0].norm1.normalized_shape[0]

    def cond(self, x: torch.Tensor):
        return self.swin._controller_input(self.semantic_weight, x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        sw = self.swin
        cond = self.cond(x)
        prompt = sw._prompt(None, x)
        x = sw.drop_after_pos(sw.patch_embed(x))
        for i in range(2):
            x, _ = sw.stages[i](x, prompt)
            if cond is not None:
                x = x * F.softplus(sw.semantic_embed_w[i](cond))[:, None, None, :] \
                    + sw.semantic_embed_b[i](cond)[:, None, None, :]
        _, out = sw.stages[2](x, prompt)  # stage 2's output before merging (the merge is redone per RoI)
        return {"feat_res4": sw.norm2(out).permute(0, 3, 1, 2).contiguous()}


class Res5Head(nn.Module):
    """RoI features (N, C2, 14, 14) -> stages[2].downsample -> λ modulation -> stage 3 ->
    norm3; returns average-pooled ``feat_res4`` (N, C2, 1, 1) and ``feat_res5`` (N, C3, 1, 1).
    Holds its own copy of the backbone's last stage (the second head copies it again)."""

    def __init__(self, swin: nn.Module, semantic_weight: float | None):
        super().__init__()
        self.downsample = copy.deepcopy(swin.stages[2].downsample)
        self.stage = copy.deepcopy(swin.stages[3])
        self.norm = copy.deepcopy(swin.norm3)
        self.semantic_weight = semantic_weight
        self.has_controller = swin.semantic_weight is not None
        if self.has_controller:
            self.embed_w = copy.deepcopy(swin.semantic_embed_w[2])
            self.embed_b = copy.deepcopy(swin.semantic_embed_b[2])
            self.default_lambda = swin.semantic_weight
        self.in_channels = self.downsample.norm.normalized_shape[0] // 4
        self.out_channels = self.norm.normalized_shape[0]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        res4 = F.adaptive_avg_pool2d(x, 1)
        y = self.downsample(x.permute(0, 2, 3, 1))
        if self.has_controller:
            lam = self.default_lambda if self.semantic_weight is None else self.semantic_weight
            cond = torch.tensor([[lam, 1 - lam]], dtype=y.dtype, device=y.device)
            y = y * F.softplus(self.embed_w(cond))[:, None, None, :] + self.embed_b(cond)[:, None, None, :]
        y, _ = self.stage(y)
        y = self.norm(y).permute(0, 3, 1, 2)
        return {"feat_res4": res4, "feat_res5": F.adaptive_avg_pool2d(y, 1)}


class FastRCNNPredictor(nn.Module):
    def __init__(self, in_channels: int, num_classes: int = 2):
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4)

    def forward(self, x):
        x = x.flatten(1)
        return self.cls_score(x), self.bbox_pred(x)


class BBoxRegressor(nn.Module):
    """SeqNet's second-head box regression: Linear + BatchNorm1d (bn_neck), 2 classes x 4."""

    def __init__(self, in_channels: int, num_classes: int = 2):
        super().__init__()
        self.bbox_pred = nn.Sequential(nn.Linear(in_channels, 4 * num_classes),
                                       nn.BatchNorm1d(4 * num_classes))
        nn.init.normal_(self.bbox_pred[0].weight, std=0.01)
        nn.init.constant_(self.bbox_pred[0].bias, 0)
        nn.init.normal_(self.bbox_pred[1].weight, std=0.01)
        nn.init.constant_(self.bbox_pred[1].bias, 0)

    def forward(self, x):
        x = x.flatten(1)
        if x.shape[0] == 1 and self.training:
            return F.linear(x, self.bbox_pred[0].weight, self.bbox_pred[0].bias)
        return self.bbox_pred(x)


class NormAwareEmbedding(nn.Module):
    """NAE: feat_res4 and feat_res5 -> (Linear + BN) to dim/2 each -> concat; the L2 norm,
    rescaled by BatchNorm1d(1), is the person logit; the normalised vector the embedding."""

    def __init__(self, in_channels: tuple[int, int], dim: int = 256):
        super().__init__()
        self.dim = dim
        dims = (dim // 2, dim - dim // 2)
        self.projectors = nn.ModuleDict()
        for name, c, d in zip(("feat_res4", "feat_res5"), in_channels, dims):
            proj = nn.Sequential(nn.Linear(c, d), nn.BatchNorm1d(d))
            nn.init.normal_(proj[0].weight, std=0.01)
            nn.init.normal_(proj[1].weight, std=0.01)
            nn.init.constant_(proj[0].bias, 0)
            nn.init.constant_(proj[1].bias, 0)
            self.projectors[name] = proj
        self.rescaler = nn.BatchNorm1d(1, affine=True)

    def forward(self, feats: dict[str, torch.Tensor]):
        outs = []
        for name, proj in self.projectors.items():
            x = feats[name].flatten(1)
            if x.shape[0] == 1 and self.training:  # BN cannot train on one sample
                x = F.linear(x, proj[0].weight, proj[0].bias)
            else:
                x = proj(x)
            outs.append(x)
        out = torch.cat(outs, 1)
        norms = out.norm(2, 1, keepdim=True)
        emb = out / norms.clamp(min=1e-12)
        if norms.shape[0] == 1 and self.training:
            logits = norms.flatten()
        else:
            logits = self.rescaler(norms).flatten()
        return emb, logits


# --------------------------------------------------------------------------------------
# OIM
# --------------------------------------------------------------------------------------
class OIMLoss(nn.Module):
    """Online instance matching (Xiao et al., CVPR 2017) as SeqNet's ``models/oim.py``.

    ``labels``: 0 background (dropped), 1..num_pids labelled identities, anything larger an
    unlabeled person.  Logits are ``scalar x`` the cosine similarity to the lookup table
    (one row per identity) and to the circular queue of unlabeled features; the loss is
    cross-entropy over labelled samples (unlabeled ones are ignored, their targets are
    never a class).  After the logits are taken (so the gradient sees the old tables, as
    the official backward does), in training the table row of each labelled sample moves
    to ``m·row + (1-m)·x`` and is re-normalised, and each unlabeled sample's feature is
    written at the queue's head, which advances circularly.
    """

    def __init__(self, dim: int, num_pids: int, cq_size: int, momentum: float = 0.5,
                 scalar: float = 30.0):
        super().__init__()
        self.num_pids, self.cq_size = num_pids, cq_size
        self.momentum, self.scalar = momentum, scalar
        self.register_buffer("lut", torch.zeros(num_pids, dim))
        self.register_buffer("cq", torch.zeros(cq_size, dim))
        self.register_buffer("header", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        keep = labels > 0
        x, target = x[keep], labels[keep] - 1
        if x.shape[0] == 0:
            return x.sum() * 0.0
        table = torch.cat([self.lut, self.cq]).to(x.dtype)
        logits = self.scalar * (x @ table.t())
        labelled = target < self.num_pids
        loss = (F.cross_entropy(logits[labelled].float(), target[labelled])
                if labelled.any() else logits.sum() * 0.0)
        if self.training:
            self.update(x.detach().float(), target)
        return loss

    @torch.no_grad()
    def update(self, x: torch.Tensor, target: torch.Tensor) -> None:
        for f, y in zip(x, target.tolist()):
            if y < self.num_pids:
                row = self.momentum * self.lut[y] + (1.0 - self.momentum) * f
                self.lut[y] = row / row.norm().clamp(min=1e-12)
            elif self.cq_size:
                self.cq[int(self.header)] = f
                self.header.fill_((int(self.header) + 1) % self.cq_size)


# --------------------------------------------------------------------------------------
# The two sequential heads
# --------------------------------------------------------------------------------------
class SeqRoIHeads(RoIHeads):
    """torchvision's RoIHeads for sampling, box coding and proposal post-processing, with
    SeqNet's Faster R-CNN head -> re-ID head sequence."""

    def __init__(self, box_roi_pool, box_head, reid_head, s: Schedule, num_pids: int,
                 cq_size: int):
        super().__init__(
            box_roi_pool=box_roi_pool, box_head=box_head,
            box_predictor=BBoxRegressor(reid_head.out_channels),
            fg_iou_thresh=0.5, bg_iou_thresh=0.5, batch_size_per_image=s.roi_batch,
            positive_fraction=0.5, bbox_reg_weights=None, score_thresh=s.score_thresh,
            nms_thresh=s.nms_thresh, detections_per_img=s.detections_per_img)
        self.faster_rcnn_predictor = FastRCNNPredictor(box_head.out_channels, 2)
        self.reid_head = reid_head
        self.embedding_head = NormAwareEmbedding((reid_head.in_channels, reid_head.out_channels),
                                                 s.embedding_dim)
        self.reid_loss = OIMLoss(s.embedding_dim, num_pids, cq_size, s.oim_momentum,
                                 s.oim_scalar)
        self.cws = s.cws

    def embed_boxes(self, features, boxes, image_shapes):
        f = self.reid_head(self.box_roi_pool(features, boxes, image_shapes))
        return self.embedding_head(f)[0]

    def forward(self, features, proposals, image_shapes, targets=None, raw: bool = False):
        """Training: the loss dict.  Test: per image {boxes, scores, embeddings}; ``raw``
        stops before CWS and NMS (the candidates SeqNet's ``query_img_as_gallery`` merges
        with the query box)."""
        if self.training:
            proposals, _, p_labels, p_targets = self.select_training_samples(proposals, targets)
        pf = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        p_logits, p_regs = self.faster_rcnn_predictor(pf["feat_res5"])
        if self.training:
            boxes = self.box_coder.decode(p_regs.detach(), proposals)
            boxes = [box_ops.clip_boxes_to_image(b[:, 1], shape)
                     for b, shape in zip(boxes.split([len(p) for p in proposals]), image_shapes)]
            boxes, _, b_labels, b_targets = self.select_training_samples(boxes, targets)
        else:
            boxes, fcs, _ = self.postprocess_detections(p_logits, p_regs, proposals, image_shapes)
        n = [len(b) for b in boxes]
        if sum(n) == 0:
            z = features["feat_res4"].new_zeros
            return [dict(boxes=z(0, 4), scores=z(0), embeddings=z(0, self.embedding_head.dim))
                    for _ in boxes], {}
        bf = self.reid_head(self.box_roi_pool(features, boxes, image_shapes))
        b_regs = self.box_predictor(bf["feat_res5"])
        emb, b_logits = self.embedding_head(bf)
        if self.training:
            pl = torch.cat(p_labels).clamp(0, 1)
            bl = torch.cat(b_labels)
            loss_p_cls = F.cross_entropy(p_logits.float(), pl)
            loss_p_reg = _reg_loss(p_regs.float(), pl, torch.cat(p_targets))
            loss_b_reg = _reg_loss(b_regs.float(), bl.clamp(0, 1), torch.cat(b_targets))
            loss_b_cls = F.binary_cross_entropy_with_logits(b_logits.float(), bl.clamp(0, 1).float())
            return [], {"loss_proposal_cls": loss_p_cls, "loss_proposal_reg": loss_p_reg,
                        "loss_box_cls": loss_b_cls, "loss_box_reg": loss_b_reg,
                        "loss_box_reid": self.reid_loss(emb, bl)}
        out = []
        decoded = self.box_coder.decode(b_regs, boxes)[:, 1]
        for b, s_, e, shape in zip(decoded.split(n), fcs, emb.split(n), image_shapes):
            b = box_ops.clip_boxes_to_image(b, shape)
            keep = s_ > self.score_thresh
            b, s_, e = b[keep], s_[keep], e[keep]
            keep = box_ops.remove_small_boxes(b, 1e-2)
            b, s_, e = b[keep], s_[keep], e[keep]
            if raw:
                out.append(dict(boxes=b, scores=s_, embeddings=e))
                continue
            if self.cws:
                e = e * s_[:, None]
            keep = box_ops.nms(b, s_, 0.5)[: self.detections_per_img]
            out.append(dict(boxes=b[keep], scores=s_[keep], embeddings=e[keep]))
        return out, {}


def _reg_loss(regs: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """SeqNet's ``detection_losses`` regression term: smooth L1 (β = 1, ``F.smooth_l1_loss``'s
    default) of the positive samples' class-1 deltas, summed, over the number of samples."""
    pos = torch.nonzero(labels > 0).flatten()
    regs = regs.reshape(regs.shape[0], -1, 4)[pos, 1]
    return F.smooth_l1_loss(regs, targets[pos], beta=1.0, reduction="sum") / max(labels.numel(), 1)


class SeqNet(nn.Module):
    def __init__(self, swin: nn.Module, semantic_weight: float | None, s: Schedule,
                 num_pids: int, cq_size: int):
        super().__init__()
        self.body = SwinBody(swin, semantic_weight)
        box_head = Res5Head(swin, semantic_weight)
        reid_head = Res5Head(swin, semantic_weight)
        # the trunk keeps only what it runs: stage 3 and its norm live in the heads
        swin.stages[3] = nn.Identity()
        anchors = AnchorGenerator(sizes=((32, 64, 128, 256, 512),),
                                  aspect_ratios=((0.5, 1.0, 2.0),))
        self.rpn = RegionProposalNetwork(
            anchors, RPNHead(self.body.out_channels, anchors.num_anchors_per_location()[0]),
            fg_iou_thresh=0.7, bg_iou_thresh=0.3, batch_size_per_image=s.rpn_batch,
            positive_fraction=0.5,
            pre_nms_top_n=dict(training=s.rpn_pre_nms_train, testing=s.rpn_pre_nms_test),
            post_nms_top_n=dict(training=s.rpn_post_nms_train, testing=s.rpn_post_nms_test),
            nms_thresh=0.7)
        pool = MultiScaleRoIAlign(featmap_names=["feat_res4"], output_size=14, sampling_ratio=2)
        self.roi_heads = SeqRoIHeads(pool, box_head, reid_head, s, num_pids, cq_size)
        self.transform = GeneralizedRCNNTransform(s.min_size, s.max_size, *IMAGENET)
        self.proposal_reg_weight = s.proposal_reg_weight

    def forward(self, images, targets=None, gt_boxes=None):
        """Training: the loss dict.  Test: per image {boxes, scores, embeddings}; with
        ``gt_boxes`` (per image (Ni, 4), image pixels) also ``gt_embeddings`` (Ni, D), the
        re-ID head's embeddings of those boxes from the same features (SeqNet's
        ``EVAL_USE_GT``)."""
        sizes = [im.shape[-2:] for im in images]
        if gt_boxes is not None:
            targets = [{"boxes": b.reshape(-1, 4)} for b in gt_boxes]
        images, targets = self.transform(images, targets)
        features = self.body(images.tensors)
        proposals, rpn_losses = self.rpn(images, features, targets)
        dets, losses = self.roi_heads(features, proposals, images.image_sizes, targets)
        if self.training:
            losses["loss_rpn_cls"] = rpn_losses["loss_objectness"]
            losses["loss_rpn_reg"] = rpn_losses["loss_rpn_box_reg"]
            losses["loss_proposal_reg"] = losses["loss_proposal_reg"] * self.proposal_reg_weight
            return losses
        dets = self.transform.postprocess(dets, images.image_sizes, sizes)
        if gt_boxes is not None:
            boxes = [t["boxes"] for t in targets]
            n = [len(b) for b in boxes]
            emb = (self.roi_heads.embed_boxes(features, boxes, images.image_sizes) if sum(n)
                   else features["feat_res4"].new_zeros(0, self.roi_heads.embedding_head.dim))
            for d, e in zip(dets, emb.split(n)):
                d["gt_embeddings"] = e
        return dets

    @torch.no_grad()
    def embed_query(self, image: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
        """The re-ID head's embedding of a ground-truth box (no CWS)."""
        images, targets = self.transform([image], [{"boxes": box[None]}])
        features = self.body(images.tensors)
        return self.roi_heads.embed_boxes(features, [targets[0]["boxes"]], images.image_sizes)[0]

    @torch.no_grad()
    def detect_context(self, image: torch.Tensor, query_boxes: torch.Tensor, limit: int):
        """The query image as a gallery image, for CBGM (SeqNet's ``query_img_as_gallery``).

        ``query_boxes`` (Q, 4): the queries of this image.  Per query, as the reference: the
        detections (score threshold, no CWS) and the query box at score 1 go through NMS 0.5
        together, at most ``detections_per_img`` are kept; the query box (always kept) is
        dropped here and the first ``limit`` others, by decreasing score, are returned as
        (boxes (n, 4) in image pixels, scores (n,), embeddings (n, D))."""
        size = image.shape[-2:]
        images, targets = self.transform([image], [{"boxes": query_boxes.reshape(-1, 4)}])
        features = self.body(images.tensors)
        proposals, _ = self.rpn(images, features)
        [d], _ = self.roi_heads(features, proposals, images.image_sizes, raw=True)
        n, top = len(d["scores"]), self.roi_heads.detections_per_img
        out = []
        for g in targets[0]["boxes"]:
            b = torch.cat([d["boxes"], g[None].to(d["boxes"].dtype)])
            s_ = torch.cat([d["scores"], d["scores"].new_ones(1)])
            keep = box_ops.nms(b.float(), s_.float(), 0.5)[:top]
            keep = keep[keep < n][:max(limit, 0)]
            [r] = self.transform.postprocess([{"boxes": b[keep]}], images.image_sizes, [size])
            out.append((r["boxes"], s_[keep], d["embeddings"][keep]))
        return out


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------
class SceneList(Dataset):
    def __init__(self, images, labels: dict[int, int] | None = None, flip_p: float = 0.0,
                 seed: int = 0):
        self.images, self.labels, self.flip_p = list(images), labels, flip_p
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from bench.data.base import read_image

        im = self.images[i]
        x = torch.from_numpy(np.array(read_image(im.path))).permute(2, 0, 1).float() / 255
        if self.labels is None:
            return x, i
        boxes = torch.tensor(np.asarray(im.boxes, dtype=np.float32))
        unl = len(self.labels) + 1
        labels = torch.as_tensor([self.labels.get(int(p), unl) for p in im.pids], dtype=torch.int64)
        if self.flip_p and self.rng.random() < self.flip_p:
            w = x.shape[-1]
            x = x.flip(-1)
            boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
        return x, {"boxes": boxes, "labels": labels}


def _collate(batch):
    return tuple(zip(*batch))


def evaluate(query_feats, gallery_boxes, gallery_scores, gallery_feats, protocol,
             det_thresh: float = 0.5, query_context=None, cbgm_k1: int = 10,
             cbgm_k2: int = 3) -> SearchResult:
    """mAP / top-k on plain arrays, with CBGM when ``query_context`` (per query, the other
    people's embeddings in its image) is given; see :mod:`bench.metrics.search`."""
    return evaluate_search(query_feats, gallery_boxes, gallery_scores, gallery_feats, protocol,
                           det_thresh=det_thresh, query_context=query_context,
                           cbgm_k1=cbgm_k1, cbgm_k2=cbgm_k2)


def reported(data, protocol, query_feats, boxes, scores, feats, det_thresh: float = 0.5,
             query_context=None, cbgm_k1: int = 10, cbgm_k2: int = 3,
             gt_feats=None) -> dict[str, float]:
    """The task's rows in percent, from predictions on ``data``'s gallery: mAP and top-1/5/10
    (:func:`evaluate`), the detector's AP and recall over every gallery person
    (:func:`bench.metrics.search.evaluate_detection`, score >= ``DET_THRESH``) and, with
    ``gt_feats`` (per gallery image, its ground-truth boxes' re-ID embeddings), SeqNet's
    ``EVAL_USE_GT``: those boxes as detections of score 1, as "GT mAP" and "GT top-1"."""
    r = evaluate(query_feats, boxes, scores, feats, protocol, det_thresh, query_context,
                 cbgm_k1, cbgm_k2)
    gt_boxes = [g.boxes for g in data.gallery]
    recall, ap = evaluate_detection(gt_boxes, boxes, scores, DET_THRESH)
    rows = {"mAP": 100.0 * r.mAP, **{f"top-{k}": 100.0 * r.topk[k] for k in (1, 5, 10)},
            "det AP": 100.0 * ap, "det recall": 100.0 * recall}
    if gt_feats is not None:
        g = evaluate(query_feats, gt_boxes, [np.ones(len(b)) for b in gt_boxes], gt_feats,
                     protocol)
        rows.update({"GT mAP": 100.0 * g.mAP, "GT top-1": 100.0 * g.topk[1]})
    return rows


def cbgm_ks(s: Schedule, dataset: str) -> tuple[int, int]:
    """SeqNet's CBGM (k1, k2) for a dataset: 30, 4 on PRW, 10, 3 otherwise (CUHK-SYSU)."""
    return (s.prw_cbgm_k1, s.prw_cbgm_k2) if dataset == "prw" else (s.cbgm_k1, s.cbgm_k2)


@register_task(SPEC)
class Search:
    def run(self, ctx):
        s = schedule_for(ctx, SCHEDULES)
        for key in ctx.datasets:
            root, _ = dataset_root(ctx.config, key, profile=ctx.profile)
            data = read_dataset(key, root)
            for name, value in self.train_and_test(ctx, s, data, key).items():
                yield _measure(key, name, value)

    @staticmethod
    def evaluate_file(path, data) -> dict[str, float]:
        """Re-evaluate saved predictions (``<dataset>_predictions.npz``: per gallery image its
        detections, per query its embedding, each keyed by image name) on dataset records.
        A file saved with CBGM on (``cbgm``) also holds each query's context (``context_*``)
        and is re-evaluated with CBGM; files from before CBGM existed have no ``cbgm`` and
        are evaluated without it."""
        pred = np.load(path, allow_pickle=False)
        det_thresh = float(pred["det_thresh"])
        ignore_cam = bool(pred["ignore_cam_id"]) if "ignore_cam_id" in pred else True
        offsets = pred["offsets"]
        pos = {n: j for j, n in enumerate(pred["gallery_names"].tolist())}
        qpos = {n: j for j, n in enumerate(pred["query_keys"].tolist())}
        boxes, scores, feats = [], [], []
        dim = pred["query_feats"].shape[1]
        for g in data.gallery:
            j = pos.get(g.name)
            if j is None:
                raise BenchError(f"{path}: gallery image {g.name} has no saved detections")
            sl = slice(offsets[j], offsets[j + 1])
            boxes.append(pred["boxes"][sl]); scores.append(pred["scores"][sl])
            feats.append(pred["feats"][sl].reshape(-1, dim))
        try:
            rows = [qpos[_query_key(q)] for q in data.queries]
        except KeyError as e:
            raise BenchError(f"{path}: query {e.args[0]} is not in the predictions") from None
        qf = pred["query_feats"][rows] if rows else np.zeros((0, dim), np.float32)
        context, k1, k2 = None, 0, 0
        if "cbgm" in pred and bool(pred["cbgm"]):
            missing = [k for k in ("context_offsets", "context_feats", "cbgm_k1", "cbgm_k2")
                       if k not in pred]
            if missing:
                raise BenchError(f"{path}: saved with cbgm on but has no {', '.join(missing)}; "
                                 "re-run the test")
            co, cf = pred["context_offsets"], pred["context_feats"].reshape(-1, dim)
            context = [cf[co[j]:co[j + 1]] for j in rows]
            k1, k2 = int(pred["cbgm_k1"]), int(pred["cbgm_k2"])
        gt_feats = None
        if "gt_feats" in pred:  # saved with eval_use_gt on
            go, gf = pred["gt_offsets"], pred["gt_feats"].reshape(-1, dim)
            gt_feats = [gf[go[pos[g.name]]:go[pos[g.name] + 1]] for g in data.gallery]
            bad = [g.name for g, f in zip(data.gallery, gt_feats) if len(f) != len(g.boxes)]
            if bad:
                raise BenchError(f"{path}: the saved ground-truth embeddings of {bad[0]} do "
                                 "not match its boxes in the dataset")
        return reported(data, protocol_for(data, ignore_cam), qf, boxes, scores, feats,
                        det_thresh, context, k1, k2, gt_feats)

    def train_and_test(self, ctx, s: Schedule, data, key: str) -> dict[str, float]:
        gen = seed_everything(ctx.seed)
        pids = sorted({int(p) for im in data.train for p in im.pids if p != UNLABELED})
        labels = {p: i + 1 for i, p in enumerate(pids)}
        swin = build_backbone(ctx, drop_path_rate=s.drop_path_rate)
        if not hasattr(swin, "stages") or len(swin.stages) != 4:
            raise BenchError(f"search: backbone {ctx.backbone!r} is not a 4-stage Swin")
        cq = s.prw_cq_size if key == "prw" else s.cq_size
        model = SeqNet(swin, ctx.semantic_weight, s, len(pids), cq).to(ctx.device)
        arch = str(ctx.backbone_meta.get("arch", ""))
        bs = dict(s.batch_by_arch).get(arch, s.batch_size)
        loader = DataLoader(SceneList(data.train, labels, s.flip_p, ctx.seed), batch_size=bs,
                            shuffle=True, num_workers=num_workers(), collate_fn=_collate,
                            generator=gen, drop_last=len(data.train) > bs)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=s.lr, momentum=s.momentum,
                                    weight_decay=s.weight_decay)
        epochs = s.prw_epochs if key == "prw" else s.epochs
        state = {"epoch": 0, "it": 0}

        def lr_at(epoch):
            state["epoch"], state["it"] = epoch, 0
            return (s.lr * (0.1 if epoch >= s.milestone else 1.0),)

        def step(batch):
            if state["epoch"] == 0:  # linear warm-up over the first epoch's iterations
                a = min(1.0, state["it"] / max(len(loader) - 1, 1))
                for g in optimizer.param_groups:
                    g["lr"] = s.lr * (s.warmup_factor * (1 - a) + a)
            state["it"] += 1
            imgs, targets = batch
            imgs = [x.to(ctx.device) for x in imgs]
            targets = [{k: v.to(ctx.device) for k, v in t.items()} for t in targets]
            losses = model(imgs, targets)
            return sum(v.float() for v in losses.values())

        fit(ctx, model, loader, step, optimizer, epochs, lr_at, state_name=f"{key}_state.pt",
            clip_grad_norm=s.clip_grad_norm)
        return self.test(ctx, s, model, data)

    @torch.no_grad()
    def test(self, ctx, s: Schedule, model: SeqNet, data) -> dict[str, float]:
        """Detect in every gallery image (SeqNet's gallery loader), embed the query boxes,
        save the predictions and evaluate them (:func:`reported`)."""
        model.eval()
        dim = s.embedding_dim
        per: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = [None] * len(data.gallery)
        gt_feats: list[np.ndarray] = [None] * len(data.gallery)
        loader = DataLoader(SceneList(data.gallery), batch_size=1,
                            num_workers=num_workers(), collate_fn=_collate)
        with ctx.out.progress() as progress:
            bar = progress.add_task("search: gallery", total=len(loader))
            for imgs, idx in loader:
                gt = ([torch.tensor(data.gallery[i].boxes, device=ctx.device) for i in idx]
                      if s.eval_use_gt else None)
                with autocast(ctx.device, ctx.precision):
                    out = model([x.to(ctx.device) for x in imgs], gt_boxes=gt)
                for o, i in zip(out, idx):
                    per[i] = (o["boxes"].float().cpu().numpy(),
                              o["scores"].float().cpu().numpy(),
                              o["embeddings"].float().cpu().numpy())
                    if gt is not None:
                        gt_feats[i] = o["gt_embeddings"].float().cpu().numpy()
                progress.advance(bar)
            bar = progress.add_task("search: queries", total=len(data.queries))
            from bench.data.base import read_image
            qf = []
            for q in data.queries:
                x = torch.from_numpy(np.array(read_image(q.path))).permute(2, 0, 1).float() / 255
                with autocast(ctx.device, ctx.precision):
                    qf.append(model.embed_query(x.to(ctx.device),
                                                torch.tensor(q.box, device=ctx.device)).float().cpu().numpy())
                progress.advance(bar)
            context = self.query_context(ctx, s, model, data, progress) if s.cbgm else None
        empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, dim), np.float32))
        boxes, scores = [p[0] for p in per], [p[1] for p in per]
        qf = np.stack(qf) if qf else np.zeros((0, dim), np.float32)
        k1, k2 = cbgm_ks(s, data.name)
        extra = {}
        if s.eval_use_gt:
            extra.update(gt_offsets=np.cumsum([0] + [len(f) for f in gt_feats]),
                         gt_feats=np.concatenate(gt_feats or [empty[2]]).astype(np.float32))
        if context is not None:
            extra.update(cbgm=True, cbgm_k1=k1, cbgm_k2=k2,
                         context_offsets=np.cumsum([0] + [len(c[1]) for c in context]),
                         context_boxes=np.concatenate([c[0] for c in context] or [empty[0]]),
                         context_scores=np.concatenate([c[1] for c in context] or [empty[1]]),
                         context_feats=np.concatenate([c[2] for c in context] or [empty[2]]))
        buf = io.BytesIO()  # saved for `bench eval search <file> <dataset>`
        np.savez(buf, **extra, gallery_names=np.array([g.name for g in data.gallery]),
                 offsets=np.cumsum([0] + [len(p[1]) for p in per]),
                 boxes=np.concatenate([p[0] for p in per]).astype(np.float32),
                 scores=np.concatenate([p[1] for p in per]).astype(np.float32),
                 feats=np.concatenate([p[2] for p in per]).astype(np.float32),
                 query_keys=np.array([_query_key(q) for q in data.queries]),
                 query_feats=qf.astype(np.float32), det_thresh=s.det_thresh,
                 ignore_cam_id=s.ignore_cam_id)
        atomic_write_bytes(Path(ctx.work_dir) / f"{data.name}_predictions.npz", buf.getvalue())
        return reported(data, protocol_for(data, s.ignore_cam_id), qf, boxes, scores,
                        [p[2] for p in per], s.det_thresh,
                        None if context is None else [c[2] for c in context], k1, k2,
                        gt_feats if s.eval_use_gt else None)

    @torch.no_grad()
    def query_context(self, ctx, s: Schedule, model: SeqNet, data, progress):
        """Per query, the other people detected in its image (boxes, scores, embeddings; at
        most ``k2 - 1``, by decreasing score), for CBGM; each query image is run once."""
        from bench.data.base import read_image

        _, k2 = cbgm_ks(s, data.name)
        by_image: dict[str, list[int]] = {}
        for i, q in enumerate(data.queries):
            by_image.setdefault(q.path, []).append(i)
        out: list = [None] * len(data.queries)
        bar = progress.add_task("search: query context (CBGM)", total=len(by_image))
        for path, idx in by_image.items():
            x = torch.from_numpy(np.array(read_image(path))).permute(2, 0, 1).float() / 255
            boxes = torch.tensor(np.stack([np.asarray(data.queries[i].box, np.float32) for i in idx]),
                                 device=ctx.device)
            with autocast(ctx.device, ctx.precision):
                found = model.detect_context(x.to(ctx.device), boxes, k2 - 1)
            for i, (b, sc, e) in zip(idx, found):
                out[i] = (b.float().cpu().numpy(), sc.float().cpu().numpy(), e.float().cpu().numpy())
            progress.advance(bar)
        return out


def _query_key(q) -> str:
    """Queries are keyed by frame, identity and box (PRW has several queries per frame)."""
    return f"{q.name}|{q.pid}|" + ",".join(f"{v:g}" for v in np.asarray(q.box).tolist())


def _measure(dataset: str, metric: str, value: float):
    from bench.runner import Measurement

    return Measurement(dataset, "test", metric, value)
