"""``bench run``: one backbone x a list of tasks -> tidy metric rows in the results store.

The runner owns the loop and the bookkeeping (which tasks, which λ, which data, where the
rows go, the progress display); a task owns only its own work: given a
:class:`TaskContext` it trains and evaluates and returns :class:`Measurement` s.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import adapters
import backbones
from bench import config as config_mod
from bench import env as env_mod
from bench import timing
from bench.config import Config, TaskSection
from bench.console import Output
from bench.errors import BenchError, NotImplementedYet
from bench.faults import maybe_kill
from bench.results import MetricRow, RunWriter, new_run_id


@dataclass(frozen=True)
class Measurement:
    """What a task reports: one number on one split of one dataset."""

    dataset: str
    split: str
    metric: str
    value: float


@dataclass(frozen=True)
class TaskContext:
    """Everything a task needs to know about the run it is part of."""

    config: Config
    spec: adapters.TaskSpec
    settings: TaskSection
    backbone: str
    backbone_meta: dict[str, Any]
    semantic_weight: float | None  # None: the backbone has no controller
    datasets: tuple[str, ...]
    data_kind: dict[str, str]  # dataset -> synthetic | real
    profile: str
    seed: int
    device: str
    work_dir: Path  # a folder of this run for the task's checkpoints and predictions
    out: Output
    writer: RunWriter

    @property
    def precision(self) -> str:
        """The profile's precision; bf16 falls back to fp32 on a CPU without native bf16."""
        from bench.env import run_precision

        return run_precision(self.config.profiles[self.profile].precision, self.device)

    def log(self, message: str) -> None:
        self.writer.log(f"[{self.spec.name}] {message}")
        self.out.info(f"[{self.spec.name}] {message}")


@dataclass(frozen=True)
class RunRequest:
    backbone: str
    tasks: tuple[str, ...]
    profile: str
    seed: int
    device: str
    semantic_weight: float | None


def request_from_config(cfg: Config) -> RunRequest:
    r = cfg.run
    return RunRequest(r.backbone, r.tasks, r.profile, r.seed, r.device, r.semantic_weight)


def resolve_tasks(names: Sequence[str]) -> list[adapters.TaskSpec]:
    """``all`` -> the six SOLIDER tasks; every name must be a registered task."""
    wanted: list[str] = []
    for n in names:
        for m in (adapters.SOLIDER_TASKS if n == "all" else (n,)):
            if m not in wanted:
                wanted.append(m)
    specs = []
    for n in wanted:
        if n not in adapters.TASKS:
            if n in adapters.PLANNED:
                raise NotImplementedYet(f"task {n!r}", issue=adapters.PLANNED[n])
            adapters.TASKS.get(n)  # raises with suggestions
        specs.append(adapters.TASKS.get(n).meta["spec"])
    return specs


def resolve_semantic_weight(cfg: Config, req: RunRequest, spec: adapters.TaskSpec,
                            has_controller: bool) -> float | None:
    """λ for one task: --lambda / run.semantic_weight, then [tasks.<t>], then
    [backbones.<b>], then the task's official λ.  None for backbones without a controller;
    asking for λ on such a backbone is an error."""
    task_cfg = cfg.tasks.get(spec.name, TaskSection())
    explicit = next((v for v in (req.semantic_weight, task_cfg.semantic_weight,
                                 cfg.backbone(req.backbone).semantic_weight) if v is not None),
                    None)
    if not has_controller:
        if explicit is not None:
            raise BenchError(f"backbone {req.backbone!r} has no semantic controller; "
                             f"a semantic weight (λ={explicit}) cannot be applied")
        return None
    return explicit if explicit is not None else spec.semantic_weight


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def absolute_paths(cfg: Config) -> Config:
    """The config with every path made absolute, so the copy saved with a run stands alone."""
    from bench.config import BackboneSection, DataSection, DatasetSection, PathsSection

    def weights(b: BackboneSection) -> BackboneSection:
        if b.weights in ("pretrain", "random"):
            return b
        return dataclasses.replace(b, weights=str(cfg.path(b.weights)))

    return dataclasses.replace(
        cfg,
        paths=PathsSection(cache_dir=str(cfg.cache_dir), results_dir=str(cfg.results_dir)),
        data=DataSection(synthetic=cfg.data.synthetic, datasets={
            k: DatasetSection(root=str(cfg.path(v.root)) if v.root else "")
            for k, v in cfg.data.datasets.items()}),
        backbones={k: weights(v) for k, v in cfg.backbones.items()})


