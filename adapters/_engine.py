"""Training-loop glue shared by the task adapters: the engine owns the loop, a task the step.

A task module builds its model, data and loss, then calls :func:`fit` with a ``step(batch)``
that returns the loss; :func:`fit` runs the epochs with the task's optimiser and learning-rate
schedule under autocast, shows progress, checks for NaN/Inf, and saves the training state
atomically after every epoch so a stopped run resumes where it was.  Also here: building
the run's backbone from the config, per-profile schedules, seeding, image datasets and
feature extraction.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from backbones._cfg import IMAGENET_MEAN, IMAGENET_STD
from bench.env import release_memory
from bench.errors import BenchError, NotImplementedYet
from bench.faults import LEGACY_AFTER_EPOCH, maybe_kill
from bench.io import atomic_write_bytes

IMAGENET = (IMAGENET_MEAN, IMAGENET_STD)  # (mean, std) the downstream repositories normalise with

S = TypeVar("S")
# Fault injection for the resume tests (bench/faults.py): "<task>:<epoch>" kills the
# process (SIGKILL) right after that epoch's state is saved.
KILL_AFTER_EPOCH = LEGACY_AFTER_EPOCH


# --------------------------------------------------------------------------------------
# Run settings
# --------------------------------------------------------------------------------------
def schedule_for(ctx, schedules: dict[str, S]) -> S:
    """The task's schedule for the run's profile, with ``[tasks.<t>.schedule.<profile>]``
    overrides from bench.toml applied (unknown keys and wrong types are config errors).
    A profile the task has no schedule for starts from its ``smoke`` schedule."""
    from bench import config as config_mod

    base = schedules.get(ctx.profile, schedules["smoke"])
    overrides = dict(ctx.settings.schedule.get(ctx.profile, {}))
    if not overrides:
        return base
    checked = config_mod._build(type(base), overrides,
                                ("tasks", ctx.spec.name, "schedule", ctx.profile),
                                ctx.config.source)
    return dataclasses.replace(base, **{k: getattr(checked, k) for k in overrides})


def build_backbone(ctx, **overrides: Any) -> nn.Module:
    """The run's backbone with the weights bench.toml names for it, at the task's λ."""
    from backbones import BACKBONES, create_backbone

    checkpoint = backbone_checkpoint(ctx)
    kwargs: dict[str, Any] = dict(overrides)
    if ctx.semantic_weight is not None:
        kwargs["semantic_weight"] = ctx.semantic_weight
    if ctx.spec.name in BACKBONES.get(ctx.backbone).meta.get("task_prompts", ()):
        kwargs["default_task"] = ctx.spec.name  # a PC-MoE backbone runs with this task's prompt
    return create_backbone(ctx.backbone, checkpoint=str(checkpoint) if checkpoint else None,
                           **kwargs)


def backbone_checkpoint(ctx) -> Path | None:
    """The weights file the run's backbone is built from (None: random initialisation):
    bench.toml's ``[backbones.<name>] weights``, pretrained here first for "pretrain"."""
    weights = ctx.config.backbone(ctx.backbone).weights
    if weights == "random":
        return None
    if weights == "pretrain":
        ckpt = pretrained_here(ctx)
        return Path(ckpt) if ckpt else None
    return ctx.config.path(weights)


