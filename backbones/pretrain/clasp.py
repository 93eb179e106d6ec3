"""CLASP pretraining: CLIP pseudo-labels at two levels, multi-task, on the PC-MoE backbone.

Paper: "CLIP-Guided Adaptable Self-Supervised Learning for Human-Centric Visual Tasks"
(CLASP).  What the paper fixes: a frozen CLIP gives low-level (body-part) and high-level
(attribute) pseudo-labels for unlabeled person images; they are put into the representation
by multi-task pre-training; a Prompt-Controlled MoE backbone (:mod:`backbones.clasp`) with a
learnable prompt per task mitigates the conflicts between the tasks; downstream tasks pick
the prompt that suits them.  No code is public; every other detail below is our decision.

**Pseudo-labels** (:class:`PseudoLabeler`, from a :class:`backbones.clip_teacher.CLIPTeacher`):

* *Parts*: ``partnum = 3`` parts, head / upper body / lower body (the bands SOLIDER's parts
  are scored against in :mod:`.evaluate`).  Each part has a prompt set in the vocabulary
  of person captions (``"<colour> hair"``; ``"<colour> shirt"``, ``"<colour> long coat"``;
  ``"<colour> trousers|shorts|skirt|dress|shoes"``).  For each image and part the one prompt
  whose text embedding best matches the *image* embedding is picked ("one prompt per part",
  chosen per image), then every patch token's embedding (``encode_dense``) is scored against
  the three picked prompts.  Scores are centred per image and part (minus the part's mean
  over the image's tokens: a prompt that matches everything equally locates nothing), and
  a token's part is the arg-max.  Background: the tokens whose best raw score falls in the
  lower cluster of a 1-D two-means split per image (as SOLIDER's foreground split of token
  norms), labelled 0.  Labels are made at the CLIP's token grid and taken to the student's
  grid by area-majority vote.
* *Attributes*: PA100k's 26 attributes, each a (positive, negative) pair of prompt sets
  written in caption style (``"A man with short black hair wearing a red long-sleeved shirt
  and blue trousers, grey shoes, with a green hat."`` vs the same sentence without), each
  written in 12 fixed contexts of person, hair and colours that only the attribute varies
  across; the pseudo-label is the soft probability softmax(CLIP logit scale x cosine) of
  the positive set's mean text embedding against the negative's (CLIP's zero-shot
  classifier with prompt ensembling).  Colour-less prompts ("A person with a hat") scored
  at chance with our caption-trained CLIP: no caption looks like them.  The three view
  attributes have prompts too, but captions never name a view, so a CLIP trained on
  captions cannot know them (measured near chance).  Measured with the small CLIP trained
  on the ``small`` world's 1,500 pairs (``--epochs 40`` / ``100``): attribute mA 52.9 /
  54.5 against 50.0 for base rates, part mIoU 0.187 / 0.173 against 0.113 for fixed
  bands (:func:`pseudo_label_quality`, 128 images).
* *Prompts and gates are trained faster, without decay*: the task prompts and the gate
  projections get ``prompt_lr_scale = 10`` x the learning rate and no weight decay.  Under
  DINO's weight decay (0.04 to 0.4) the prompts shrink towards 0 and every task's gates
  towards the same bias-only mixture.  Measured (CPU, ``test`` arch, smoke recipe, 250
  steps on the ``small`` world's 2,000 crops, the global-gate overlaps distill-part /
  distill-attribute / part-attribute of the exported EMA teacher): from 0.931 / 0.923 /
  0.903 at initialisation to 0.933 / 0.922 / 0.907 with the backbone's rate and decay, and
  to 0.908 / 0.886 / 0.887 with this rule; over 750 steps with this rule to 0.663 / 0.453
  / 0.423, the attribute prompt's gate entropy from 1.378 to 0.827 nats (uniform: 1.386).
* The teacher sees the student's two global views *before* their photometric augmentation
  (same crop and flip, no colour jitter, blur or solarisation, :class:`CLASPCrops`): prompts
  name colours, and a hue shift would change them.

**Multi-task pre-training** (:class:`CLASP`): DINO self-distillation (student/EMA teacher,
multi-crop, :mod:`.dino`) on the PC-MoE Swin, plus a per-token part head (one linear layer
on the last-stage map, cross-entropy against the part pseudo-labels, weight ``part_loss``)
and an attribute head (linear on the pooled last-stage feature, binary cross-entropy against
the soft attribute pseudo-labels, weight ``attr_loss``).  Each pre-training task runs the
backbone with its own prompt: the backbone's prompt rows are named by downstream task, so
self-distillation trains the ``reid`` row, the part task the ``parsing`` row and the
attribute task the ``attribute`` row.  At export each downstream task *picks* the prompt of
the pre-training task it is closest to (:data:`PROMPT_OF`): ``default``, ``reid`` and
``search`` the self-distillation prompt; ``attribute`` the attribute prompt; ``parsing``,
``pose`` and ``detection`` the part prompt; the picked vector is copied into the task's row,
so ``model(x, task=t)`` needs nothing new downstream.  The exported backbone is the EMA
teacher (as DINO/SOLIDER export it).  The CLIP teacher is frozen and not saved with the
training state (it is re-read from its file on resume).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageOps

from backbones.pretrain.data import MultiCrop, _u, blur, colour_jitter, random_resized_crop, to_tensor
from backbones.pretrain.dino import DINO

Tensor = torch.Tensor

PART_NAMES = ("head", "upper", "lower")
_COLOURS = ("black", "white", "grey", "red", "blue", "green", "yellow", "brown", "purple",
            "pink", "orange", "navy")
_HAIR = ("black", "brown", "blond", "grey", "red")
PART_PROMPTS: dict[str, tuple[str, ...]] = {
    "head": tuple(f"{c} hair" for c in _HAIR),
    "upper": tuple(f"{c} {g}" for g in ("shirt", "long coat") for c in _COLOURS),
    "lower": tuple(f"{c} {g}" for g in ("trousers", "shorts", "skirt", "dress", "shoes")
                   for c in _COLOURS),
}
# The pre-training task whose prompt each downstream task picks (see the module doc).
PRETRAIN_PROMPT = {"distill": "reid", "part": "parsing", "attribute": "attribute"}
PROMPT_OF = {"default": "distill", "reid": "distill", "search": "distill",
             "attribute": "attribute", "parsing": "part", "pose": "part", "detection": "part"}


def _contexts(n: int = 12) -> list[dict[str, str]]:
    """``n`` fixed caption contexts (who, hair, clothing colours) for prompt ensembling,
    spread over the vocabulary: each attribute's prompt pair is written in every context, so
    the positive and negative sets differ only in the attribute."""
    c = _COLOURS
    return [dict(who=("man", "woman")[i % 2], hair=f"{('short', 'long')[i // 2 % 2]} "
                 f"{_HAIR[i % len(_HAIR)]}", upper=c[3 * i % 12], lower=c[(5 * i + 1) % 12],
                 shoes=c[(7 * i + 2) % 12], other=c[(11 * i + 5) % 12]) for i in range(n)]


def _sentence(ctx: dict[str, str], who: str | None = None, upper: str = "long-sleeved shirt",
              upper_pattern: str = "", logo: str = "", lower: str = "trousers",
              lower_pattern: str = "", shoes: str = "shoes", extra: str = "") -> str:
    """A person caption (the CUHK-PEDES / LUPerson-TA style) in context ``ctx``; ``extra``
    may name ``{other}``, the context's spare colour (a hat's, a bag's)."""
    return (f"A {who or ctx['who']} with {ctx['hair']} hair wearing a {upper_pattern}"
            f"{ctx['upper']} {upper}{logo} and {lower_pattern}{ctx['lower']} {lower}, "
            f"{ctx['shoes']} {shoes}{extra.format(other=ctx['other'])}.")