def resume_target(cfg: Config, run_id: str | None) -> tuple[str, Config]:
    """(run id, its saved config) of an unfinished run: ``run_id``, or the latest one."""
    from bench.results import PARTIAL_SUFFIX, unfinished_runs

    partial = unfinished_runs(cfg.results_dir)
    if run_id:
        partial = [p for p in partial if p.name.startswith(run_id)]
    if not partial:
        raise BenchError(f"{cfg.results_dir / 'runs'}: no unfinished run"
                         + (f" matching {run_id!r}" if run_id else "") + " to resume")
    target = partial[-1]
    return target.name[: -len(PARTIAL_SUFFIX)], config_mod.load(target / "config.toml")


def run(cfg: Config, req: RunRequest | None = None, out: Output | None = None,
        resume: str | None = None) -> Path:
    """Run ``req`` (default: the config's [run] table); returns the finished run folder.

    ``resume`` (a run id, or "" for the latest) continues an unfinished run from its own
    saved config: tasks that already wrote their rows are skipped, an interrupted task
    picks up its training state from its work folder."""
    out = out or Output()
    run_id = None
    if resume is not None:
        run_id, cfg = resume_target(cfg, resume or None)
        req = request_from_config(cfg)
    req = req or request_from_config(cfg)
    if req.profile not in cfg.profiles:
        raise BenchError(f"unknown profile {req.profile!r} (defined: {', '.join(cfg.profiles)})")
    specs = resolve_tasks(req.tasks)
    entry = backbones.BACKBONES.get(req.backbone)
    meta = dict(entry.meta, **weights_provenance(cfg, req.backbone, entry.meta))
    has_controller = bool(meta.get("semantic_controller", False))
    lambdas = {s.name: resolve_semantic_weight(cfg, req, s, has_controller) for s in specs}
    device = resolve_device(req.device)
    cfg = absolute_paths(dataclasses.replace(cfg, run=dataclasses.replace(
        cfg.run, backbone=req.backbone, tasks=tuple(s.name for s in specs),
        profile=req.profile, seed=req.seed, device=req.device,
        semantic_weight=req.semantic_weight)))

    resuming = run_id is not None
    run_id = run_id or new_run_id(req.backbone)
    asked = cfg.profiles[req.profile].precision
    precision = env_mod.run_precision(asked, device)
    writer = RunWriter(cfg.results_dir, run_id, config_toml=config_mod.dumps(cfg),
                       env=env_mod.collect(device),
                       meta={"backbone": req.backbone, "profile": req.profile,
                             "tasks": [s.name for s in specs], "seed": req.seed,
                             "precision": precision, "weights": meta["weights"],
                             "pretrain_method": meta["pretrain_method"]},
                       resume=resuming)
    done = {r.task for r in writer.rows}
    out.info(f"{'resuming ' if resuming else ''}run {run_id}: backbone {req.backbone} "
             f"({meta.get('arch', '?')}), profile {req.profile}, device {device}, {precision}"
             + (f"; done already: {', '.join(sorted(done))}" if done else ""))
    if precision != asked:
        out.info(f"this CPU has no native bf16 (AVX-512 BF16 or AMX): profile {req.profile}'s "
                 "bf16 autocast would be emulated and slower, so the run is in fp32")
    rows: list[MetricRow] = list(writer.rows)
    with writer, timing.recording() as clock:
        if resuming:
            writer.log(f"resumed; tasks done already: {', '.join(sorted(done)) or 'none'}")
        with out.progress() as progress:
            overall = progress.add_task("tasks", total=len(specs))
            for spec in specs:
                if spec.name in done:
                    progress.advance(overall)
                    continue
                progress.update(overall, description=f"task {spec.name}")
                ctx = _context(cfg, req, spec, meta, lambdas[spec.name], device, out, writer)
                t0 = time.time()
                with timing.phase(f"task {spec.name}"):
                    measurements = list(adapters.TASKS.get(spec.name).obj().run(ctx))
                    env_mod.release_memory()  # so the next task's peak does not stack on this one's
                maybe_kill(f"{spec.name}:eval")  # fault injection (tests)
                new = [_row(run_id, req, meta, spec, ctx, m) for m in measurements]
                writer.add_rows(new)
                rows.extend(new)
                writer.log(f"[{spec.name}] {len(new)} rows in {time.time() - t0:.1f}s")
                progress.advance(overall)
        # where this invocation's time went (bench.timing), kept in run.json
        writer.meta["phases"] = clock.rows()
    _summary(out, run_id, req, meta, device, rows)
    return writer.dir


