"""Pretraining settings: one frozen dataclass, a ``paper`` and a ``smoke`` profile per method.

``paper`` is the official recipe (reference doc section 2; SOL:``run_solider.sh``,
``run_dino.sh``, ``resume_solider.sh``; Swin's ImageNet recipe for ``sup``).  It is
written down, not run here: SOLIDER reports 8 V100 GPUs for "several days".  ``smoke``
is the same code on the synthetic LUPerson pool, the ``test`` arch and a 2-core CPU in
about a minute: smaller crops, head and batch, a few epochs, a larger base LR so a few
dozen steps move the weights at all.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from bench.errors import BenchError

METHODS = ("sup", "dino", "dinoclust", "solider", "clip", "clasp", "valpat")
ARCHS = ("swin_t", "swin_s", "swin_b", "test")
PROFILES = ("smoke", "paper")
# Settings only one method reads: left out of the other methods' hashes, so adding one does
# not change the hash (and orphan the cached checkpoints) of a method that ignores it.
METHOD_ONLY = {
    "valpat": ("ssl_loss", "itc_loss", "ssl_temp", "text_model", "view_scale"),
    "clasp": ("prompt_lr_scale",),
}


@dataclass(frozen=True)
class PretrainConfig:
    method: str = "solider"
    arch: str = "swin_s"
    profile: str = "paper"
    data: str = "luperson"  # luperson | imagenet | a folder
    seed: int = 0
    # schedule (per optimizer step; the LR is base_lr * global batch / 256)
    epochs: int = 100
    batch_size: int = 384  # global batch (all ranks, one optimizer step)
    accum_steps: int = 1  # micro-batches per optimizer step (per rank)
    base_lr: float = 5e-4
    min_lr: float = 1e-6
    warmup_epochs: float = 10
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    momentum_teacher: float = 0.996  # EMA momentum, cosine to 1
    clip_grad: float = 3.0  # per-parameter norm clipping (DINO's clip_gradients); 0: off
    freeze_last_layer: int = 1  # epochs with the DINO head's last layer frozen
    # model
    drop_path: float = 0.1  # student; the teacher has none
    out_dim: int = 65536
    head_hidden: int = 2048
    head_bottleneck: int = 256
    # multi-crop (H, W)
    global_size: tuple[int, int] = (256, 128)
    local_size: tuple[int, int] = (128, 64)
    n_local: int = 8
    # DINO loss
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    center_momentum: float = 0.9
    # SOLIDER
    partnum: int = 3
    semantic_loss: float = 1.0
    train_part_classifier: bool = False  # False: the official quirk (never optimised)
    # sup
    label_smoothing: float = 0.1
    sup_size: tuple[int, int] = (224, 224)
    # clip (the small CLIP that is CLASP's default teacher; .clip)
    clip_model: str = "small"  # small | test
    # CLASP (.clasp): the CLIP teacher (None: the small CLIP of --method clip) and task weights
    teacher: str | None = None  # a local open_clip checkpoint
    teacher_model: str | None = None  # its open_clip model name or JSON config (else sidecar)
    part_loss: float = 1.0
    attr_loss: float = 1.0  # CLASP's attribute task; VAL-PAT's attribute classification
    prompt_lr_scale: float = 10.0  # CLASP's task prompts and gate projections: x LR, no decay
    # VAL-PAT (.valpat): loss weights, MoCo v3 temperature, text tower (head_hidden /
    # head_bottleneck size its MoCo projector and predictor)
    ssl_loss: float = 1.0
    itc_loss: float = 1.0
    ssl_temp: float = 0.2
    text_model: str = "small"  # base | small | test
    view_scale: tuple[float, float] = (0.8, 1.0)  # area range of its two random-resized crops
    # run
    precision: str = "bf16"  # bf16 autocast on CUDA; on CPU only with cpu_autocast
    cpu_autocast: bool = False
    init: str | None = None  # start from this checkpoint (SOLIDER after DINO: resume_solider.sh)
    max_images: int | None = None  # use the first N pool images
    save_every: int = 50  # optimizer steps between resumable states
    stop_after: int | None = None  # stop (state saved) after this many steps in total
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise BenchError(f"--method: unknown {self.method!r} (one of {', '.join(METHODS)})")
        if self.arch not in ARCHS:
            raise BenchError(f"--arch: unknown {self.arch!r} (one of {', '.join(ARCHS)})")
        if self.epochs < 1 or self.batch_size < 1 or self.accum_steps < 1:
            raise BenchError("epochs, batch size and accum_steps must be >= 1")

    def replace(self, **kw: Any) -> "PretrainConfig":
        return dataclasses.replace(self, **kw)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Hash of everything that changes the weights (not bookkeeping)."""
        d = self.as_dict()
        for k in ("save_every", "stop_after", "num_workers", "profile"):
            d.pop(k)
        if self.method == "clip":
            d.pop("arch")  # CLIP is no Swin: clip_model is its architecture
        for method, keys in METHOD_ONLY.items():
            if self.method != method:
                for k in keys:
                    d.pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


