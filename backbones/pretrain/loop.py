"""The pretraining loop, top to bottom (DINO's ``train_one_epoch`` shape).

One function, :func:`train`: build the objective and the data, then for every optimizer
step: set LR / weight decay from their per-step cosine schedules, run ``objective.step`` on
each micro-batch under autocast and backpropagate, average gradients across ranks, clip,
cancel the DINO head's last-layer gradient during the first epoch(s), step AdamW, move the
teacher by EMA, log a JSON line, and every ``save_every`` steps write the resumable state.
At the end the exported backbone (the teacher for DINO/SOLIDER, as every downstream
repository loads it) is written as our safetensors + JSON sidecar checkpoint.

Distributed: ``torchrun`` (or anything that sets RANK / WORLD_SIZE / MASTER_ADDR /
MASTER_PORT) starts one process per device; NCCL on GPUs, gloo on CPU.  Instead of the DDP
wrapper, gradients are averaged with one ``all_reduce`` of a flat buffer after backward:
the multi-crop objectives call the student several times per step (one call per crop
size, plus SOLIDER's masked copies), which a DDP wrapper only allows with extra flags.
Each rank's loss is the mean over its share of the global batch, so the averaged gradient
is that of the global-batch loss, and a 2-process run matches a 1-process run on the same
global batch (``tests/test_pretrain_ddp.py``).

Resumable state (``train_state.pth``) keeps SOLIDER's training-dict layout (``student``
with ``module.`` prefixes, ``teacher`` with ``backbone.`` / ``head.``, ``optimizer``,
``epoch``, ``args``, ``dino_loss``) plus the step, the torch RNG and the part classifier;
the sampler position is the step itself (batches are a pure function of seed, epoch and
position), so a resumed run ends in the same state as an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader

from backbones.pretrain.config import PretrainConfig
from backbones.pretrain.data import (GlobalBatchSampler, MultiCrop, PretrainDataset,
                                     SupAugment, collate, pool_items)
from bench.errors import BenchError
from bench.faults import maybe_kill
from bench.io import atomic_write_bytes, atomic_write_json

STATE_NAME = "train_state.pth"
LOG_NAME = "log.jsonl"


# --------------------------------------------------------------------------------------
# Schedules and optimiser pieces
# --------------------------------------------------------------------------------------
def cosine_schedule(base: float, final: float, epochs: int, niter_per_ep: int,
                    warmup_epochs: float = 0, start_warmup: float = 0.0) -> np.ndarray:
    """DINO's ``utils.cosine_scheduler``: one value per step, linear warm-up from
    ``start_warmup`` to ``base``, then a cosine from ``base`` to ``final``."""
    warmup_iters = int(round(warmup_epochs * niter_per_ep))
    warm = np.linspace(start_warmup, base, warmup_iters, endpoint=False) if warmup_iters else np.array([])
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    cos = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / max(len(iters), 1)))
    return np.concatenate([warm, cos])


def param_groups(model: nn.Module, lr_scales: dict[str, float] | None = None) -> list[dict]:
    """No weight decay on biases and other 1-D parameters (norms, weight-norm gains).
    Parameters named in ``lr_scales`` (an objective's ``lr_scales()``: CLASP's task prompts
    and gate projections) get no weight decay either, and their group's ``lr_scale`` times
    the scheduled learning rate."""
    lr_scales = lr_scales or {}
    decay, no_decay, scaled = [], [], {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name in lr_scales:
            scaled.setdefault(lr_scales[name], []).append(p)
            continue
        (no_decay if name.endswith(".bias") or p.ndim <= 1 else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}] + [
        {"params": ps, "weight_decay": 0.0, "lr_scale": k} for k, ps in sorted(scaled.items())]


def objective_param_groups(obj: nn.Module) -> list[dict]:
    """The optimizer's groups for an objective (see :func:`param_groups`)."""
    return param_groups(obj.trainable(), obj.lr_scales() if hasattr(obj, "lr_scales") else None)


def clip_gradients(model: nn.Module, clip: float) -> None:
    """DINO's clipping: each parameter's gradient norm is clipped to ``clip`` on its own."""
    for p in model.parameters():
        if p.grad is not None:
            norm = p.grad.norm(2)
            coef = clip / (norm + 1e-6)
            if coef < 1:
                p.grad.mul_(coef)


