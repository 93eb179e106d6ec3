"""The CLIP teacher of CLASP: any open_clip model from a local checkpoint file.

CLASP ("CLIP-Guided Adaptable Self-Supervised Learning for Human-Centric Visual Tasks")
takes its part and attribute pseudo-labels from a frozen CLIP.  Here that CLIP is an
open_clip (``open-clip-torch``) model read from a file on disk; hcbench never downloads
weights.  What the teacher offers (all outputs L2-normalised, in CLIP's joint space):

* ``encode_image(x)``: the image embedding (B, D);
* ``encode_dense(x)``: one embedding per patch token (B, h, w, D): the last transformer
  layer's patch tokens through ``ln_post`` and ``proj``, the projection CLIP applies to its
  pooled token (MaskCLIP's observation that patch tokens live in the joint space once they
  go through the same head; we use the tokens themselves, not MaskCLIP's value embedding).
  For a tower with ``pool_type='avg'`` (our small synthetic CLIP) the image embedding *is*
  the mean of these token embeddings before normalisation, so the dense map is exactly what
  the contrastive loss trained.  Only ViT vision towers without attentional pooling have
  patch tokens; anything else is an error;
* ``encode_text(texts)``: caption/prompt embeddings (T, D), tokenised with open_clip's
  ``SimpleTokenizer`` (its BPE vocabulary ships inside the package; towers that need a
  Hugging Face tokenizer or text model are refused: they would need the network);
* ``logit_scale``: CLIP's learned temperature, for softmaxes over prompts.

Images arrive normalised with the pretraining pipeline's ImageNet statistics at any size;
the teacher undoes that, resizes (bilinear) to the tower's ``image_size`` and normalises
with the model's own mean/std (OpenAI's for open_clip models unless the sidecar says other).

Which architecture a file holds: the ``model`` argument (an open_clip model name such as
``ViT-B-16``, a JSON file or a dict in open_clip's model-config format ``{"embed_dim",
"vision_cfg", "text_cfg"}``), or, when it is None, the JSON sidecar that
``bench pretrain --method clip`` writes next to its checkpoint (``<file>.json`` with
``open_clip_config``, ``mean``, ``std``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from backbones._cfg import IMAGENET_MEAN, IMAGENET_STD
from bench.errors import BenchError

Tensor = torch.Tensor
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def sidecar_path(checkpoint: str | Path) -> Path:
    p = Path(checkpoint)
    return p.with_name(p.name + ".json") if p.suffix != ".safetensors" else p.with_suffix(".json")


def build_clip(model_cfg: dict[str, Any], where: str = "model config") -> nn.Module:
    """An open_clip ``CLIP`` from a model-config dict (randomly initialised)."""
    import open_clip

    cfg = dict(model_cfg)
    for key in ("embed_dim", "vision_cfg", "text_cfg"):
        if key not in cfg:
            raise BenchError(f"{where}: open_clip model config lacks {key!r}")
    text = cfg["text_cfg"]
    if text.get("hf_model_name") or text.get("hf_tokenizer_name"):
        raise BenchError(f"{where}: Hugging Face text towers are not supported (they need the "
                         "network); use a model with open_clip's own text transformer")
    if cfg["vision_cfg"].get("timm_model_name"):
        raise BenchError(f"{where}: timm vision towers have no patch tokens for dense CLIP "
                         "features; use a ViT tower")
    keep = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "init_logit_scale",
            "init_logit_bias", "nonscalar_logit_scale"}
    kw = {k: v for k, v in cfg.items() if k in keep}
    vision = dict(kw["vision_cfg"])
    if isinstance(vision.get("image_size"), list):
        vision["image_size"] = tuple(vision["image_size"])
    kw["vision_cfg"] = vision
    return open_clip.CLIP(**kw)


def resolve_model_cfg(model: str | dict | None, checkpoint: str | Path) -> tuple[dict, dict]:
    """(open_clip model config, sidecar extras) for ``checkpoint`` (see the module doc)."""
    import open_clip

    extras: dict[str, Any] = {}
    if model is None:
        side = sidecar_path(checkpoint)
        if not side.is_file():
            raise BenchError(f"{checkpoint}: no sidecar {side.name} says which open_clip model "
                             "this is; name it (an open_clip model name or a JSON model config)")
        try:
            extras = json.loads(side.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BenchError(f"{side}: malformed JSON ({e})") from None
        if not isinstance(extras, dict) or not isinstance(extras.get("open_clip_config"), dict):
            raise BenchError(f"{side}: expected an object with an 'open_clip_config'")
        return extras["open_clip_config"], extras
    if isinstance(model, dict):
        return model, extras
    p = Path(model).expanduser()
    if p.suffix == ".json":
        if not p.is_file():
            raise BenchError(f"{p}: no such model config file")
        try:
            cfg = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BenchError(f"{p}: malformed JSON ({e})") from None
        if not isinstance(cfg, dict):
            raise BenchError(f"{p}: expected an open_clip model config object")
        return cfg, extras
    cfg = open_clip.get_model_config(model)
    if cfg is None:
        raise BenchError(f"{model!r}: not an open_clip model name (see open_clip.list_models()) "
                         "nor a .json model config")
    return cfg, extras


class CLIPTeacher(nn.Module):
    """A frozen open_clip model with dense image features (see the module docstring)."""

    def __init__(self, clip: nn.Module, mean: Sequence[float] = OPENAI_MEAN,
                 std: Sequence[float] = OPENAI_STD, source: str = "",
                 input_mean: Sequence[float] = IMAGENET_MEAN,
                 input_std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        from open_clip import SimpleTokenizer

        visual = clip.visual
        if not hasattr(visual, "transformer") or getattr(visual, "attn_pool", None) is not None:
            raise BenchError(f"{source or 'CLIP teacher'}: dense features need a ViT vision "
                             "tower without attentional pooling")
        self.clip = clip.eval().requires_grad_(False)
        self.source = source
        size = visual.image_size
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        self.grid = tuple(visual.grid_size)
        self.tokenizer = SimpleTokenizer(context_length=clip.context_length)
        scale = lambda v: torch.tensor(v, dtype=torch.float32)[:, None, None]
        self.register_buffer("mean", scale(mean), persistent=False)
        self.register_buffer("std", scale(std), persistent=False)
        self.register_buffer("in_mean", scale(input_mean), persistent=False)
        self.register_buffer("in_std", scale(input_std), persistent=False)

    def train(self, mode: bool = True):
        return super().train(False)  # always frozen, always eval

    @property
    def logit_scale(self) -> float:
        return float(self.clip.logit_scale.exp().clamp(max=100))

    def preprocess(self, x: Tensor) -> Tensor:
        """ImageNet-normalised images of any size -> the tower's size and statistics."""
        x = x.float() * self.in_std + self.in_mean
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

    def tokenize(self, texts: Sequence[str]) -> Tensor:
        return self.tokenizer(list(texts)).to(self.mean.device)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> Tensor:
        return F.normalize(self.clip.encode_text(self.tokenize(texts)).float(), dim=-1)

    @torch.no_grad()
    def encode_image(self, x: Tensor) -> Tensor:
        return F.normalize(self.clip.encode_image(self.preprocess(x)).float(), dim=-1)

    @torch.no_grad()
    def encode_dense(self, x: Tensor) -> Tensor:
        """(B, h, w, D) normalised patch-token embeddings in the joint space."""
        return F.normalize(dense_tokens(self.clip.visual, self.preprocess(x)), dim=-1)


