"""Text-based person search: find the images of a person from a description of them.

VAL-PAT's third downstream task (Bao et al., "Learning Transferable Pedestrian
Representation from Multimodal Information Supervision"), which the SOLIDER tables do not
have: an extra task, run by name (``bench run --tasks text_search``).  VAL-PAT's text does
not say how it fine-tunes for this task; we follow IRRA (Jiang & Ye, "Cross-Modal Implicit
Relation Reasoning and Aligning for Text-to-Image Person Retrieval", CVPR 2023; code
anosorae/IRRA), the standard recent baseline on CUHK-PEDES, with its alignment loss only.

Method.  The image encoder is the zoo backbone (pooled last stage) followed by a linear
projection to a joint space; the text encoder is open_clip's ``TextTransformer`` with its
BPE tokenizer (:class:`backbones.pretrain.valpat.ITCHead`).  Where the backbone's weights
come with an image–text head (a VAL-PAT checkpoint has ``<name>.text.safetensors`` beside
it) both the text encoder and the projection start from it (``text_init = "pretrained"``;
VAL-PAT pretrains the two encoders together); otherwise they start from scratch at the
schedule's ``text_model`` size (``base``: CLIP ViT-B's text transformer), and the log says
which.  The loss is IRRA's similarity distribution matching (SDM, :func:`sdm_loss`): for
the batch's image and caption embeddings (cosine similarities times 1/τ, τ = 0.02), the KL
divergence from each row's softmax to the true matching distribution, which spreads the
mass evenly over every pair of the same identity, image-to-text plus text-to-image.  Unlike
CLIP's InfoNCE it does not push apart two images of the same person in one batch.  Not
here: IRRA's implicit relation reasoning (a masked-language-modelling cross-modal
decoder) and its identity loss.  Every caption of every training image is one training
item; batches are drawn at random (IRRA's sampler).  Images are resized to 384x128,
flipped, padded by 10 and cropped back, normalised with ImageNet statistics and randomly
erased (p 0.5), as IRRA's training transform; Adam (weight decay 4e-5) at 1e-5 for the
pretrained parts and 5x for the parts that start from scratch (IRRA's ``lr_factor``),
5 epochs of linear warm-up from 0.1x, then a cosine to 0 over 60 epochs, batch 128.
λ = 0.2 (SOLIDER has no such task; reID's λ, both being retrievals of identities).

Evaluation: :mod:`bench.metrics.text_search` (text → image, every test caption a query,
all test images of its identity its positives): R@1, R@5, R@10, mAP and mINP in percent.
The log gives chance level (random similarities).  The features are saved as
``<dataset>_predictions.npz`` for ``bench eval text_search``.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from adapters import Metric, TaskSpec, register_task
from adapters._engine import (IMAGENET, ImageList, autocast, backbone_checkpoint, build_backbone,
                              crop_transforms, extract, fit, num_workers, schedule_for,
                              seed_everything)
from bench.data import dataset_root, read_dataset
from bench.errors import BenchError
from bench.io import atomic_write_bytes
from bench.metrics.text_search import RANKS, chance, retrieval_metrics

SPEC = TaskSpec(
    name="text_search", version=1, title="Text-based person search",
    paper="IRRA (SDM)", reference_code="anosorae/IRRA",
    datasets=("cuhk_pedes",),
    metrics=tuple(Metric(f"R@{k}") for k in RANKS) + (Metric("mAP"), Metric("mINP")),
    semantic_weight=0.2,
    notes="metrics in percent; text -> image; positives: every test image of the identity",
)


@dataclass(frozen=True)
class Schedule:
    input_size: tuple[int, int] = (384, 128)
    epochs: int = 60
    batch_size: int = 128
    lr: float = 1e-5
    new_lr_factor: float = 5.0  # parts that start from scratch
    weight_decay: float = 4e-5
    warmup_epochs: int = 5
    warmup_factor: float = 0.1
    temperature: float = 0.02
    text_model: str = "base"  # text tower size when it starts from scratch
    text_init: Literal["pretrained", "scratch"] = "pretrained"
    pad: int = 10
    erase_p: float = 0.5
    drop_path_rate: float = 0.1
    eval_batch_size: int = 256


SCHEDULES = {
    "paper": Schedule(),
    "smoke": Schedule(input_size=(128, 64), epochs=10, batch_size=32, lr=1e-4, warmup_epochs=1,
                      text_model="small", pad=4, drop_path_rate=0.0, eval_batch_size=64),
}


def sdm_loss(image: torch.Tensor, text: torch.Tensor, pids: torch.Tensor,
             logit_scale: float, eps: float = 1e-8) -> torch.Tensor:
    """IRRA's similarity distribution matching: KL(softmax(scale * cos) || true matching
    distribution), image-to-text rows plus text-to-image rows, each averaged over the batch.
    Pair (i, j) matches when ``pids[i] == pids[j]``; row i's true distribution is uniform
    over its matches."""
    img, txt = F.normalize(image.float(), dim=1), F.normalize(text.float(), dim=1)
    labels = (pids[:, None] == pids[None, :]).float()
    target = labels / labels.sum(1, keepdim=True)
    t2i = logit_scale * txt @ img.t()
    loss = 0.0
    for logits in (t2i.t(), t2i):
        p = F.softmax(logits, dim=1)
        loss = loss + (p * (F.log_softmax(logits, dim=1) - torch.log(target + eps))).sum(1).mean()
    return loss


def transforms(s: Schedule, train: bool):
    return crop_transforms(s.input_size, *IMAGENET, train=train, pad=s.pad, erase_p=s.erase_p)


class TextSearchModel(nn.Module):
    """Zoo backbone + image–text head (projection, text encoder)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, semantic_weight: float | None):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.semantic_weight = semantic_weight

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        kw = {} if self.semantic_weight is None else {"semantic_weight": self.semantic_weight}
        return self.head.encode_image(self.backbone(x, **kw))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head.encode_text(tokens)