def all_reduce_grads(params: list[nn.Parameter], world: int) -> None:
    """Average the gradients over ranks with one flat all_reduce (missing grads count 0)."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


# --------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------
def zoo_name(method: str, arch: str) -> str:
    """The zoo entry a checkpoint of (method, arch) loads into."""
    if method == "clip":
        raise BenchError("zoo_name: a CLIP run's name depends on its clip_model "
                         "(use run_name(cfg))")
    if arch == "test":
        return {"solider": "test_solider_swin", "clasp": "test_clasp_swin"}.get(method,
                                                                               "test_sup_swin")
    return f"{method}_{arch}"  # arch is swin_t | swin_s | swin_b


def run_name(cfg: PretrainConfig) -> str:
    """The name of a run's output: the zoo entry, or ``clip_<clip_model>`` for CLIP."""
    return f"clip_{cfg.clip_model}" if cfg.method == "clip" else zoo_name(cfg.method, cfg.arch)


def build_objective(cfg: PretrainConfig, num_classes: int = 0, bench_cfg=None) -> nn.Module:
    from backbones import create_backbone
    from backbones.pretrain.dino import DINO
    from backbones.pretrain.solider import Solider
    from backbones.pretrain.sup import Supervised

    if cfg.method == "clip":
        from backbones.pretrain.clip import CLIPPretrain
        from backbones.pretrain.data import text_pool

        return CLIPPretrain(cfg, text_pool(cfg, bench_cfg).captions)
    name = zoo_name(cfg.method, cfg.arch)

    def make_backbone(drop_path: float) -> nn.Module:
        if cfg.method == "clasp":  # the PC-MoE Swin, self-distillation prompt by default
            from backbones.pretrain.clasp import PRETRAIN_PROMPT

            return create_backbone(name, checkpoint=cfg.init, drop_path_rate=drop_path,
                                   default_task=PRETRAIN_PROMPT["distill"])
        return create_backbone(name, checkpoint=cfg.init, drop_path_rate=drop_path)

    if cfg.method == "sup":
        return Supervised(cfg, make_backbone, num_classes)
    if cfg.method == "dino":
        return DINO(cfg, make_backbone)
    if cfg.method == "clasp":
        from backbones.pretrain.clasp import CLASP, resolve_teacher

        return CLASP(cfg, make_backbone, resolve_teacher(cfg, bench_cfg))
    if cfg.method == "valpat":
        from backbones.pretrain.data import text_pool
        from backbones.pretrain.valpat import VALPAT

        return VALPAT(cfg, make_backbone, text_pool(cfg, bench_cfg).captions)
    return Solider(cfg, make_backbone, controller=cfg.method == "solider")


def build_data(cfg: PretrainConfig, bench_cfg, world: int, rank: int):
    items, n_classes, desc = pool_items(cfg.data, bench_cfg, "smoke" if cfg.profile == "smoke"
                                        else "paper", cfg.method, cfg.max_images)
    if cfg.batch_size % (world * cfg.accum_steps):
        raise BenchError(f"batch size {cfg.batch_size} is not divisible by world size {world} "
                         f"x accum_steps {cfg.accum_steps}")
    per_rank = cfg.batch_size // world
    if len(items) < cfg.batch_size:
        raise BenchError(f"{desc}: {len(items)} images cannot fill one batch of {cfg.batch_size}")
    if cfg.method == "clip":
        from backbones.pretrain.clip import CLIP_MODELS, CaptionView

        transform = CaptionView(CLIP_MODELS[cfg.clip_model]["vision_cfg"]["image_size"])
    elif cfg.method == "clasp":
        from backbones.pretrain.clasp import CLASPCrops

        transform = CLASPCrops(cfg.global_size, cfg.local_size, cfg.n_local)
    elif cfg.method == "valpat":
        from backbones.pretrain.valpat import ValpatViews

        transform = ValpatViews(cfg.global_size, scale=tuple(cfg.view_scale))
    else:
        transform = (SupAugment(cfg.sup_size) if cfg.method == "sup"
                     else MultiCrop(cfg.global_size, cfg.local_size, cfg.n_local))
    dataset = PretrainDataset(items, transform, seed=cfg.seed)
    sampler = GlobalBatchSampler(len(items), per_rank, world, rank, seed=cfg.seed)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                        num_workers=cfg.num_workers)
    return dataset, sampler, loader, n_classes, desc