def attribute_prompts() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """``{PA100k attribute: (positive prompts, negative prompts)}`` in caption style.

    Prompt ensembling (CLIP's zero-shot recipe): every prompt is written in each of the
    :func:`_contexts`, varying only the attribute (a colour-less "A person with a hat"
    is unlike every caption a person-caption CLIP was trained on)."""
    ctxs = _contexts()

    def each(**kw) -> tuple[str, ...]:
        return tuple(_sentence(c, **kw) for c in ctxs)

    def some(key: str, values) -> tuple[str, ...]:
        return tuple(t for v in values for t in each(**{key: v}))

    def extra(e: str):
        return each(extra=f", with {e}"), each()

    shirts, coat = ("short-sleeved shirt", "long-sleeved shirt"), ("long coat",)
    adults, old, young = ("man", "woman"), ("elderly man", "elderly woman"), ("boy", "girl")
    return {
        "Female": (some("who", ("woman", "girl", "elderly woman")),
                   some("who", ("man", "boy", "elderly man"))),
        "AgeOver60": (some("who", old), some("who", adults + young)),
        "Age18-60": (some("who", adults), some("who", old + young)),
        "AgeLess18": (some("who", young), some("who", adults + old)),
        # captions never name a view: plain prompts (a caption-trained CLIP cannot know them)
        "Front": (("A person seen from the front.",), ("A person seen from the back.",
                                                       "A person seen from the side.")),
        "Side": (("A person seen from the side.",), ("A person seen from the front.",
                                                     "A person seen from the back.")),
        "Back": (("A person seen from the back.",), ("A person seen from the front.",
                                                     "A person seen from the side.")),
        "Hat": extra("a {other} hat"), "Glasses": extra("glasses"),
        "HandBag": extra("a {other} handbag"), "ShoulderBag": extra("a {other} shoulder bag"),
        "Backpack": extra("a {other} backpack"),
        "HoldObjectsInFront": extra("something held in front"),
        "ShortSleeve": (some("upper", shirts[:1]), some("upper", shirts[1:] + coat)),
        "LongSleeve": (some("upper", shirts[1:] + coat), some("upper", shirts[:1])),
        "LongCoat": (some("upper", coat), some("upper", shirts)),
        "UpperStride": (each(upper_pattern="striped "), each()),
        "UpperLogo": (each(logo=" with a logo"), each()),
        "UpperPlaid": (each(upper_pattern="plaid "), each()),
        "UpperSplice": (tuple(_sentence(c, upper_pattern=f"{c['other']}-spliced ") for c in ctxs),
                        each()),
        "LowerStripe": (each(lower_pattern="striped "), each()),
        "LowerPattern": (each(lower_pattern="patterned "), each()),
        "Trousers": (some("lower", ("trousers",)), some("lower", ("shorts", "skirt", "dress"))),
        "Shorts": (some("lower", ("shorts",)), some("lower", ("trousers", "skirt", "dress"))),
        "Skirt&Dress": (some("lower", ("skirt", "dress")), some("lower", ("trousers", "shorts"))),
        "boots": (each(shoes="boots"), each()),
    }