def weights_provenance(cfg: Config, backbone: str, entry_meta: dict[str, Any]
                       ) -> dict[str, str]:
    """What the run's backbone weights are: ``weights`` as bench.toml gives it and the
    ``pretrain_method`` the result rows record.  That is the zoo entry's method, except for
    random initialisation ("random") and for a checkpoint of ours, whose sidecar names the
    method that trained it (a VAL-PAT checkpoint loaded into ``test_sup_swin`` is "valpat")."""
    from backbones.checkpoint import read_meta

    weights = cfg.backbone(backbone).weights
    method = str(entry_meta.get("pretrain_method", ""))
    if weights == "random":
        method = "random"
    elif weights != "pretrain":
        weights = str(cfg.path(weights))
        method = str(read_meta(weights).get("pretrain_method") or method)
    return {"weights": weights, "pretrain_method": method}


def _context(cfg: Config, req: RunRequest, spec: adapters.TaskSpec, meta: dict[str, Any],
             lam: float | None, device: str, out: Output, writer: RunWriter) -> TaskContext:
    settings = cfg.tasks.get(spec.name, TaskSection())
    datasets = settings.datasets or spec.datasets
    data_kind = {d: ("real" if cfg.data.datasets.get(d) and cfg.data.datasets[d].root
                     else "synthetic") for d in datasets}
    work_dir = writer.dir / spec.name
    work_dir.mkdir(parents=True, exist_ok=True)
    return TaskContext(config=cfg, spec=spec, settings=settings, backbone=req.backbone,
                       backbone_meta=meta, semantic_weight=lam, datasets=tuple(datasets),
                       data_kind=data_kind, profile=req.profile, seed=req.seed, device=device,
                       work_dir=work_dir, out=out, writer=writer)


def _row(run_id: str, req: RunRequest, meta: dict[str, Any], spec: adapters.TaskSpec,
         ctx: TaskContext, m: Measurement) -> MetricRow:
    if m.dataset not in ctx.data_kind:
        raise BenchError(f"task {spec.name!r} reported dataset {m.dataset!r}, "
                         f"which it was not asked to run")
    value = float(m.value)
    if not math.isfinite(value):
        raise BenchError(f"task {spec.name!r}: {m.metric} on {m.dataset} is {value}")
    return MetricRow(
        run_id=run_id, backbone=req.backbone, arch=str(meta.get("arch", "")),
        pretrain_method=str(meta.get("pretrain_method", "")),
        semantic_weight=ctx.semantic_weight, task=spec.name, task_version=spec.version,
        dataset=m.dataset, split=m.split, metric=m.metric, value=value,
        higher_is_better=spec.metric(m.metric).higher_is_better, profile=req.profile,
        seed=req.seed, data_kind=ctx.data_kind[m.dataset])


def _summary(out: Output, run_id: str, req: RunRequest, meta: dict[str, Any], device: str,
             rows: Iterable[MetricRow]) -> None:
    rows = list(rows)
    if out.as_json:
        out.json({"run_id": run_id, "rows": [dataclasses.asdict(r) for r in rows]})
        return
    caption = (f"backbone {req.backbone} ({meta.get('arch', '?')}), profile {req.profile}, "
               f"seed {req.seed}, device {device}")
    out.table(f"run {run_id}", ["task", "dataset", "split", "metric", "value", "λ", "data"],
              ([r.task, r.dataset, r.split, r.metric + (" ↑" if r.higher_is_better else " ↓"),
                f"{r.value:.4g}", "" if r.semantic_weight is None else f"{r.semantic_weight:g}",
                r.data_kind] for r in rows), caption=caption)
