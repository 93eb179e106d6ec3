"""VAL-PAT pretraining: self-supervised, image–text and attribute learning on LUPerson-TA.

Paper: Bao et al., "Learning Transferable Pedestrian Representation from Multimodal
Information Supervision" (VAL-PAT).  What the paper fixes (its abstract, the text we have,
``shared/seeds/002_*``): three objectives trained together on LUPerson-TA, "where each image
contains text and attribute annotations" — *self-supervised contrastive learning* (intrinsic
pedestrian properties), *image–text contrastive learning* (appearance) and *multi-attribute
classification* (fine-grained information); the representation is transferred to person
reID, attribute recognition and text-based person search.  No code is public and the
abstract states none of the details below; each is our decision.

* **Self-supervised contrastive form: MoCo v3** (Chen, Xie, He, ICCV 2021) between two
  views of each image.  A query branch (the Swin, pooled last stage, a 3-layer projector
  with BN, then a 2-layer predictor) and a momentum key branch (EMA of backbone + projector,
  the loop's teacher, momentum ``momentum_teacher`` cosine to 1); loss
  ``ctr(q1, k2) + ctr(q2, k1)`` with ``ctr`` the InfoNCE of the batch (positives on the
  diagonal, the batch's other keys as negatives) at temperature ``ssl_temp`` (0.2, MoCo v3's
  for transformers), scaled by 2τ as MoCo v3 does.  Why MoCo: LUPerson's own pretraining
  (Fu et al., CVPR 2021), the line VAL-PAT's LUPerson-TA extends, is MoCo; v3 drops the
  queue, so the state is the weights alone and needs no negative bank.  Across ranks the
  negatives are each rank's own batch and BN is not synchronised (no all-gather), as
  :mod:`.clip` does: a 2-process run is not the 1-process run of the same global batch.
* **Image–text contrastive**: CLIP's symmetric InfoNCE (:func:`.clip.clip_loss`, learnable
  temperature, init 1/0.07, clamped at 100) between a linear projection of the *same*
  pooled Swin feature and a caption embedding, on both views (mean of the two losses).  The
  **text encoder** is open_clip's ``TextTransformer`` with its own BPE tokenizer (shipped in
  the package, nothing downloaded), **trained from scratch** with the backbone: VAL-PAT
  trains its text encoder with the image encoder, and the only text towers we have weights
  for are our own small CLIP's, whose joint space would hand the image encoder an already
  solved alignment.  Sizes (``text_model``, :data:`TEXT_MODELS`): ``test`` and ``small``
  are the text towers of :data:`.clip.CLIP_MODELS`; ``base`` is CLIP ViT-B's text
  transformer (width 512, 12 layers, context 77), the ``paper`` profile's.
* **Attributes from the captions** (:func:`caption_attributes`): VAL-PAT's attribute labels
  come with the text; we derive them by parsing each caption for PA100k's 26 attributes
  with keyword rules (gender and age words; garment words and the pattern word that
  qualifies each garment, so "striped shirt" is ``UpperStride`` and "striped trousers"
  ``LowerStripe``; hats, glasses, bags, boots, a held object).  An attribute gets a label
  only when the caption decides it: present-keyword attributes (hat, bags, patterns, ...)
  are negative when the caption does not name them (a caption lists what a person wears);
  gender, age, sleeve length and lower garment only when a word for them is there, and the
  view (front/side/back) only if a phrase names it (our synthetic captions never do, so
  those three are never trained).  The loss is binary cross-entropy with the downstream
  attribute task's positive-ratio weights (RethinkPAR's; the ratios are the pool's parsed
  positive rates), averaged over the labelled entries only, from a linear head on the
  pooled feature of the second, lightly blurred view (the first is always blurred: at
  128x64 that washes out the stripes and plaid the labels name; a test-arch Swin trained
  on the small world's PA100k attributes alone, AdamW at 1e-3, reaches 61.1 mA after 8
  epochs with 0.8-1 crops, 58.4 when each is also blurred as the first view is, 57.5 with
  0.5-1 crops and either view's blur).  (Summed over attributes, as RethinkPAR sums, it is ~20x
  the other two losses at weight 1 and, in the smoke runs, cost the image-text alignment
  half its zero-shot R@1 without teaching the attributes.)  The ``attributes``
  column of our ``annotations.json`` (the renderer's truth, views included) is *not* read:
  on real data labels must come from what the format carries, and the text is what every
  image-text corpus carries.
* **Views** (:class:`ValpatViews`): two random-resized crops of area scale 0.8-1
  (``view_scale``: SOLIDER's global crop for people, not MoCo v3's 0.08-1 for ImageNet
  objects: a caption and its attributes describe the whole person, and a half-area crop
  drops the hat or the boots they name) at the person aspect ratio, with a flip,
  brightness/contrast jitter (p 0.8) and Gaussian blur (p 1.0 / 0.1, MoCo v3's asymmetry);
  no hue or saturation jitter, no grayscale and no solarisation: captions and attributes
  name colours (as :mod:`.clip`).  MoCo and image–text use both views, the attributes the
  second; one student and one momentum forward per view serve all three.
* **Loss**: ``ssl_loss * ssl + itc_loss * itc + attr_loss * attr`` (weights 1, 1, 1 by
  default; the paper gives none here).  AdamW, cosine LR with warm-up (the loop's), per
  parameter gradient clipping off in the paper profile (MoCo v3 does not clip).
* **Export**: the query branch's Swin (MoCo v3 transfers its base encoder), strict-loading
  into ``valpat_swin_*`` (``test_sup_swin`` for the ``test`` arch), and beside it the
  image–text head (``<zoo name>.text.safetensors`` + ``.text.json``: text tower, image
  projection, temperature; :func:`load_itc_head`), which the ``text_search`` task starts
  from when it fine-tunes this backbone.

Measured on the 2-core CPU (``test`` arch, smoke profile, 2026-11-23).  On the smoke
world's 160 LUPerson-TA pairs (150 steps, 4.5 min) the image–text loss memorises the pairs
and nothing transfers (zero-shot text → image on the synthetic CUHK-PEDES at chance).  On
the ``small`` world's 1,500 pairs with the 0.5-1 crops and the attributes on both views
(the recipe before this one), ``--epochs 16`` (736 steps) took the frozen kNN re-ID mAP on
the synthetic Market-1501 from 7.6 to 27.6 and the smoke fine-tunes to reid mAP 27.8 and
text_search R@1 40.2.  With this recipe, ``--epochs 32`` (1,472 steps, 17 min on 2 threads)
takes the kNN mAP to 41.5 (42.6 at step 1,000), and the smoke fine-tunes reach reid mAP
41.8 (Market-1501) / 53.2 (MSMT17) and text_search R@1 76.3 / mAP 71.1 (random init 11.0 /
11.9 and 6.2 / 8.0); the longer schedule, not the new views, is most of that gain (the
earlier recipe's kNN mAP was 38.0 at step 1,000 of a 48-epoch run).  The attributes come
slowly: :func:`attribute_probe` with 1,000
training people gives 60.3 mA against 55.3 for random weights (chance 50), and the smoke
attribute fine-tune on the small world's PA100k 58.5 against 54.7; the attribute loss has
fallen only from 0.89 to 0.77 by the end, where a test-arch Swin trained on PA100k's
attributes alone needs about 20 epochs to reach 64 mA.  Re-measured on 2026-12-06 on an AVX2
CPU in fp32 (same command, 1 thread), on synthetic world generator v3 (which draws every
torso, and all of PETA's 35 and 47 of RAP-zs's 53 evaluated attributes), with the smoke
attribute schedule that trains its classifier at 10x the backbone's rate: kNN mAP 54.2, and
the attribute fine-tune against random weights (``bench eval --baseline``, paired bootstrap
over test images) PETA-zs 55.6 / 50.0 (+5.6, 95% interval 4.0 to 7.3), PA100k 54.3 / 50.9
(+3.5, 1.0 to 6.1), RAP-zs 51.6 / 49.9 (+1.7, 0.2 to 3.1; −0.0 at fine-tune seed 1); with
``--profile small`` (the same schedules on test sets of 200-400 images), at fine-tune seeds
0 and 1, PA100k +5.1 / +4.9, PETA-zs +5.8 / +3.1, RAP-zs +1.7 / +1.8 mA, every 95% interval
above zero.  The gain comes from what the captions name (the suit, jeans, leather shoes,
trousers, shorts).
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from backbones.pretrain.data import _u, blur, random_resized_crop, to_tensor
from backbones.pretrain.heads import ema_update
from bench.errors import BenchError

Tensor = torch.Tensor

# --------------------------------------------------------------------------------------
# The text tower
# --------------------------------------------------------------------------------------
TEXT_MODELS: dict[str, dict[str, Any]] = {
    # CLIP ViT-B/16's text transformer (Radford et al.), trained from scratch here
    "base": {"embed_dim": 512, "text_cfg": {"context_length": 77, "vocab_size": 49408,
                                            "width": 512, "heads": 8, "layers": 12}},
}


def text_model_cfg(name: str) -> dict[str, Any]:
    """``{"embed_dim", "text_cfg"}`` of a text tower size (``base``, ``small``, ``test``)."""
    from backbones.pretrain.clip import CLIP_MODELS

    models = {**TEXT_MODELS, **{k: {"embed_dim": v["embed_dim"], "text_cfg": v["text_cfg"]}
                                for k, v in CLIP_MODELS.items()}}
    if name not in models:
        raise BenchError(f"text_model: unknown {name!r} (one of {', '.join(sorted(models))})")
    return models[name]


class TextEncoder(nn.Module):
    """open_clip's ``TextTransformer`` (causal, arg-max/EOT pooling, linear projection to
    ``embed_dim``) with open_clip's ``SimpleTokenizer``."""

    def __init__(self, model_cfg: dict[str, Any]):
        super().__init__()
        from open_clip.model import _build_text_tower

        text = model_cfg["text_cfg"]
        if text.get("hf_model_name") or text.get("hf_tokenizer_name"):
            raise BenchError("text encoder: Hugging Face text towers need the network; use "
                             "open_clip's own text transformer")
        self.model_cfg = {"embed_dim": int(model_cfg["embed_dim"]), "text_cfg": dict(text)}
        self.tower = _build_text_tower(self.model_cfg["embed_dim"], dict(text))
        self.context_length = int(text.get("context_length", 77))
        self.embed_dim = self.model_cfg["embed_dim"]

    def tokenize(self, texts: Sequence[str]) -> Tensor:
        from open_clip import SimpleTokenizer

        return SimpleTokenizer(context_length=self.context_length)(list(texts))

    def forward(self, tokens: Tensor) -> Tensor:
        return self.tower(tokens)