def dist_info() -> tuple[int, int]:
    """(rank, world); initialises the process group from the environment if needed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return dist.get_rank(), world
    return 0, 1


def _autocast(cfg: PretrainConfig, device: torch.device):
    if cfg.precision == "bf16" and (device.type == "cuda" or cfg.cpu_autocast):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to(batch, device):
    crops, y, idx = batch
    return [c.to(device, non_blocking=True) for c in crops], y.to(device), idx


def _split(batch, n: int):
    crops, y, idx = batch
    if n == 1:
        return [batch]
    return [([c.chunk(n)[i] for c in crops], y.chunk(n)[i], idx.chunk(n)[i]) for i in range(n)]


# --------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------
def save_state(path: Path, obj: nn.Module, optimizer, cfg: PretrainConfig, step: int,
               epoch: int) -> None:
    state = {
        "student": {f"module.{k}": v for k, v in obj.student.state_dict().items()},
        "teacher": obj.teacher.state_dict() if obj.teacher is not None else {},
        "optimizer": optimizer.state_dict(), "epoch": epoch, "step": step,
        "args": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.as_dict().items()},
        "config_hash": cfg.hash(), "torch_rng": torch.get_rng_state(),
    }
    if hasattr(obj, "dino_loss"):
        state["dino_loss"] = obj.dino_loss.state_dict()
    if hasattr(obj, "part_classifier"):
        state["part_classifier"] = obj.part_classifier.state_dict()
    if hasattr(obj, "heads"):  # CLASP's part and attribute heads
        state["heads"] = obj.heads.state_dict()
    buf = __import__("io").BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_state(path: Path, obj: nn.Module, optimizer, cfg: PretrainConfig) -> int:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("config_hash") != cfg.hash():
        raise BenchError(f"{path}: the saved run has other settings (config hash "
                         f"{state.get('config_hash')}, this run {cfg.hash()}); use another "
                         f"--out or delete it")
    obj.student.load_state_dict({k[len("module."):]: v for k, v in state["student"].items()})
    if obj.teacher is not None:
        obj.teacher.load_state_dict(state["teacher"])
    optimizer.load_state_dict(state["optimizer"])
    if "dino_loss" in state:
        obj.dino_loss.load_state_dict(state["dino_loss"])
    if "part_classifier" in state:
        obj.part_classifier.load_state_dict(state["part_classifier"])
    if "heads" in state:
        obj.heads.load_state_dict(state["heads"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"])


# --------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------
@dataclass
class PretrainResult:
    checkpoint: Path | None  # the exported backbone (None if stopped early)
    out_dir: Path
    zoo_name: str
    steps: int
    seconds: float
    last: dict[str, float]
    resumed_from: int | None


def train(cfg: PretrainConfig, out_dir: str | Path, bench_cfg=None, device: str | None = None,
          progress: Callable[[int, int, dict], None] | None = None) -> PretrainResult:
    """Run ``cfg`` and write everything into ``out_dir`` (resuming a state found there)."""
    from bench import config as config_mod

    bench_cfg = bench_cfg or config_mod.load(None)
    rank, world = dist_info()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(dev)
    out_dir = Path(out_dir)
    torch.manual_seed(cfg.seed)  # model init is the same on every rank

    dataset, sampler, loader, n_classes, desc = build_data(cfg, bench_cfg, world, rank)
    obj = build_objective(cfg, n_classes, bench_cfg).to(dev)
    trainable = obj.trainable()
    optimizer = torch.optim.AdamW(objective_param_groups(obj))
    params = [p for grp in optimizer.param_groups for p in grp["params"]]

    niter = len(sampler)
    total = cfg.epochs * niter
    lr_s = cosine_schedule(cfg.base_lr * cfg.batch_size / 256, cfg.min_lr, cfg.epochs, niter,
                           cfg.warmup_epochs)
    wd_s = cosine_schedule(cfg.weight_decay, cfg.weight_decay_end, cfg.epochs, niter)
    mom_s = cosine_schedule(cfg.momentum_teacher, 1.0, cfg.epochs, niter)

    state_path, log_path = out_dir / STATE_NAME, out_dir / LOG_NAME
    step = resumed = 0
    if state_path.is_file():
        step = resumed = load_state(state_path, obj, optimizer, cfg)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out_dir / "config.json", {**cfg.as_dict(), "config_hash": cfg.hash(),
                                                    "data_desc": desc, "world": world})
        if not resumed and log_path.exists():
            log_path.unlink()
        elif resumed and log_path.exists():  # drop lines of steps after the state (a crash)
            lines = [ln for ln in log_path.read_text().splitlines()
                     if ln.strip() and json.loads(ln)["step"] <= resumed]
            atomic_write_bytes(log_path, "".join(ln + "\n" for ln in lines).encode())
    stop = min(total, cfg.stop_after) if cfg.stop_after else total
    t0 = time.time()
    last: dict[str, float] = {}
    obj.train()
    while step < stop:
        epoch, pos = divmod(step, niter)
        dataset.epoch = epoch
        sampler.set_epoch(epoch, pos)
        for batch in loader:
            for i, grp in enumerate(optimizer.param_groups):
                grp["lr"] = float(lr_s[step]) * grp.get("lr_scale", 1.0)
                if i == 0:
                    grp["weight_decay"] = float(wd_s[step])
            # drop path etc.: a function of (seed, step, rank), so resuming mid-epoch (which
            # draws a new DataLoader iterator seed from the global RNG) changes nothing
            torch.manual_seed((cfg.seed * 1_000_003 + step) * 131 + rank)
            optimizer.zero_grad(set_to_none=True)
            sums: dict[str, float] = {}
            for micro in _split(_to(batch, dev), cfg.accum_steps):
                with _autocast(cfg, dev):
                    losses = obj.step(micro, step)
                loss = losses["loss"]
                if not torch.isfinite(loss):
                    raise BenchError(f"pretraining: loss became {float(loss)} at step {step}; "
                                     f"the last good state is {state_path}")
                (loss / cfg.accum_steps).backward()
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v) / cfg.accum_steps
            if world > 1:
                all_reduce_grads(params, world)
                logged = torch.tensor(list(sums.values()), dtype=torch.float64, device=dev)
                dist.all_reduce(logged)  # log the global-batch mean, as one process would
                sums = dict(zip(sums, (logged / world).tolist()))
            if cfg.clip_grad:
                clip_gradients(trainable, cfg.clip_grad)
            if obj.last_layer is not None and epoch < cfg.freeze_last_layer:
                for p in obj.last_layer.parameters():
                    p.grad = None
            optimizer.step()
            obj.update_teacher(float(mom_s[step]))
            step += 1
            last = {"step": step, "epoch": epoch, "lr": float(lr_s[step - 1]),
                    "wd": float(wd_s[step - 1]), "momentum": float(mom_s[step - 1]), **sums}
            if rank == 0:
                with open(log_path, "a") as f:
                    f.write(json.dumps(last) + "\n")
                if progress:
                    progress(step, total, last)
            if rank == 0 and (step % cfg.save_every == 0 or step == stop):
                save_state(state_path, obj, optimizer, cfg, step, epoch)
            maybe_kill(f"pretrain:step:{step}")  # fault injection (tests)
            if step >= stop:
                break
    if world > 1:
        dist.barrier()
    checkpoint = None
    if step >= total and rank == 0:
        checkpoint = export(obj, cfg, out_dir, desc, step)
    return PretrainResult(checkpoint, out_dir, run_name(cfg), step,
                          time.time() - t0, last, resumed or None)


def export(obj: nn.Module, cfg: PretrainConfig, out_dir: Path, desc: str, steps: int) -> Path:
    """The exported backbone as ``<zoo name>.safetensors`` + sidecar."""
    from backbones.checkpoint import save_checkpoint

    name = run_name(cfg)
    if hasattr(obj, "export_checkpoint"):  # not a zoo backbone (CLIP)
        return obj.export_checkpoint(out_dir / f"{name}.safetensors", pretrain_method=cfg.method,
                                     pretrain_profile=cfg.profile, config_hash=cfg.hash(),
                                     data=desc, steps=steps, epochs=cfg.epochs)
    backbone = obj.export()
    path = save_checkpoint(
        backbone, out_dir / f"{name}.safetensors", pretrain_method=cfg.method,
        pretrain_profile=cfg.profile, config_hash=cfg.hash(), data=desc, steps=steps,
        epochs=cfg.epochs, exported_from=obj.export_from,
        lambda_seen=[0.0, 1.0] if cfg.method == "solider" else None,
        pretrain_input_size=list(cfg.sup_size if cfg.method == "sup" else cfg.global_size))
    if hasattr(obj, "export_extras"):  # heads a downstream task starts from (VAL-PAT's text)
        obj.export_extras(path, pretrain_method=cfg.method, config_hash=cfg.hash(), steps=steps)
    return path


def default_out_dir(bench_cfg, cfg: PretrainConfig) -> Path:
    data = Path(cfg.data).name if cfg.data not in ("luperson", "imagenet") else cfg.data
    return (bench_cfg.cache_dir / "pretrain" / run_name(cfg)
            / f"{cfg.profile}-{data}-{cfg.hash()}")