def build_head(ctx, s: Schedule, image_dim: int) -> tuple[nn.Module, bool]:
    """(image–text head, whether it was pretrained) for the run's backbone."""
    from backbones.pretrain.valpat import ITCHead, itc_head_path, load_itc_head, text_model_cfg

    if s.text_init not in ("pretrained", "scratch"):
        raise BenchError(f"tasks.text_search: text_init must be pretrained or scratch, "
                         f"got {s.text_init!r}")
    ckpt = backbone_checkpoint(ctx) if s.text_init == "pretrained" else None
    companion = itc_head_path(ckpt) if ckpt is not None else None
    if companion is not None and companion.is_file():
        head = load_itc_head(companion)
        if head.image_dim != image_dim:
            raise BenchError(f"{companion}: its image projection takes {head.image_dim} "
                             f"features, backbone {ctx.backbone} gives {image_dim}")
        ctx.log(f"text encoder and image projection from {companion}")
        return head, True
    why = "text_init = scratch" if s.text_init == "scratch" else "no image-text head beside the weights"
    ctx.log(f"text encoder ({s.text_model}) and image projection from scratch ({why})")
    return ITCHead(image_dim, text_model_cfg(s.text_model)), False


def _rel(path: str, root: str) -> str:
    """A dataset image's name as the annotation writes it (relative to ``imgs/``)."""
    try:
        return str(Path(path).relative_to(Path(root) / "imgs"))
    except ValueError:
        return Path(path).name


def _queries(images) -> tuple[list[str], list[int], list[str]]:
    """(captions, their identities, the image each was written for) of a split."""
    caps, pids, paths = [], [], []
    for im in images:
        for c in im.captions:
            caps.append(c)
            pids.append(im.pid)
            paths.append(im.path)
    return caps, pids, paths


def evaluate(similarity, query_pids, gallery_pids) -> dict[str, float]:
    """R@1/5/10, mAP and mINP in percent (see :mod:`bench.metrics.text_search`)."""
    r = retrieval_metrics(similarity, query_pids, gallery_pids)
    return {k: 100.0 * v for k, v in r.as_dict().items()}