class ITCHead(nn.Module):
    """The image–text head: a linear image projection (``image_dim`` -> joint space), the
    text encoder, and CLIP's learnable temperature (``logit_scale``, init log(1/0.07))."""

    def __init__(self, image_dim: int, model_cfg: dict[str, Any]):
        super().__init__()
        self.text = TextEncoder(model_cfg)
        self.image_dim = int(image_dim)
        self.image_proj = nn.Linear(image_dim, self.text.embed_dim, bias=False)
        nn.init.normal_(self.image_proj.weight, std=image_dim ** -0.5)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def scale(self) -> Tensor:
        return self.logit_scale.exp().clamp(max=100)

    def encode_image(self, pooled: Tensor) -> Tensor:
        return self.image_proj(pooled)

    def encode_text(self, tokens: Tensor) -> Tensor:
        return self.text(tokens)


def itc_head_path(checkpoint: str | Path) -> Path:
    """Where the image–text head of a backbone checkpoint lives (``<name>.text.safetensors``)."""
    p = Path(checkpoint)
    return p.with_name(f"{p.stem}.text.safetensors")


def save_itc_head(head: ITCHead, path: str | Path, **meta: Any) -> Path:
    from safetensors.torch import save

    from bench.io import atomic_write_bytes, atomic_write_json

    path = Path(path)
    side = {"format": "hcbench-valpat-itc", "image_dim": head.image_dim,
            "text_model_cfg": head.text.model_cfg, **meta}
    tensors = {k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()}
    atomic_write_bytes(path, save(tensors, metadata={"hcbench": "valpat-itc"}))
    atomic_write_json(path.with_suffix(".json"), side)
    return path


