"""``bench pretrain --method clip``: a small CLIP on LUPerson-TA's image–caption pairs.

The embedded default teacher of CLASP (:mod:`.clasp`) when no CLIP checkpoint is given: an
open_clip ``CLIP`` (Radford et al., "Learning Transferable Visual Models From Natural
Language Supervision") trained from scratch with CLIP's symmetric InfoNCE loss between the
image and the caption embeddings of a batch, with CLIP's learnable temperature (init 1/0.07,
clamped at 100).  Written as an objective with the loop's ``step(batch, step)`` shape; the
exported file is the open_clip state dict (``clip_<size>.safetensors``) with a sidecar
(``clip_<size>.json``) holding the open_clip model config, so
:func:`backbones.clip_teacher.load_teacher` and plain open_clip read it back.

Our decisions (no paper fixes them for this role):

* **Architecture** (``clip_model``): ``small`` is a small ViT for person crops,
  input 128x64 (the smoke crops), patch 8 (a 16x8 token grid), width 128, 3 layers, and a
  text transformer of width 128, 2 layers, context 48 (the longest synthetic caption is 44
  BPE tokens), joint space 128, sized to train in a few CPU minutes; ``test`` is a
  one-layer toy for tests.  The vision tower
  pools by *averaging* the patch tokens after ``ln_post`` (open_clip ``pool_type='avg'``)
  instead of a class token, so the image embedding is the mean of the patch embeddings and
  the dense token/prompt similarities CLASP needs are what the loss trained.
* **Views**: one random-resized crop (scale 0.6-1, person aspect ratio) and a horizontal
  flip per image; no colour jitter, no grayscale: captions name colours.
* **Tokeniser**: open_clip's ``SimpleTokenizer`` (its BPE vocabulary ships with the
  package, 49,408 tokens); no weights are ever downloaded.
* **Across ranks** the loss uses each rank's own batch as negatives (no feature
  all-gather), so a 2-process run is not the 1-process run of the same global batch.
* ``arch`` is not used (CLIP is no Swin); the zoo name is ``clip_<clip_model>``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from backbones.pretrain.data import _u, random_resized_crop, to_tensor
from bench.errors import BenchError

Tensor = torch.Tensor

CLIP_MODELS: dict[str, dict[str, Any]] = {
    "small": {
        "embed_dim": 128,
        "vision_cfg": {"image_size": [128, 64], "patch_size": 8, "width": 128, "layers": 3,
                       "head_width": 32, "mlp_ratio": 4.0, "pool_type": "avg"},
        "text_cfg": {"context_length": 48, "vocab_size": 49408, "width": 128, "heads": 4,
                     "layers": 2},
    },
    "test": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": [64, 32], "patch_size": 16, "width": 32, "layers": 1,
                       "head_width": 16, "mlp_ratio": 2.0, "pool_type": "avg"},
        "text_cfg": {"context_length": 48, "vocab_size": 49408, "width": 32, "heads": 2,
                     "layers": 1},
    },
}


class CaptionView:
    """One training view for image-text learning: RandomResizedCrop(0.6-1) + flip."""

    def __init__(self, size: tuple[int, int], scale=(0.6, 1.0), ratio=(0.4, 0.6)):
        self.size, self.scale, self.ratio = tuple(size), scale, ratio

    def __call__(self, img: Image.Image, g: torch.Generator) -> list[Tensor]:
        c = random_resized_crop(img, self.size, self.scale, self.ratio, g)
        if _u(g) < 0.5:
            c = c.transpose(Image.FLIP_LEFT_RIGHT)
        return [to_tensor(c)]


def clip_loss(img: Tensor, txt: Tensor, logit_scale: Tensor) -> tuple[Tensor, dict]:
    """CLIP's symmetric cross-entropy over the batch's image-text similarities; pair i is
    the positive of row i and column i."""
    img, txt = F.normalize(img.float(), dim=-1), F.normalize(txt.float(), dim=-1)
    logits = logit_scale * img @ txt.t()
    target = torch.arange(len(img), device=img.device)
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
    acc = float((logits.argmax(1) == target).float().mean())
    return loss, {"i2t_acc": acc}


def caption_tokens(captions, context_length: int) -> Tensor:
    from open_clip import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)(list(captions))


class CLIPPretrain(nn.Module):
    """The ``clip`` objective: ``step(batch) -> {"loss", "clip", "i2t_acc", "temperature"}``.

    ``captions`` are the pool's captions in dataset order; a batch's dataset indices pick
    its captions."""

    export_from = "student"
    teacher = None
    last_layer = None

    def __init__(self, cfg, captions):
        super().__init__()
        from backbones.clip_teacher import build_clip

        if cfg.clip_model not in CLIP_MODELS:
            raise BenchError(f"clip_model: unknown {cfg.clip_model!r} "
                             f"(one of {', '.join(CLIP_MODELS)})")
        self.cfg = cfg
        self.model_cfg = CLIP_MODELS[cfg.clip_model]
        self.student = build_clip(self.model_cfg)
        ctx = self.model_cfg["text_cfg"]["context_length"]
        self.register_buffer("tokens", caption_tokens(captions, ctx), persistent=False)

    def trainable(self) -> nn.Module:
        return self.student

    def update_teacher(self, m: float) -> None:
        pass

    def step(self, batch, step: int) -> dict:
        (x,), _, idx = batch
        clip = self.student
        img = clip.encode_image(x)
        txt = clip.encode_text(self.tokens[idx.to(self.tokens.device)])
        scale = clip.logit_scale.exp().clamp(max=100)
        loss, stats = clip_loss(img, txt, scale)
        return {"loss": loss, "clip": loss.detach(), **stats, "temperature": float(1 / scale.detach())}

    def export_checkpoint(self, path: Path, **meta: Any) -> Path:
        """``clip_<size>.safetensors`` (open_clip keys) + the sidecar naming the config."""
        from safetensors.torch import save

        from backbones._cfg import IMAGENET_MEAN, IMAGENET_STD
        from backbones.clip_teacher import sidecar_path
        from bench.io import atomic_write_bytes, atomic_write_json

        side = {"format": "hcbench-open_clip", "open_clip_config": self.model_cfg,
                "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                "clip_model": self.cfg.clip_model, **meta}
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.student.state_dict().items()}
        atomic_write_bytes(path, save(tensors, metadata={"hcbench": "open_clip"}))
        atomic_write_json(sidecar_path(path), side)
        return path