def two_means_split(v: Tensor, iters: int = 10) -> Tensor:
    """Per row of ``v`` (B, N): True for the entries in the upper of two 1-D k-means
    clusters (initialised at the row's min and max)."""
    lo, hi = v.min(1, keepdim=True).values, v.max(1, keepdim=True).values
    for _ in range(iters):
        upper = (v - lo).abs() > (v - hi).abs()
        n_up = upper.sum(1, keepdim=True).clamp(min=1)
        n_lo = (~upper).sum(1, keepdim=True).clamp(min=1)
        hi = torch.where(upper.any(1, keepdim=True), (v * upper).sum(1, keepdim=True) / n_up, hi)
        lo = torch.where((~upper).any(1, keepdim=True), (v * ~upper).sum(1, keepdim=True) / n_lo, lo)
    return (v - lo).abs() > (v - hi).abs()


def majority_pool(labels: Tensor, size: tuple[int, int], num_classes: int) -> Tensor:
    """(B, h, w) integer labels -> (B, H, W) by area-weighted majority vote (any grids)."""
    onehot = F.one_hot(labels.long(), num_classes).permute(0, 3, 1, 2).float()
    return F.adaptive_avg_pool2d(onehot, size).argmax(1) if (
        size[0] <= labels.shape[1] and size[1] <= labels.shape[2]) else \
        F.interpolate(onehot, size=size, mode="nearest").argmax(1)