def load_itc_head(path: str | Path) -> ITCHead:
    """The image–text head written by :func:`save_itc_head` (strict)."""
    import json

    from safetensors.torch import load_file

    path = Path(path)
    side_path = path.with_suffix(".json")
    if not path.is_file() or not side_path.is_file():
        raise BenchError(f"{path}: image-text head or its sidecar {side_path.name} not found")
    try:
        side = json.loads(side_path.read_text())
        head = ITCHead(int(side["image_dim"]), side["text_model_cfg"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise BenchError(f"{side_path}: not an image-text head sidecar ({e})") from None
    try:
        head.load_state_dict(load_file(str(path)), strict=True)
    except (RuntimeError, OSError) as e:
        first = str(e).strip().splitlines()[0]
        raise BenchError(f"{path}: not the image-text head its sidecar describes ({first})") from None
    return head


# --------------------------------------------------------------------------------------
# Attribute labels from captions
# --------------------------------------------------------------------------------------
_UPPER = r"(?:shirt|t-shirt|tshirt|tee|top|blouse|coat|jacket|sweater|hoodie|vest)"
_LOWER = r"(?:trousers|pants|jeans|slacks|shorts|skirt|dress|leggings)"


def _near(word: str, garment: str) -> re.Pattern:
    """``word`` qualifying ``garment`` within three words ("striped red long coat"), none of
    them another garment, "and" or "with" ("striped shirt and trousers" is no striped
    trousers)."""
    other = rf"(?:{_UPPER[3:-1]}|{_LOWER[3:-1]}|and|with)\b"
    return re.compile(rf"\b{word}\s+(?:(?!{other})[\w-]+\s+){{0,3}}?{garment}\b")


_ANY = {  # present-keyword attributes: the caption names them or they are absent
    "Hat": re.compile(r"\b(?:hat|cap|beanie|helmet)s?\b"),
    "Glasses": re.compile(r"\b(?:glasses|sunglasses|spectacles|eyeglasses)\b"),
    "HandBag": re.compile(r"\b(?:handbag|hand bag|purse)s?\b"),
    "ShoulderBag": re.compile(r"\b(?:shoulder bag|messenger bag|satchel|cross-?body bag|tote)s?\b"),
    "Backpack": re.compile(r"\b(?:backpack|back pack|rucksack|schoolbag)s?\b"),
    "HoldObjectsInFront": re.compile(r"\bheld in front\b|\bholding\b|\bin (?:his|her|their) hands?\b"),
    "UpperStride": _near(r"(?:striped|stripy)", _UPPER),
    "UpperLogo": re.compile(r"\blogos?\b"),
    "UpperPlaid": _near(r"(?:plaid|checked|checkered|tartan)", _UPPER),
    "UpperSplice": re.compile(r"spliced\b|\bsplice\b|\bpatchwork\b|\bcolou?r-?block"),
    "LowerStripe": _near(r"(?:striped|stripy)", _LOWER),
    "LowerPattern": _near(r"(?:patterned|floral|printed)", _LOWER),
    "LongCoat": re.compile(r"\b(?:long coat|overcoat|trench coat)s?\b"),
    "boots": re.compile(r"\bboots?\b"),
}
_FEMALE = re.compile(r"\b(?:woman|women|girl|lady|female|she|her)\b")
_MALE = re.compile(r"\b(?:man|men|boy|male|gentleman|guy|he|his)\b")
_OLD = re.compile(r"\b(?:elderly|old|senior|aged)\b")
_YOUNG = re.compile(r"\b(?:child|children|kid|boy|girl|teenager|teen)\b")
_ADULT = re.compile(r"\b(?:man|woman|men|women|lady|gentleman|guy|adult)\b")
_SHORT_SLEEVE = re.compile(r"\bshort[- ]sleeved?\b|\bshort sleeves\b|\bt-?shirt\b|\btee\b")
_LONG_SLEEVE = re.compile(r"\blong[- ]sleeved?\b|\blong sleeves\b|\bcoat\b|\bjacket\b|\bsweater\b|\bhoodie\b")
_SLEEVELESS = re.compile(r"\bsleeveless\b|\btank[- ]?top\b")
_LOWER_KIND = {"Trousers": re.compile(r"\b(?:trousers|pants|jeans|slacks|leggings)\b"),
               "Shorts": re.compile(r"\bshorts\b"),
               "Skirt&Dress": re.compile(r"\b(?:skirt|dress)\b")}
_VIEW = {"Front": re.compile(r"\bfrom the front\b|\bfacing the camera\b"),
         "Side": re.compile(r"\bfrom the side\b|\bin profile\b"),
         "Back": re.compile(r"\bfrom (?:the )?(?:back|behind)\b|\bfacing away\b")}


def caption_attributes(caption: str, names: Sequence[str] | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """PA100k-named attribute labels read from one caption: ``(values, known)``, two uint8
    vectors over ``names`` (PA100k's 26 by default); ``known[j] == 0`` where the caption
    does not decide attribute j (see the module docstring)."""
    from bench.data.synth.people import PA100K_ATTRIBUTES

    names = tuple(names or PA100K_ATTRIBUTES)
    t = caption.lower()
    val: dict[str, int] = {}
    for a, pat in _ANY.items():
        val[a] = int(bool(pat.search(t)))
    f, m = bool(_FEMALE.search(t)), bool(_MALE.search(t))
    if f != m:
        val["Female"] = int(f)
    old, young, adult = (bool(p.search(t)) for p in (_OLD, _YOUNG, _ADULT))
    age = "over60" if old else "less18" if young else "18to60" if adult else None
    if age is not None:
        val.update({"AgeOver60": int(age == "over60"), "Age18-60": int(age == "18to60"),
                    "AgeLess18": int(age == "less18")})
    short, long_ = bool(_SHORT_SLEEVE.search(t)), bool(_LONG_SLEEVE.search(t))
    if short != long_:
        val.update({"ShortSleeve": int(short), "LongSleeve": int(long_)})
    elif not short and _SLEEVELESS.search(t):  # PA100k marks neither sleeve length
        val.update({"ShortSleeve": 0, "LongSleeve": 0})
    kinds = {a: bool(p.search(t)) for a, p in _LOWER_KIND.items()}
    if sum(kinds.values()) == 1:
        val.update({a: int(v) for a, v in kinds.items()})
    views = {a: bool(p.search(t)) for a, p in _VIEW.items()}
    if sum(views.values()) == 1:
        val.update({a: int(v) for a, v in views.items()})
    values = np.array([val.get(a, 0) for a in names], dtype=np.uint8)
    known = np.array([a in val for a in names], dtype=np.uint8)
    return values, known


def masked_bce(logits: Tensor, target: Tensor, known: Tensor, ratio: Tensor | None = None
               ) -> Tensor:
    """Binary cross-entropy with RethinkPAR's positive-ratio weights exp(t(1-r) + (1-t)r)
    (when ``ratio`` is given; :func:`bench.metrics.attributes.weighted_bce`), averaged over
    the labelled entries (``known`` 1) only."""
    t = target.float()
    loss = F.binary_cross_entropy_with_logits(logits.float(), t, reduction="none")
    if ratio is not None:
        r = ratio.float()
        loss = loss * torch.exp(t * (1 - r) + (1 - t) * r)
    k = known.float()
    return (loss * k).sum() / k.sum().clamp(min=1)


# --------------------------------------------------------------------------------------
# MoCo v3
# --------------------------------------------------------------------------------------
def mlp(in_dim: int, hidden: int, out_dim: int, layers: int) -> nn.Sequential:
    """MoCo v3's ``_build_mlp``: Linear-BN-ReLU blocks, the last Linear followed by a BN
    without affine parameters."""
    mods: list[nn.Module] = []
    for i in range(layers):
        d_in = in_dim if i == 0 else hidden
        d_out = out_dim if i == layers - 1 else hidden
        mods.append(nn.Linear(d_in, d_out, bias=False))
        if i < layers - 1:
            mods += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        else:
            mods.append(nn.BatchNorm1d(d_out, affine=False))
    return nn.Sequential(*mods)


def moco_loss(q: Tensor, k: Tensor, temperature: float) -> Tensor:
    """MoCo v3's ``contrastive_loss``: InfoNCE of each query against the batch's keys (the
    positive on the diagonal), times 2τ."""
    q, k = F.normalize(q.float(), dim=1), F.normalize(k.float(), dim=1)
    logits = q @ k.t() / temperature
    target = torch.arange(len(q), device=q.device)
    return F.cross_entropy(logits, target) * (2 * temperature)


class Encoder(nn.Module):
    """Backbone + projector; ``forward(x) -> (pooled feature, projection)``."""

    def __init__(self, backbone: nn.Module, projector: nn.Module):
        super().__init__()
        self.backbone, self.projector = backbone, projector

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pooled = self.backbone(x)
        return pooled, self.projector(pooled.float())


class ValpatViews:
    """Two views per image (see the module docstring)."""

    def __init__(self, size: tuple[int, int], scale=(0.8, 1.0), ratio=(0.4, 0.6)):
        self.size, self.scale, self.ratio = tuple(size), scale, ratio

    def __call__(self, img: Image.Image, g: torch.Generator) -> list[Tensor]:
        from torchvision.transforms import functional as TF

        views = []
        for v in range(2):
            c = random_resized_crop(img, self.size, self.scale, self.ratio, g)
            if _u(g) < 0.5:
                c = c.transpose(Image.FLIP_LEFT_RIGHT)
            if _u(g) < 0.8:
                c = TF.adjust_brightness(c, _u(g, 0.6, 1.4))
                c = TF.adjust_contrast(c, _u(g, 0.6, 1.4))
            views.append(to_tensor(blur(c, 1.0 if v == 0 else 0.1, g)))
        return views


class VALPAT(nn.Module):
    """The ``valpat`` objective: ``step(batch) -> {"loss", "ssl", "itc", "attr", ...}``.

    ``make_backbone(drop_path)`` builds the zoo Swin; ``captions`` are the pool's captions
    in dataset order (a batch's dataset indices pick its captions and attribute labels)."""

    export_from = "student"  # MoCo v3 transfers the query branch's base encoder
    last_layer = None

    def __init__(self, cfg, make_backbone, captions: Sequence[str]):
        super().__init__()
        from bench.data.synth.people import PA100K_ATTRIBUTES

        self.cfg = cfg
        sb, tb = make_backbone(cfg.drop_path), make_backbone(0.0)
        dim = sb.num_features
        proj = lambda: mlp(dim, cfg.head_hidden, cfg.head_bottleneck, 3)
        self.student = Encoder(sb, proj())
        self.teacher = Encoder(tb, proj())
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)
        self.attribute_names = tuple(PA100K_ATTRIBUTES)
        self.heads = nn.ModuleDict({
            "predictor": mlp(cfg.head_bottleneck, cfg.head_hidden, cfg.head_bottleneck, 2),
            "itc": ITCHead(dim, text_model_cfg(cfg.text_model)),
            "attribute": nn.Linear(dim, len(self.attribute_names)),
        })
        nn.init.trunc_normal_(self.heads["attribute"].weight, std=0.02)
        nn.init.zeros_(self.heads["attribute"].bias)
        itc = self.heads["itc"]
        self.register_buffer("tokens", itc.text.tokenize(captions), persistent=False)
        parsed = [caption_attributes(c, self.attribute_names) for c in captions]
        self.register_buffer("attr_values", torch.as_tensor(
            np.stack([p[0] for p in parsed]).reshape(len(parsed), -1)), persistent=False)
        self.register_buffer("attr_known", torch.as_tensor(
            np.stack([p[1] for p in parsed]).reshape(len(parsed), -1)), persistent=False)
        known = self.attr_known.float()  # positive rate among the labelled, per attribute
        self.register_buffer("attr_ratio", (self.attr_values.float() * known).sum(0)
                             / known.sum(0).clamp(min=1), persistent=False)

    def trainable(self) -> nn.Module:
        return nn.ModuleDict({"student": self.student, "heads": self.heads})

    def export(self) -> nn.Module:
        return self.student.backbone

    def export_extras(self, checkpoint: Path, **meta: Any) -> list[Path]:
        """The image–text head beside the exported backbone (see the module docstring)."""
        return [save_itc_head(self.heads["itc"], itc_head_path(checkpoint),
                              text_model=self.cfg.text_model, **meta)]

    def update_teacher(self, m: float) -> None:
        ema_update(self.teacher, self.student, m)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.train(mode)  # MoCo v3's key BN uses batch statistics too
        return self

    def step(self, batch, step: int) -> dict:
        cfg = self.cfg
        (v1, v2), _, idx = batch
        B = len(v1)
        x = torch.cat([v1, v2])
        pooled, z = self.student(x)
        q = self.heads["predictor"](z)
        with torch.no_grad():
            _, k = self.teacher(x)
        q1, q2, k1, k2 = q[:B], q[B:], k[:B], k[B:]
        ssl = moco_loss(q1, k2, cfg.ssl_temp) + moco_loss(q2, k1, cfg.ssl_temp)

        itc_head = self.heads["itc"]
        idx = idx.to(self.tokens.device)
        txt = itc_head.encode_text(self.tokens[idx])
        img = itc_head.encode_image(pooled.float())
        scale = itc_head.scale()
        from backbones.pretrain.clip import clip_loss

        (l1, s1), (l2, s2) = clip_loss(img[:B], txt, scale), clip_loss(img[B:], txt, scale)
        itc = (l1 + l2) / 2

        # attributes from the lightly blurred view only (the second; see the module docstring)
        logits = self.heads["attribute"](pooled[B:].float())
        values, known = self.attr_values[idx], self.attr_known[idx]
        attr = masked_bce(logits, values, known, self.attr_ratio)
        pred = (logits > 0).to(values.dtype)
        k_sum = known.float().sum().clamp(min=1)
        loss = cfg.ssl_loss * ssl + cfg.itc_loss * itc + cfg.attr_loss * attr
        return {"loss": loss, "ssl": ssl.detach(), "itc": itc.detach(), "attr": attr.detach(),
                "i2t_acc": (s1["i2t_acc"] + s2["i2t_acc"]) / 2,
                "attr_acc": float(((pred == values).float() * known).sum() / k_sum),
                "temperature": float(1 / scale.detach())}


# --------------------------------------------------------------------------------------
# Checks on the synthetic world
# --------------------------------------------------------------------------------------
@torch.no_grad()
def attribute_probe(backbone: nn.Module, n_train: int = 192, n_test: int = 192,
                    input_size: tuple[int, int] = (128, 64), seed: int = 0,
                    size: str = "smoke", steps: int = 300, lr: float = 0.05,
                    weight_decay: float = 1e-4) -> dict[str, Any]:
    """Linear probe of frozen pooled features for the 26 PA100k attributes on synthetic
    LUPerson pool images (people VAL-PAT never saw: LUPerson-TA's are others), scored with
    RethinkPAR's mA on held-out images.  Truth: the renderer's (:func:`.evaluate.pool_truth`),
    used only to train and score the probe.  The probe is logistic regression (full batch
    Adam on standardised features, positive-ratio weighted BCE as the attribute task);
    ``chance_mA`` is 50 (a constant score).  ``label_mA`` per attribute."""
    from backbones.pretrain.evaluate import _normalise, pool_truth
    from bench.data.synth.people import PA100K_ATTRIBUTES
    from bench.metrics.attributes import pedestrian_metrics, positive_ratio, weighted_bce

    images, _, attrs = pool_truth(n_train + n_test, seed, size)
    x = _normalise(images, input_size)
    backbone.eval()
    feats = torch.cat([backbone(c).float() for c in x.split(64)])
    tr, te = slice(0, n_train), slice(n_train, n_train + n_test)
    mu, sd = feats[tr].mean(0), feats[tr].std(0).clamp(min=1e-6)
    f = (feats - mu) / sd
    y = torch.as_tensor(attrs, dtype=torch.float32)
    ratio = torch.as_tensor(positive_ratio(attrs[tr]), dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(f.shape[1], y.shape[1])
    with torch.no_grad():
        lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * 0.01)
        lin.bias.zero_()
    opt = torch.optim.Adam(lin.parameters(), lr=lr, weight_decay=weight_decay)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            weighted_bce(lin(f[tr]), y[tr], ratio).backward()
            opt.step()
    probs = torch.sigmoid(lin(f[te])).numpy()
    m = pedestrian_metrics(attrs[te], probs)
    return {"mA": 100 * m.mA, "chance_mA": 50.0, "n_train": n_train, "n_test": n_test,
            "label_mA": {a: 100 * float(v) for a, v in zip(PA100K_ATTRIBUTES, m.label_mA)}}