_PAPER = {
    # SOL:run_solider.sh / run_dino.sh: 100 epochs, 48 x 8 GPUs, lr 5e-4 * 384/256, warm-up 10
    "dino": {},
    "dinoclust": {},
    "solider": {},
    # CLASP publishes no recipe: SOLIDER's (the DINO schedule above) with CLASP's two heads
    "clasp": {},
    # our small CLIP (.clip): OpenCLIP's recipe shape (AdamW, wd 0.2, cosine, warm-up),
    # sized for LUPerson-TA (our recipe: no paper trains this teacher)
    "clip": dict(data="luperson_ta", epochs=30, batch_size=1024, base_lr=1.25e-4, min_lr=0.0,
                 warmup_epochs=1, weight_decay=0.2, weight_decay_end=0.2, clip_grad=0.0,
                 freeze_last_layer=0, drop_path=0.0, global_size=(128, 64)),
    # Swin's ImageNet-1k recipe (Liu et al.): 300 epochs, batch 1024, lr 1e-3 (= 2.5e-4 *
    # 1024/256), warm-up 20, min lr 5e-6, wd 0.05, clip 5, drop path 0.2, label smoothing 0.1.
    # Not here: RandAugment, Mixup/CutMix, random erasing, EMA (documented deviation).
    "sup": dict(epochs=300, batch_size=1024, base_lr=2.5e-4, min_lr=5e-6, warmup_epochs=20,
                weight_decay=0.05, weight_decay_end=0.05, clip_grad=5.0, drop_path=0.2,
                freeze_last_layer=0, data="imagenet"),
    # VAL-PAT publishes no recipe: MoCo v3's for transformers (AdamW, lr 1.5e-4 x batch/256,
    # wd 0.1, momentum 0.99 cosine to 1, no clipping, projector 4096 -> 256), 100 epochs on
    # LUPerson-TA at SOLIDER's crop size, CLIP ViT-B's text tower from scratch
    "valpat": dict(data="luperson_ta", epochs=100, batch_size=1024, base_lr=1.5e-4, min_lr=0.0,
                   warmup_epochs=10, weight_decay=0.1, weight_decay_end=0.1, clip_grad=0.0,
                   momentum_teacher=0.99, freeze_last_layer=0, head_hidden=4096,
                   head_bottleneck=256, text_model="base"),
}

_SMOKE_COMMON = dict(
    arch="test", epochs=2, batch_size=16, base_lr=5e-3, min_lr=1e-5, warmup_epochs=1,
    out_dim=1024, head_hidden=256, head_bottleneck=64, global_size=(128, 64),
    local_size=(64, 32), n_local=2, drop_path=0.1, save_every=20, precision="fp32")
_SMOKE = {
    "dino": {},
    "dinoclust": {},
    "solider": {},
    "clasp": {},
    "clip": dict(data="luperson_ta", epochs=30, batch_size=32, base_lr=8e-3, min_lr=1e-5,
                 warmup_epochs=2, weight_decay=0.1, weight_decay_end=0.1, clip_grad=0.0,
                 freeze_last_layer=0, drop_path=0.0),
    "sup": dict(epochs=3, batch_size=32, base_lr=2e-3, weight_decay=0.05, weight_decay_end=0.05,
                freeze_last_layer=0, sup_size=(64, 64), data="imagenet", drop_path=0.0),
    # as CLIP's smoke (the same small text tower); 150 steps on the smoke pool's 160 pairs
    "valpat": dict(data="luperson_ta", epochs=30, batch_size=32, base_lr=8e-3, min_lr=1e-5,
                   warmup_epochs=2, weight_decay=0.1, weight_decay_end=0.1, clip_grad=0.0,
                   momentum_teacher=0.99, freeze_last_layer=0, drop_path=0.0,
                   text_model="small"),
}


def profile_config(method: str, profile: str = "smoke", **overrides: Any) -> PretrainConfig:
    """The ``profile`` settings for ``method``; ``overrides`` (None values ignored) on top."""
    if profile not in PROFILES:
        raise BenchError(f"--profile: unknown {profile!r} for pretraining (smoke or paper)")
    if method not in METHODS:
        raise BenchError(f"--method: unknown {method!r} (one of {', '.join(METHODS)})")
    base: dict[str, Any] = dict(method=method, profile=profile)
    if profile == "paper":
        base.update(_PAPER[method])
    else:
        base.update(_SMOKE_COMMON)
        base.update(_SMOKE[method])
    fields = {f.name for f in dataclasses.fields(PretrainConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise BenchError(f"unknown pretraining setting(s): {', '.join(unknown)}")
    base.update({k: v for k, v in overrides.items() if v is not None})
    return PretrainConfig(**base)