class PseudoLabeler(nn.Module):
    """Part maps and attribute probabilities from a CLIP teacher (see the module doc)."""

    def __init__(self, teacher, attribute_names: Sequence[str] | None = None):
        super().__init__()
        from bench.data.synth.people import PA100K_ATTRIBUTES

        self.teacher = teacher
        self.attribute_names = tuple(attribute_names or PA100K_ATTRIBUTES)
        prompts = attribute_prompts()
        missing = [a for a in self.attribute_names if a not in prompts]
        if missing:
            raise ValueError(f"no CLIP prompts for attribute(s) {', '.join(missing)}")
        mean_emb = lambda texts: F.normalize(teacher.encode_text(texts).mean(0), dim=-1)
        pos = torch.stack([mean_emb(prompts[a][0]) for a in self.attribute_names])
        neg = torch.stack([mean_emb(prompts[a][1]) for a in self.attribute_names])
        self.register_buffer("attr_pos", pos, persistent=False)
        self.register_buffer("attr_neg", neg, persistent=False)
        sizes = [len(PART_PROMPTS[p]) for p in PART_NAMES]
        part = teacher.encode_text([t for p in PART_NAMES for t in PART_PROMPTS[p]])
        self.register_buffer("part_text", part, persistent=False)
        self.register_buffer("part_of", torch.repeat_interleave(
            torch.arange(len(PART_NAMES)), torch.tensor(sizes)), persistent=False)

    @torch.no_grad()
    def attributes(self, x: Tensor) -> Tensor:
        """(B, A) probabilities of the attributes."""
        img = self.teacher.encode_image(x)
        s = self.teacher.logit_scale
        return torch.sigmoid(s * (img @ self.attr_pos.t() - img @ self.attr_neg.t()))

    @torch.no_grad()
    def parts(self, x: Tensor) -> Tensor:
        """(B, h, w) labels on the teacher's token grid: 0 background, 1 head, 2 upper,
        3 lower."""
        img = self.teacher.encode_image(x)  # B, D
        dense = self.teacher.encode_dense(x)  # B, h, w, D
        B, h, w, D = dense.shape
        K = len(PART_NAMES)
        sim = img @ self.part_text.t()  # B, P: pick one prompt per part and image
        masked = sim.unsqueeze(1).masked_fill(
            self.part_of[None, None, :] != torch.arange(K, device=sim.device)[None, :, None],
            -math.inf)  # B, K, P
        chosen = self.part_text[masked.argmax(-1)]  # B, K, D
        tok = torch.einsum("bnd,bkd->bnk", dense.reshape(B, h * w, D), chosen)  # B, N, K
        centred = tok - tok.mean(1, keepdim=True)
        label = centred.argmax(-1) + 1
        fg = two_means_split(tok.max(-1).values)
        return torch.where(fg, label, torch.zeros_like(label)).reshape(B, h, w)


# --------------------------------------------------------------------------------------
# The objective
# --------------------------------------------------------------------------------------
class CLASPCrops(MultiCrop):
    """SOLIDER's multi-crop (same draws, so the student sees DINO's crops) plus the two
    global views before their photometric augmentation, appended last, for the CLIP
    teacher: ``[global1, global2, local..., clean1, clean2]``."""

    def __call__(self, img: Image.Image, g: torch.Generator) -> list[Tensor]:
        crops, clean = [], []
        for v in range(2):
            c = random_resized_crop(img, self.global_size, self.global_scale, self.ratio, g)
            if _u(g) < 0.5:
                c = c.transpose(Image.FLIP_LEFT_RIGHT)
            clean.append(to_tensor(c))
            c = blur(colour_jitter(c, g), 1.0 if v == 0 else 0.1, g)
            if v == 1 and _u(g) < 0.2:
                c = ImageOps.solarize(c, 128)
            crops.append(to_tensor(c))
        for _ in range(self.n_local):
            c = random_resized_crop(img, self.local_size, self.local_scale, self.ratio, g)
            if _u(g) < 0.5:
                c = c.transpose(Image.FLIP_LEFT_RIGHT)
            crops.append(to_tensor(blur(colour_jitter(c, g), 0.5, g)))
        return crops + clean