def pretrained_here(ctx) -> str | None:
    """The checkpoint of the run's backbone pretrained by the pretraining module with the
    run's profile, trained now (and cached by its config hash) if it is not there yet.
    ``None`` for test models, which have no pretraining recipe (random init)."""
    from backbones import BACKBONES
    from backbones.pretrain import METHODS, default_out_dir, profile_config, train, zoo_name
    from bench import timing

    meta = BACKBONES.get(ctx.backbone).meta
    method, arch = meta.get("pretrain_method"), meta.get("arch")
    if method == "random":
        ctx.log(f"{ctx.backbone} is a test model: random initialisation")
        return None
    if method not in METHODS:
        raise NotImplementedYet(f"pretraining {method} backbones here (set "
                                f"[backbones.{ctx.backbone}] weights to a checkpoint file)",
                                issue=6)
    profile = ctx.profile if ctx.profile in ("smoke", "paper") else "smoke"
    # the run's precision (TaskContext.precision): a bf16 profile (smoke, on a CPU too)
    # pretrains under bf16 autocast, except on a CPU without native bf16, where both run in fp32
    bf16 = ctx.precision == "bf16"
    pcfg = profile_config(method, profile, arch=arch, seed=ctx.seed,
                          precision="bf16" if bf16 else "fp32", cpu_autocast=bf16)
    dest = default_out_dir(ctx.config, pcfg)
    ckpt = dest / f"{zoo_name(method, arch)}.safetensors"
    if ckpt.is_file():
        ctx.log(f"using {ctx.backbone} pretrained here earlier: {ckpt}")
        return str(ckpt)
    ctx.log(f"no weights configured for {ctx.backbone}: pretraining it here first "
            f"({method}, {profile} profile) into {dest}")
    with ctx.out.progress() as progress:
        bar = progress.add_task(f"pretrain {ctx.backbone}", total=None)

        def show(step: int, total: int, row: dict) -> None:
            progress.update(bar, completed=step, total=total,
                            description=f"pretrain {ctx.backbone}: loss {row['loss']:.3f}")

        with timing.phase(timing.PRETRAIN):
            result = train(pcfg, dest, bench_cfg=ctx.config, device=ctx.device, progress=show)
            release_memory()  # the pretraining's student, teacher and activations are done with
    if result.checkpoint is None:
        raise BenchError(f"pretraining {ctx.backbone} stopped at step {result.steps}; "
                         "run again to resume it")
    return str(result.checkpoint)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def autocast(device: str, precision: str):
    """bf16 autocast on CUDA and CPU when the profile asks for it, else a no-op."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def crop_transforms(size: Sequence[int], mean: Sequence[float], std: Sequence[float], *,
                    train: bool, pad: int = 10, erase_p: float = 0.5):
    """Person-crop pipeline: bicubic resize, normalise; for training also flip, pad-and-crop
    and torchvision's random erasing filled with the mean (the ReID-strong-baseline recipe
    that Cluster Contrast and IRRA use)."""
    from torchvision.transforms import v2 as T

    size = list(size)
    head = [T.Resize(size, interpolation=T.InterpolationMode.BICUBIC)]
    tail = [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)]
    if not train:
        return T.Compose(head + tail)
    return T.Compose(head + [T.RandomHorizontalFlip(0.5), T.Pad(pad), T.RandomCrop(size)]
                     + tail + [T.RandomErasing(erase_p, scale=(0.02, 0.4), ratio=(0.3, 3.3),
                                               value=list(mean))])


def num_workers() -> int:
    cpus = os.cpu_count() or 1
    return 0 if cpus <= 2 else min(8, cpus - 1)


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------
class ImageList(Dataset):
    """(image path, target...) items -> (transformed image, target...)."""

    def __init__(self, items: Sequence[tuple], transform: Callable[[Image.Image], torch.Tensor]):
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        path, *rest = self.items[i]
        from bench.data.base import read_image

        img = Image.fromarray(read_image(path))
        return (self.transform(img), *(torch.as_tensor(r) for r in rest))


class IdentitySampler(Sampler[int]):
    """P identities x K images per batch (TransReID's ``RandomIdentitySampler``).

    Each identity's images are shuffled and cut into groups of K (an identity with fewer
    than K images is sampled with replacement up to K); batches take the groups of P
    identities chosen at random among those with groups left.  ``set_epoch`` reseeds, so an
    epoch's order depends only on (seed, epoch).
    """

    def __init__(self, pids: Sequence[int], batch_size: int, k: int, seed: int = 0):
        if batch_size % k:
            raise BenchError(f"batch size {batch_size} is not a multiple of K={k}")
        self.pids = np.asarray(pids)
        self.k, self.p = k, batch_size // k
        self.seed, self.epoch = seed, 0
        self.index = {pid: np.flatnonzero(self.pids == pid) for pid in np.unique(self.pids)}
        if len(self.index) < self.p:
            raise BenchError(f"{len(self.index)} identities cannot fill batches of "
                             f"{self.p} identities")
        self._len = sum(max(len(v), k) // k * k for v in self.index.values())
        self._len -= self._len % (self.p * k)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        groups: dict[int, list[np.ndarray]] = {}
        for pid, idx in self.index.items():
            idx = rng.choice(idx, size=self.k, replace=True) if len(idx) < self.k else rng.permutation(idx)
            groups[pid] = [idx[i:i + self.k] for i in range(0, len(idx) - self.k + 1, self.k)]
        out: list[int] = []
        avail = [pid for pid in groups if groups[pid]]
        while len(avail) >= self.p:
            for pid in rng.choice(avail, size=self.p, replace=False):
                out.extend(groups[pid].pop().tolist())
            avail = [pid for pid in avail if groups[pid]]
        return iter(out[: self._len])

    def __len__(self) -> int:
        return self._len


# --------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------
@dataclasses.dataclass
class FitResult:
    epochs: int
    last_loss: float
    seconds: float
    resumed_from: int | None


def fit(ctx, model: nn.Module, loader: DataLoader, step: Callable[[Any], torch.Tensor],
        optimizer: torch.optim.Optimizer, epochs: int,
        lr_at: Callable[[int], Sequence[float]] | None = None,
        state_name: str = "train_state.pt",
        after_epoch: Callable[[int, float], None] | None = None,
        stateful: dict[str, Any] | None = None,
        clip_grad_norm: float | None = None) -> FitResult:
    """Train for ``epochs``; ``step(batch)`` returns the loss (the engine does backward,
    clips the gradients' norm at ``clip_grad_norm`` when given, and steps the optimiser).
    ``lr_at(epoch)`` gives each param group's learning rate at the start of an epoch;
    ``after_epoch(epoch, mean_loss)`` runs at its end (a plateau scheduler, say).  The state
    (model, optimiser, RNG, and every ``stateful`` object's state_dict) is saved to the
    task's work folder after every epoch and picked up again if it is there."""
    stateful = stateful or {}
    state_path = Path(ctx.work_dir) / state_name
    start, resumed = 0, None
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["py_rng"])
        np.random.set_state(state["np_rng"])
        for name, obj in stateful.items():
            obj.load_state_dict(state["extra"][name])
        start = resumed = state["epoch"]
        ctx.log(f"resuming from the end of epoch {start}")
    t0 = time.time()
    last = float("nan")
    sampler = getattr(loader, "sampler", None)
    with ctx.out.progress() as progress:
        bar = progress.add_task(f"{ctx.spec.name}: train", total=epochs * len(loader),
                                completed=start * len(loader))
        for epoch in range(start, epochs):
            if lr_at is not None:
                for group, lr in zip(optimizer.param_groups, lr_at(epoch)):
                    group["lr"] = lr
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            if getattr(loader, "generator", None) is not None:  # shuffling: f(seed, epoch) only
                loader.generator.manual_seed(ctx.seed * 100_003 + epoch)
            model.train()
            total, n = 0.0, 0
            for batch in loader:
                with autocast(ctx.device, ctx.precision):
                    loss = step(batch)
                if not torch.isfinite(loss):
                    raise BenchError(f"{ctx.spec.name}: loss became {loss.item()} in epoch "
                                     f"{epoch + 1}; the last good state is {state_path}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if clip_grad_norm:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
                optimizer.step()
                total += float(loss.detach())
                n += 1
                progress.advance(bar)
                maybe_kill(f"{ctx.spec.name}:step:{epoch * len(loader) + n}")
            last = total / max(n, 1)
            ctx.log(f"epoch {epoch + 1}/{epochs} loss {last:.4f} "
                    f"lr {optimizer.param_groups[0]['lr']:.2e}")
            if after_epoch is not None:
                after_epoch(epoch, last)
            buf = io.BytesIO()
            torch.save({"epoch": epoch + 1, "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "torch_rng": torch.get_rng_state(), "py_rng": random.getstate(),
                        "np_rng": np.random.get_state(),
                        "extra": {k: v.state_dict() for k, v in stateful.items()}}, buf)
            atomic_write_bytes(state_path, buf.getvalue())
            maybe_kill(f"{ctx.spec.name}:epoch:{epoch + 1}")  # tests: die right after saving
    return FitResult(epochs, last, time.time() - t0, resumed)


@torch.no_grad()
def extract(ctx, fn: Callable[[torch.Tensor], torch.Tensor], loader: DataLoader,
            label: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run ``fn`` over a loader of (image, extras...) batches: (outputs, extras per field)."""
    outs, extras = [], None
    with ctx.out.progress() as progress:
        bar = progress.add_task(f"{ctx.spec.name}: {label}", total=len(loader))
        for batch in loader:
            x, *rest = batch
            with autocast(ctx.device, ctx.precision):
                outs.append(fn(x.to(ctx.device)).float().cpu())
            extras = [[] for _ in rest] if extras is None else extras
            for acc, r in zip(extras, rest):
                acc.append(r)
            progress.advance(bar)
    return torch.cat(outs), [torch.cat(e) for e in (extras or [])]


class StepWarmup:
    """mmcv's ``step`` learning-rate policy, set per training iteration:
    lr(it) = lr · γ^(#milestones <= epoch) · warm-up factor, with a ``linear`` warm-up (from
    ``warmup_ratio`` x up to 1 over ``warmup_iters``, mmpose) or a ``constant`` one
    (``warmup_ratio`` x until ``warmup_iters``, Pedestron).  Its iteration count is saved
    with the training state (pass it to :func:`fit` in ``stateful``)."""

    def __init__(self, lr: float, milestones: Sequence[int], gamma: float, warmup_iters: int,
                 warmup_ratio: float, iters_per_epoch: int, warmup: str = "linear"):
        if warmup not in ("linear", "constant"):
            raise ValueError(f"warm-up must be linear or constant, got {warmup!r}")
        self.lr, self.milestones, self.gamma = lr, tuple(milestones), gamma
        self.warmup_iters, self.warmup_ratio, self.warmup = warmup_iters, warmup_ratio, warmup
        self.iters_per_epoch = max(1, iters_per_epoch)
        self.it = 0

    def lr_at(self, it: int) -> float:
        epoch = it // self.iters_per_epoch
        lr = self.lr * self.gamma ** sum(epoch >= m for m in self.milestones)
        if it < self.warmup_iters:
            lr *= (self.warmup_ratio if self.warmup == "constant" else
                   1 - (1 - it / self.warmup_iters) * (1 - self.warmup_ratio))
        return lr

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        for g in optimizer.param_groups:
            g["lr"] = self.lr_at(self.it)
        self.it += 1

    def state_dict(self) -> dict:
        return {"it": self.it}

    def load_state_dict(self, state: dict) -> None:
        self.it = int(state["it"])


def cosine_warmup(base_lr: float, epochs: int, warmup: int, warmup_init: float,
                  lr_min: float) -> Callable[[int], float]:
    """timm's ``CosineLRScheduler`` per epoch as TransReID configures it (warm-up counted
    inside the cosine period, ``warmup_prefix=False``)."""

    def lr(epoch: int) -> float:
        if epoch < warmup:
            return warmup_init + epoch * (base_lr - warmup_init) / warmup
        return lr_min + 0.5 * (base_lr - lr_min) * (1 + math.cos(math.pi * epoch / epochs))

    return lr