def dense_tokens(visual: nn.Module, x: Tensor) -> Tensor:
    """Unnormalised patch-token embeddings (B, h, w, D) of an open_clip ViT tower: the last
    layer's tokens through ``ln_post`` and ``proj`` (what the tower does to its pooled
    token).  With ``pool_type='avg'`` and LN before pooling their mean is the image
    embedding."""
    tokens = visual.transformer(visual._embeds(x))[:, 1:]
    tokens = visual.ln_post(tokens)
    if visual.proj is not None:
        tokens = tokens @ visual.proj
    h, w = visual.grid_size
    return tokens.reshape(x.shape[0], h, w, -1).float()


def load_teacher(checkpoint: str | Path, model: str | dict | None = None) -> CLIPTeacher:
    """The CLIP teacher in ``checkpoint`` (a local file: .safetensors, .pt, .bin; a
    ``{"state_dict": ...}`` wrapper and ``module.`` prefixes are accepted); ``model`` names
    its architecture unless a sidecar does.  Loading is strict."""
    import open_clip

    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise BenchError(f"{path}: CLIP teacher checkpoint not found")
    cfg, extras = resolve_model_cfg(model, path)
    clip = build_clip(cfg, where=str(path))
    try:
        open_clip.load_checkpoint(clip, str(path), strict=True)
    except (RuntimeError, KeyError, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BenchError(f"{path}: not a checkpoint of this open_clip model ({first})") from None
    mean = extras.get("mean", OPENAI_MEAN)
    std = extras.get("std", OPENAI_STD)
    return CLIPTeacher(clip, mean, std, source=str(path))