def resolve_teacher(cfg, bench_cfg=None):
    """The run's CLIP teacher: ``cfg.teacher`` (a local open_clip checkpoint, architecture
    from ``cfg.teacher_model`` or its sidecar), else the embedded default: the small CLIP
    of ``bench pretrain --method clip`` at the run's profile, trained now if not cached."""
    from backbones.clip_teacher import load_teacher
    from bench.errors import BenchError

    if cfg.teacher:
        return load_teacher(cfg.teacher, cfg.teacher_model)
    from backbones.pretrain.config import profile_config
    from backbones.pretrain.loop import default_out_dir, dist_info, run_name, train
    from bench import config as config_mod

    bench_cfg = bench_cfg or config_mod.load(None)
    ccfg = profile_config("clip", cfg.profile, clip_model=cfg.clip_model, seed=cfg.seed)
    dest = default_out_dir(bench_cfg, ccfg)
    ckpt = dest / f"{run_name(ccfg)}.safetensors"
    if not ckpt.is_file():
        if dist_info()[1] > 1:
            raise BenchError(f"CLASP: the default CLIP teacher {ckpt} is not trained yet; run "
                             f"`bench pretrain --method clip --profile {cfg.profile}` first")
        result = train(ccfg, dest, bench_cfg=bench_cfg)
        if result.checkpoint is None:
            raise BenchError(f"CLASP: training the CLIP teacher stopped at step {result.steps}")
        ckpt = result.checkpoint
    return load_teacher(ckpt)