@register_task(SPEC)
class TextSearch:
    def run(self, ctx):
        from bench.runner import Measurement

        s = schedule_for(ctx, SCHEDULES)
        for key in ctx.datasets:
            root, _ = dataset_root(ctx.config, key, profile=ctx.profile)
            for name, value in self.train_and_test(ctx, s, read_dataset(key, root), key).items():
                yield Measurement(key, "test", name, value)

    def train_and_test(self, ctx, s: Schedule, data, key: str) -> dict[str, float]:
        gen = seed_everything(ctx.seed)
        backbone = build_backbone(ctx, drop_path_rate=s.drop_path_rate)
        head, pretrained_head = build_head(ctx, s, backbone.num_features)
        model = TextSearchModel(backbone, head, ctx.semantic_weight).to(ctx.device)
        if not data.train or not data.test:
            raise BenchError(f"{data.root}: text search needs train and test images")
        caps, pids, paths = _queries(data.train)
        tokens = head.text.tokenize(caps)
        items = [(p, i, pid) for i, (p, pid) in enumerate(zip(paths, pids))]
        loader = DataLoader(ImageList(items, transforms(s, True)), batch_size=s.batch_size,
                            shuffle=True, drop_last=len(items) > s.batch_size,
                            num_workers=num_workers(), generator=gen)
        new = s.lr * (1.0 if pretrained_head else s.new_lr_factor)
        groups = [(list(model.backbone.parameters()), s.lr),
                  (list(model.head.parameters()), new)]
        optimizer = torch.optim.Adam([{"params": p, "lr": lr} for p, lr in groups],
                                     weight_decay=s.weight_decay)

        def factor(epoch: int) -> float:
            if epoch < s.warmup_epochs:  # IRRA's linear warm-up, per epoch
                a = epoch / s.warmup_epochs
                return s.warmup_factor * (1 - a) + a
            t = (epoch - s.warmup_epochs) / max(s.epochs - s.warmup_epochs, 1)
            return 0.5 * (1 + math.cos(math.pi * t))

        def step(batch):
            x, idx, pid = batch
            img = model.encode_image(x.to(ctx.device))
            txt = model.encode_text(tokens[idx].to(ctx.device))
            return sdm_loss(img, txt, pid.to(ctx.device), 1.0 / s.temperature)

        fit(ctx, model, loader, step, optimizer, s.epochs,
            lambda e: [lr * factor(e) for _, lr in groups], state_name=f"{key}_state.pt")
        return self.test(ctx, s, model, data, key)

    @torch.no_grad()
    def test(self, ctx, s: Schedule, model: TextSearchModel, data, key: str) -> dict[str, float]:
        model.eval()
        caps, q_pids, q_paths = _queries(data.test)
        g_items = [(im.path, im.pid) for im in data.test]
        loader = DataLoader(ImageList(g_items, transforms(s, False)),
                            batch_size=s.eval_batch_size, num_workers=num_workers())
        gf, (g_pids,) = extract(ctx, model.encode_image, loader, "gallery images")
        tokens = model.head.text.tokenize(caps)
        qf = []
        for chunk in tokens.split(s.eval_batch_size):
            with autocast(ctx.device, ctx.precision):
                qf.append(model.encode_text(chunk.to(ctx.device)).float().cpu())
        qf, gf = F.normalize(torch.cat(qf), dim=1), F.normalize(gf, dim=1)
        ref = chance(q_pids, g_pids.tolist(), draws=min(20, max(3, 5000 // len(caps))))
        ctx.log(f"{key}: {len(caps)} query captions, {len(g_items)} gallery images; chance "
                + ", ".join(f"{k} {100 * v:.1f}" for k, v in ref.items()))
        buf = io.BytesIO()
        np.savez(buf, text_features=qf.numpy(), image_features=gf.numpy(),
                 query_images=[_rel(p, data.root) for p in q_paths],
                 gallery_images=[_rel(im.path, data.root) for im in data.test])
        atomic_write_bytes(Path(ctx.work_dir) / f"{key}_predictions.npz", buf.getvalue())
        return evaluate(qf @ gf.t(), q_pids, g_pids)

    @staticmethod
    def evaluate_file(path, data) -> dict[str, float]:
        """Re-evaluate saved features (``<dataset>_predictions.npz`` of a run: one text
        feature per test caption with the image it describes, one image feature per test
        image) against dataset records; identities come from the records."""
        pred = np.load(path)
        index = {_rel(im.path, data.root): im.pid for im in data.test}
        try:
            q = [index[str(p)] for p in pred["query_images"]]
            g = [index[str(p)] for p in pred["gallery_images"]]
        except KeyError as e:
            raise BenchError(f"{path}: image {e.args[0]} is not in {data.name}'s test split") from None
        sim = torch.as_tensor(pred["text_features"]) @ torch.as_tensor(pred["image_features"]).t()
        return evaluate(sim, q, g)