class CLASP(DINO):
    """The ``clasp`` objective: ``step(batch) -> {"loss", "dino", "part", "attr", ...}``
    (see the module doc).  ``make_backbone`` builds the PC-MoE Swin with the
    self-distillation prompt as its default task."""

    def __init__(self, cfg, make_backbone, teacher):
        from bench.errors import BenchError

        if cfg.partnum != len(PART_NAMES):
            raise BenchError(f"CLASP: partnum must be {len(PART_NAMES)} (head, upper, lower), "
                             f"got {cfg.partnum}")
        super().__init__(cfg, make_backbone)
        self.labeler = PseudoLabeler(teacher)
        dim = self.student.backbone.num_features
        self.heads = nn.ModuleDict({
            "part": nn.Linear(dim, cfg.partnum + 1),
            "attribute": nn.Linear(dim, len(self.labeler.attribute_names))})
        for m in self.heads.values():
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        # train() builds the objective from the run's seed before loading any saved state,
        # so these are the initial gates on a resumed run too
        self.gates_at_init = gate_report(self.student.backbone)

    def trainable(self) -> nn.Module:
        return nn.ModuleDict({"student": self.student, "heads": self.heads})

    def lr_scales(self) -> dict[str, float]:
        """The task prompts and the gate projections (names in :meth:`trainable`): no weight
        decay and ``prompt_lr_scale`` x the learning rate (see the module doc)."""
        bb = self.student.backbone
        names = ["task_prompts"] + [f"{blk}.{g}.{w}" for blk, _ in bb.moe_blocks()
                                    for g in ("gate_global", "gate_channel")
                                    for w in ("weight", "bias")]
        return {f"student.backbone.{n}": self.cfg.prompt_lr_scale for n in names}

    def export(self) -> nn.Module:
        """The EMA teacher's backbone, each downstream task's prompt row set to the prompt
        of the pre-training task it picks (:data:`PROMPT_OF`).  Called once, at the end of
        training (it writes the rows in place)."""
        bb = self.teacher.backbone
        with torch.no_grad():
            rows = {t: bb.task_prompts[bb.tasks.index(PRETRAIN_PROMPT[p])].clone()
                    for t, p in PROMPT_OF.items() if t in bb.tasks}
            for t, v in rows.items():
                bb.task_prompts[bb.tasks.index(t)] = v
        return bb

    def export_extras(self, checkpoint: Path, **meta: Any) -> list[Path]:
        """``<checkpoint>.clasp.json`` beside the exported backbone: the quality of the CLIP
        teacher's pseudo-labels on the synthetic world (:func:`pseudo_label_quality`) and
        the PC-MoE gates per pre-training task (:func:`gate_report`) of the export, next
        to those of the same backbone at initialisation (drawn from the run's seed)."""
        from bench.io import atomic_write_json

        path = report_path(checkpoint)
        atomic_write_json(path, {**meta, "pseudo_labels": pseudo_label_quality(
            self.labeler.teacher), "gates": gate_report(self.teacher.backbone),
            "gates_at_init": self.gates_at_init})
        return [path]

    def step(self, batch, step: int) -> dict:
        cfg = self.cfg
        crops, _, _ = batch
        n = 2 + cfg.n_local
        views, clean = crops[:n], torch.cat(crops[n:n + 2])
        with torch.no_grad():
            t_out, _ = self.teacher(views[:2])
            parts = self.labeler.parts(clean)
            attrs = self.labeler.attributes(clean)
        s_out, _ = self.student(views)
        dino, stats = self.dino_loss(s_out, t_out)

        bb = self.student.backbone
        glob = torch.cat(views[:2])
        fmap = bb.forward_features(glob, task=PRETRAIN_PROMPT["part"])
        target = majority_pool(parts, tuple(fmap.shape[-2:]), cfg.partnum + 1)
        logits = self.heads["part"](fmap.permute(0, 2, 3, 1)).float()
        part = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
        pooled = bb.forward_features(glob, task=PRETRAIN_PROMPT["attribute"]).mean((2, 3))
        attr = F.binary_cross_entropy_with_logits(self.heads["attribute"](pooled).float(), attrs)
        loss = dino + cfg.part_loss * part + cfg.attr_loss * attr
        return {"loss": loss, "dino": dino.detach(), "part": part.detach(),
                "attr": attr.detach(), **stats,
                "part_acc": float((logits.argmax(-1) == target).float().mean()),
                "fg_frac": float((parts > 0).float().mean()),
                "attr_pos_frac": float((attrs > 0.5).float().mean())}


def report_path(checkpoint: str | Path) -> Path:
    """Where a CLASP export's report (pseudo-label quality, gates) lies beside it."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + ".clasp.json")


# --------------------------------------------------------------------------------------
# PC-MoE gates per task prompt
# --------------------------------------------------------------------------------------
@torch.no_grad()
def gate_report(backbone) -> dict[str, Any]:
    """How the PC-MoE gates differ between the pre-training tasks' prompts.

    Per task (``distill`` / ``part`` / ``attribute``, the rows of :data:`PRETRAIN_PROMPT`):
    the mean over MoE blocks of the global gate's entropy (nats; ln E = uniform).  Per pair
    of tasks: the mean over blocks of the global gates' overlap sum_e min(g_a, g_b) (1 =
    identical) and of the cosine between the effective per-channel expert weights g_e c_e
    (the (E, C) scale each expert's output gets)."""
    tasks = list(PRETRAIN_PROMPT)
    gates = {t: backbone.task_gates(PRETRAIN_PROMPT[t]) for t in tasks}
    blocks = list(gates[tasks[0]])
    out: dict[str, Any] = {"blocks": len(blocks), "experts": backbone.num_experts,
                           "uniform_entropy": math.log(backbone.num_experts)}
    for t in tasks:
        ent = [float(-(g * g.clamp_min(1e-12).log()).sum()) for g, _ in gates[t].values()]
        out[f"entropy/{t}"] = float(np.mean(ent))
    for i, a in enumerate(tasks):
        for b in tasks[i + 1:]:
            ov, cos = [], []
            for blk in blocks:
                (ga, ca), (gb, cb) = gates[a][blk], gates[b][blk]
                ov.append(float(torch.minimum(ga, gb).sum()))
                ea, eb = (ga[:, None] * ca).flatten(), (gb[:, None] * cb).flatten()
                cos.append(float(F.cosine_similarity(ea, eb, dim=0)))
            out[f"overlap/{a}-{b}"] = float(np.mean(ov))
            out[f"channel_cos/{a}-{b}"] = float(np.mean(cos))
    return out


# --------------------------------------------------------------------------------------
# Pseudo-label quality on the synthetic world (where the truth is known)
# --------------------------------------------------------------------------------------
def band_prior(shape: tuple[int, int], partnum: int = 3) -> np.ndarray:
    """Fixed horizontal bands: the crop's rows cut into ``partnum`` equal bands, top to
    bottom head / upper / lower, every pixel foreground."""
    H, W = shape
    rows = np.arange(H)[:, None] * partnum // H + 1
    return np.broadcast_to(rows, (H, W)).copy()


@torch.no_grad()
def pseudo_label_quality(teacher, n: int = 128, seed: int = 0, size: str = "smoke",
                         batch: int = 64) -> dict[str, Any]:
    """Part-map mIoU and attribute mA of the CLIP pseudo-labels on ``n`` synthetic pool
    images, against trivial priors.

    Truth: the renderer's LIP labels folded into background / head / upper / lower
    (:func:`.evaluate.pool_truth`, the source SOLIDER's part purity is scored against) and
    the identity's PA100k attributes with the drawn view.  Part maps are scored at pixel
    level (token labels upsampled by nearest neighbour) with SCHP's mIoU over the four
    classes; attributes with RethinkPAR's mA.  Priors: ``bands`` (fixed equal horizontal
    thirds, all foreground), ``layout`` (each pixel's most frequent class over ``n`` other
    pool images: the best position-only guess) and attribute base rates (of those other
    images) as scores."""
    from backbones.pretrain.evaluate import _normalise, pool_truth
    from bench.metrics.attributes import pedestrian_metrics
    from bench.metrics.segmentation import mean_iou

    images, bands, attrs = pool_truth(n, seed, size)
    _, bands_other, attrs_other = pool_truth(n, seed, size, start=n)
    H, W = bands.shape[1:]
    x = _normalise(images, (H, W))
    labeler = PseudoLabeler(teacher)
    parts, probs = [], []
    for chunk in x.split(batch):
        parts.append(labeler.parts(chunk))
        probs.append(labeler.attributes(chunk))
    parts_t = torch.cat(parts)
    pred = F.interpolate(parts_t[:, None].float(), size=(H, W), mode="nearest")[:, 0].long().numpy()
    clip_seg = mean_iou(list(pred), list(bands), 4)
    band = band_prior((H, W))
    bands_seg = mean_iou([band] * n, list(bands), 4)
    layout = np.eye(4)[bands_other].sum(0).argmax(-1)
    layout_seg = mean_iou([layout] * n, list(bands), 4)
    p = torch.cat(probs).numpy()
    clip_ma = pedestrian_metrics(attrs, p)
    rates = np.broadcast_to(attrs_other.mean(0), attrs.shape)
    prior_ma = pedestrian_metrics(attrs, rates)
    from bench.data.synth.people import PA100K_ATTRIBUTES

    return {
        "images": n, "grid": list(parts_t.shape[1:]),
        "part_mIoU": clip_seg.mIoU, "part_IoU": [float(v) for v in clip_seg.iou],
        "prior_bands_mIoU": bands_seg.mIoU, "prior_layout_mIoU": layout_seg.mIoU,
        "attr_mA": clip_ma.mA, "prior_rates_mA": prior_ma.mA,
        "attr_label_mA": dict(zip(PA100K_ATTRIBUTES, map(float, clip_ma.label_mA))),
    }
