"""The ``bench`` command: parses arguments and calls the library; nothing is computed here.

``main(argv) -> int`` so tests call it directly.  A :class:`~bench.errors.BenchError`
becomes one line, ``error: <what and where>``, and exit code 2; features still to come
(tasks not yet built) say "not implemented yet" and exit 2 too.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

import bench
from bench import config as config_mod
from bench.console import Output
from bench.errors import BenchError, NotImplementedYet


LIST_SECTIONS = ("backbones", "tasks", "datasets", "profiles")


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common options")
    g.add_argument("--config", metavar="PATH",
                   help="config file (default: ./bench.toml if present, else built-in defaults)")
    g.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override a config value, e.g. --set run.seed=3 (repeatable)")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bars or messages")
    g.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    return p


def _add_run_selection(p: argparse.ArgumentParser) -> None:
    """The options that pick what a run runs (defaults: [run] in bench.toml)."""
    p.add_argument("--backbone", help="zoo name (bench list backbones)")
    p.add_argument("--tasks", help="comma-separated task names, or 'all' (the six SOLIDER tasks)")
    p.add_argument("--profile", help="profile name (bench list profiles)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")


def _request(args: argparse.Namespace, cfg: config_mod.Config, semantic_weight: float | None):
    """The run request: bench.toml's [run] with the command line's choices on top."""
    from bench import runner

    base = runner.request_from_config(cfg)
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip()) if args.tasks else None
    if args.tasks is not None and not tasks:
        raise BenchError("--tasks: empty list")
    return runner.RunRequest(
        backbone=args.backbone or base.backbone, tasks=tasks or base.tasks,
        profile=args.profile or base.profile, seed=base.seed if args.seed is None else args.seed,
        device=args.device or base.device, semantic_weight=semantic_weight)


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="bench",
        description="hcbench: benchmark human-centric vision backbones on six downstream tasks.")
    parser.add_argument("--version", action="version", version=f"hcbench {bench.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", parents=[common], help="run a backbone on tasks, store metric rows",
                       description="Fine-tune and evaluate one backbone on tasks; the rows go "
                                   "to the results store. Defaults come from [run] in bench.toml.")
    _add_run_selection(p)
    p.add_argument("--lambda", dest="semantic_weight", type=float, metavar="λ",
                   help="semantic weight for every task (backbones with a controller only)")
    p.add_argument("--resume", nargs="?", const="", metavar="RUN_ID",
                   help="continue an unfinished run (default: the latest) from its saved config")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("data", parents=[common], help="make the synthetic world; check datasets",
                       description="The data layer: write the synthetic world, validate a "
                                   "dataset root, draw a contact sheet.")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    q = dsub.add_parser("make", parents=[common], help="write the synthetic world (cached)")
    q.add_argument("--size", choices=("smoke", "small", "large"),
                   help="default: the profile's synthetic_size")
    q.add_argument("--seed", type=int, help="default: data.synthetic.seed")
    q.add_argument("--out", metavar="DIR", help="default: <cache_dir>/synthetic/v<N>-<size>-seed<S>")
    q.add_argument("--only", metavar="FORMATS", help="comma-separated writers, e.g. market1501,coco")
    q.add_argument("--force", action="store_true", help="write again even if cached")
    q.set_defaults(func=cmd_data_make)
    q = dsub.add_parser("check", parents=[common], help="validate a dataset root, list every problem")
    q.add_argument("dataset", help="dataset key (bench list datasets)")
    q.add_argument("root", nargs="?", help="the dataset's root (default: its configured root, "
                                           "or the synthetic world's copy)")
    q.set_defaults(func=cmd_data_check)
    q = dsub.add_parser("show", parents=[common], help="a PNG contact sheet with annotations drawn")
    q.add_argument("dataset", help="dataset key (bench list datasets)")
    q.add_argument("root", nargs="?", help="the dataset's root (default as for check)")
    q.add_argument("--out", metavar="PNG", help="default: <dataset>.png in the current folder")
    q.add_argument("--n", type=int, default=16, help="number of samples")
    q.set_defaults(func=cmd_data_show)

    p = sub.add_parser("perf", parents=[common], help="speed benchmarks",
                       description="Speed benchmarks, each beside what it is compared to: "
                                   "data (synthetic world, decoding), eval (every task's "
                                   "evaluator at its benchmark's size; reID and COCO "
                                   "keypoints vs torchreid and pycocotools), "
                                   "backbone (ours vs timm), e2e (a whole `bench run`, phase "
                                   "by phase). Reports also go to <results_dir>/perf/.")
    p.add_argument("what", choices=("data", "backbone", "eval", "e2e"))
    p.add_argument("--size", choices=("smoke", "small", "large"), default="smoke")
    p.add_argument("--only", metavar="NAMES", help="data: comma-separated writers; "
                                                   "eval: market1501, msmt17, coco_keypoints, "
                                                   "cuhk_sysu, prw, citypersons, lip")
    p.add_argument("--ref-queries", type=int, default=300,
                   help="eval: queries the (slow) reference evaluator runs on")
    p.add_argument("--repeats", type=int, default=3,
                   help="eval: timed runs of each, in turn; the best counts")
    p.add_argument("--backbone", help="e2e: zoo name (default: [run] in bench.toml)")
    p.add_argument("--tasks", help="e2e: comma-separated task names, or 'all'")
    p.add_argument("--profile", help="e2e: profile name")
    p.add_argument("--cache", choices=("fresh", "keep"), default="fresh",
                   help="e2e: a fresh temporary cache (world and pretraining included), or "
                        "the configured one (whatever it holds is reused)")
    p.add_argument("--arch", default="swin_s", help="backbone: comma-separated swin_t,swin_s,swin_b")
    p.add_argument("--input", default="256x128", help="backbone: HxW (default SOLIDER's 256x128)")
    p.add_argument("--batch", type=int, default=8, help="backbone: batch size")
    p.add_argument("--device", help="backbone: cpu (default) or cuda; e2e: as bench run")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--compile", action="store_true", help="backbone: torch.compile both models")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--steps", type=int, default=3, help="backbone: timed steps")
    p.set_defaults(func=cmd_perf)

    p = sub.add_parser("tables", parents=[common], help="the SOLIDER tables, published and measured",
                       description="The SOLIDER ablation or SOTA table in the paper's layout: "
                                   "each cell the published number and, where runs exist, "
                                   "the measured one with its data kind.")
    p.add_argument("which", choices=("ablation", "sota"))
    p.add_argument("--runs", metavar="DIR", help="results folder (default: paths.results_dir)")
    p.add_argument("--format", choices=("rich", "md", "csv", "html"), default="rich")
    p.add_argument("--out", metavar="FILE", help="write to a file instead of the terminal")
    p.set_defaults(func=cmd_tables)

    p = sub.add_parser("regress", parents=[common], help="check results against golden or published numbers",
                       description="Compare the latest measured rows with golden numbers of our "
                                   "own suite or with published numbers (real-data runs only); "
                                   "exits 1 if any row is worse than its reference by more "
                                   "than the tolerance.")
    p.add_argument("--against", choices=("golden", "published"), default="golden")
    p.add_argument("--tolerance", type=float, default=0.5,
                   help="allowed shortfall, in the metric's units (default 0.5)")
    p.add_argument("--runs", metavar="DIR", help="results folder (default: paths.results_dir)")
    p.add_argument("--golden", metavar="CSV", help="golden file (default: results/golden/*.csv)")
    p.add_argument("--update-golden", metavar="CSV",
                   help="write the latest measured rows as the golden file, on purpose")
    p.set_defaults(func=cmd_regress)

    p = sub.add_parser("eval", parents=[common], help="evaluate saved predictions of a task",
                       description="Evaluate a task's saved predictions (the "
                                   "<dataset>_predictions file a run writes in its task folder) "
                                   "against a dataset.")
    p.add_argument("task", help="task name (bench list tasks)")
    p.add_argument("predictions", help="predictions file")
    p.add_argument("dataset", help="dataset key (bench list datasets)")
    p.add_argument("root", nargs="?", help="the dataset's root (default: configured or synthetic)")
    p.add_argument("--baseline", metavar="PREDICTIONS",
                   help="another run's predictions on the same test images: each metric of "
                        "both, their difference and its 95%% paired-bootstrap interval "
                        "over the test images (attribute, parsing)")
    p.add_argument("--resamples", type=int, default=1000, help="with --baseline (default 1000)")
    p.add_argument("--profile", help="whose synthetic world holds the dataset, as the run "
                                      "that saved the predictions (default: [run] profile)")
    p.add_argument("--gallery-size", type=int, metavar="N",
                   help="search on cuhk_sysu: the per-query galleries of TestG<N>.mat (50, "
                        "100, 500, 1000, 2000, 4000; default 100)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("sweep", parents=[common], help="run tasks over a range of λ, report with plots",
                       description="Run one backbone on tasks for every semantic weight λ "
                                   "of a range, then write sweep.csv, report.md and a PNG per "
                                   "task under <results_dir>/sweeps/.")
    _add_run_selection(p)
    p.add_argument("--lambda", dest="lambdas", required=True, metavar="RANGE",
                   help="start:stop:step (stop included) or a comma list, e.g. 0:1:0.1")
    p.add_argument("--launcher", choices=("local", "slurm", "submitit-local"), default="local",
                   help="local: one λ after another here; slurm: one Slurm job per λ through "
                        "submitit; submitit-local: those jobs as local processes")
    p.add_argument("--partition", help="slurm: partition")
    p.add_argument("--account", help="slurm: account")
    p.add_argument("--gpus", type=int, default=1, help="slurm: GPUs per job (default 1)")
    p.add_argument("--cpus", type=int, default=10, help="slurm: CPUs per job (default 10)")
    p.add_argument("--mem-gb", type=int, default=64, dest="mem_gb",
                   help="slurm: memory per job (default 64)")
    p.add_argument("--timeout-min", type=int, default=24 * 60, dest="timeout_min",
                   help="slurm/submitit-local: time limit per job in minutes (default 1440)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", parents=[common], help="a self-contained HTML page for one run",
                       description="Write one self-contained HTML page with a run's summary, "
                                   "metric table (published numbers beside), plots, config and log.")
    p.add_argument("run", help="run folder, run id, or a unique prefix of one")
    p.add_argument("--out", metavar="HTML", help="default: <run folder>/report.html")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("analyze", parents=[common], help="semantic analysis of features (Exp 1)",
                       description="The paper's Exp 1: part-pooled features of synthetic people; "
                                   "intra-person distance between different parts and "
                                   "inter-person distance between the same part, per λ, with a "
                                   "2-D PCA plot coloured by part and by person.")
    p.add_argument("what", choices=("semantics",))
    p.add_argument("--backbone", help="zoo name (default: run.backbone)")
    p.add_argument("--lambda", dest="lambdas", metavar="RANGE",
                   help="start:stop:step or a comma list (backbones with a controller)")
    p.add_argument("--people", type=int, default=12)
    p.add_argument("--out", metavar="DIR", help="default: <results_dir>/analyze/<backbone>")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("list", parents=[common], help="list backbones, tasks, datasets, profiles",
                       description="List what the registries and the config hold.")
    p.add_argument("what", nargs="?", choices=LIST_SECTIONS + ("all",), default="all")
    p.add_argument("--pattern", help="shell pattern on names, e.g. 'solider_*'")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("pretrain", parents=[common],
                       help="train a zoo backbone (sup, DINO, SOLIDER, CLASP, VAL-PAT) or "
                            "CLASP's CLIP teacher",
                       description="Pretrain a zoo backbone and write a checkpoint its zoo entry "
                                   "loads (<method>_swin_<arch>). Resumes a run found in --out.")
    p.add_argument("--method", required=True,
                   choices=("sup", "dino", "dinoclust", "solider", "clip", "clasp", "valpat"))
    p.add_argument("--arch", default="swin_s", choices=("swin_t", "swin_s", "swin_b", "test"))
    p.add_argument("--data", help="luperson, imagenet, or a folder (default: imagenet for sup, "
                                  "else luperson)")
    p.add_argument("--profile", choices=("smoke", "paper"), default="smoke")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, dest="batch_size", help="global batch")
    p.add_argument("--init", metavar="CKPT", help="start from this checkpoint (SOLIDER after DINO)")
    p.add_argument("--train-part-classifier", action="store_true", dest="train_part_classifier",
                   default=None, help="optimise SOLIDER's part classifier (the official never does)")
    p.add_argument("--clip-model", dest="clip_model", choices=("small", "test"),
                   help="--method clip: the size of the CLIP (default small; --arch is unused)")
    p.add_argument("--text-model", dest="text_model", choices=("base", "small", "test"),
                   help="--method valpat: the size of the text tower trained with the backbone "
                        "(default: the profile's, base for paper, small for smoke)")
    p.add_argument("--teacher", metavar="CKPT",
                   help="--method clasp: a local open_clip checkpoint as the CLIP teacher "
                        "(default: the small CLIP of --method clip, trained if needed)")
    p.add_argument("--teacher-model", dest="teacher_model", metavar="NAME|JSON",
                   help="the teacher's open_clip model name or JSON config (default: its sidecar)")
    p.add_argument("--probe-every", type=int, dest="probe_every", metavar="STEPS",
                   help="measure the backbone (kNN re-ID, part agreement, collapse signals) "
                        "before training and every STEPS steps: <out>/probe.csv and probe.png")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--out", metavar="DIR",
                   help="default: <cache_dir>/pretrain/<zoo name>/<profile>-<data>-<hash>")
    p.set_defaults(func=cmd_pretrain)

    return parser


def _load_config(args: argparse.Namespace) -> config_mod.Config:
    return config_mod.load(args.config, args.overrides)


# --------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace, out: Output) -> int:
    from bench import runner

    cfg = _load_config(args)
    req = _request(args, cfg, cfg.run.semantic_weight if args.semantic_weight is None
                   else args.semantic_weight)
    if req.semantic_weight is not None and not 0 <= req.semantic_weight <= 1:
        raise BenchError(f"--lambda: λ must lie in [0, 1], got {req.semantic_weight}")
    if args.resume is not None:
        run_dir = runner.run(cfg, None, out, resume=args.resume)
    else:
        run_dir = runner.run(cfg, req, out)
    out.info(f"results written to {run_dir}")
    return 0


def cmd_pretrain(args: argparse.Namespace, out: Output) -> int:
    from backbones.pretrain import default_out_dir, profile_config, train

    cfg = _load_config(args)
    pcfg = profile_config(args.method, args.profile, arch=args.arch, data=args.data,
                          epochs=args.epochs, batch_size=args.batch_size,
                          init=str(cfg.path(args.init)) if args.init else None,
                          train_part_classifier=args.train_part_classifier,
                          clip_model=args.clip_model, text_model=args.text_model,
                          teacher=str(cfg.path(args.teacher)) if args.teacher else None,
                          teacher_model=args.teacher_model,
                          seed=cfg.run.seed if args.seed is None else args.seed)
    dest = cfg.path(args.out) if args.out else default_out_dir(cfg, pcfg)
    with out.progress() as progress:
        bar = progress.add_task(f"pretrain {args.method} {args.arch} ({args.profile})", total=None)

        def show(step: int, total: int, row: dict) -> None:
            progress.update(bar, completed=step, total=total,
                            description=f"pretrain {args.method}: loss {row['loss']:.3f}")

        if args.probe_every:
            from backbones.pretrain.probe import PROBE_NAME, probe_run

            table = probe_run(pcfg, dest, args.probe_every, bench_cfg=cfg, device=args.device,
                              progress=show)
        result = train(pcfg, dest, bench_cfg=cfg, device=args.device, progress=show)
    if result.checkpoint is None:
        raise BenchError(f"pretraining stopped at step {result.steps}; run again to resume")
    if args.probe_every and not args.json:
        out.table(f"probe of {result.zoo_name} over training", list(table.columns),
                  [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in r]
                   for r in table.itertuples(index=False)], caption=str(dest / PROBE_NAME))
    line = f'[backbones.{result.zoo_name}]\nweights = "{result.checkpoint}"'
    if args.method == "clip":
        line = f"bench pretrain --method clasp --teacher {result.checkpoint}"
    if args.json:
        out.json({"checkpoint": str(result.checkpoint), "zoo_name": result.zoo_name,
                  "steps": result.steps, "seconds": round(result.seconds, 1), "last": result.last})
        return 0
    out.out.print(str(result.checkpoint), soft_wrap=True)
    out.info(f"{result.steps} steps in {result.seconds:.0f} s; to use it, "
             + ("as CLASP's teacher:" if args.method == "clip" else "add to bench.toml:"))
    out.out.print(line, soft_wrap=True, markup=False)
    return 0


def cmd_data_make(args: argparse.Namespace, out: Output) -> int:
    from bench.data.synth import world

    cfg = _load_config(args)
    size = args.size or cfg.profile().synthetic_size
    seed = cfg.data.synthetic.seed if args.seed is None else args.seed
    dest = (cfg.path(args.out) if args.out else
            world.default_dir(cfg.cache_dir, size, seed))
    formats = [f.strip() for f in args.only.split(",")] if args.only else None
    names = formats or [n for n, _ in world.WRITERS]
    with out.progress() as progress:
        bar = progress.add_task(f"synthetic world ({size}, seed {seed})", total=len(names))

        def step(name: str) -> None:
            progress.update(bar, description=f"writing {name}")
            progress.advance(bar)

        manifest = world.make(dest, size, seed, formats=formats, progress=step, force=args.force)
        progress.update(bar, completed=len(names), description="synthetic world")
    if args.json:
        out.json({"dir": str(dest), **manifest})
        return 0
    rows = [(name, f"{info['seconds']:.1f}", ", ".join(f"{k} {v}" for k, v in info["counts"].items()))
            for name, info in manifest["formats"].items() if formats is None or name in formats]
    out.table(f"synthetic world v{manifest['generator_version']}, {size}, seed {seed}",
              ["writer", "seconds", "counts"], rows, caption=str(dest))
    return 0


def _dataset_root_arg(args: argparse.Namespace, cfg: config_mod.Config):
    from bench.data import dataset_root, dataset_spec

    dataset_spec(args.dataset)  # unknown keys fail here, with suggestions
    if args.root:
        return cfg.path(args.root)
    return dataset_root(cfg, args.dataset, profile=getattr(args, "profile", None))[0]


def cmd_data_check(args: argparse.Namespace, out: Output) -> int:
    from bench.data import read_dataset
    from bench.data.base import DataError, Problems

    cfg = _load_config(args)
    root = _dataset_root_arg(args, cfg)
    problems = Problems(strict=False, check_images=True)
    try:
        read_dataset(args.dataset, root, problems)
    except DataError:
        pass  # a fatal problem: already recorded
    items = [{"path": p.path, "problem": p.reason} for p in problems.items]
    if args.json:
        out.json({"dataset": args.dataset, "root": str(root), "problems": items})
    elif items:
        out.table(f"{args.dataset}: {len(items)} problem(s) in {root}", ["file", "problem"],
                  ([i["path"], i["problem"]] for i in items))
    else:
        out.out.print(f"{args.dataset}: {root} is valid", soft_wrap=True)
    return 1 if items else 0


def cmd_data_show(args: argparse.Namespace, out: Output) -> int:
    from bench.data import read_dataset
    from bench.data.show import contact_sheet

    cfg = _load_config(args)
    root = _dataset_root_arg(args, cfg)
    dest = cfg.path(args.out) if args.out else Path.cwd() / f"{args.dataset}.png"
    contact_sheet(args.dataset, read_dataset(args.dataset, root), dest, n=args.n)
    out.info(f"wrote {dest}")
    if args.json:
        out.json({"dataset": args.dataset, "root": str(root), "png": str(dest)})
    return 0


def cmd_perf(args: argparse.Namespace, out: Output) -> int:
    from bench import perf
    from bench.data.synth.world import WRITERS

    cfg = _load_config(args)

    def saved(report, device=None) -> str:
        return str(perf.save_report(cfg.results_dir, args.what, report, device))

    def rows_out(title: str, rows: list[dict], where: str) -> None:
        if args.json:
            out.json({"rows": rows, "saved": where})
            return
        cols = list(dict.fromkeys(k for r in rows for k in r))
        out.table(title, cols, ([r.get(c, "") for c in cols] for r in rows), caption=where)

    if args.what == "eval":
        which = ([w.strip() for w in args.only.split(",")] if args.only
                 else list(perf.EVAL_BENCHMARKS))
        unknown = [w for w in which if w not in perf.EVAL_BENCHMARKS]
        if unknown:
            raise BenchError(f"--only: unknown evaluation benchmark(s) {unknown} "
                             f"(known: {', '.join(perf.EVAL_BENCHMARKS)})")
        rows = [r for w in which for r in perf.perf_eval(w, args.ref_queries, args.repeats)]
        rows_out("bench perf eval (best of each; reID per query, reference on a subset of "
                 "queries)", rows, saved(rows))
        return 0
    if args.what == "backbone":
        h, _, w = args.input.partition("x")
        device = args.device or "cpu"
        rows = perf.perf_backbone(tuple(a.strip() for a in args.arch.split(",")), int(h), int(w),
                                  args.batch, device, args.precision, args.compile,
                                  args.steps, channels_last=args.channels_last)
        rows_out("bench perf backbone (ours vs timm, same size, input, batch, precision)",
                 rows, saved(rows, device))
        return 0
    if args.what == "e2e":
        out.info(f"timing `bench run` in a child process ({args.cache} cache); this takes as "
                 "long as the run")
        report = perf.perf_e2e(config=args.config, overrides=args.overrides,
                               backbone=args.backbone, tasks=args.tasks, profile=args.profile,
                               device=args.device, cache=args.cache)
        where = saved(report, args.device)
        if args.json:
            out.json({**report, "saved": where})
            return 0
        out.table(f"bench perf e2e: {report['backbone']}, tasks {','.join(report['tasks'] or [])}"
                  f", profile {report['profile']}, {report['cache']} cache, "
                  f"{report['cpu_count']} CPUs", ["phase", "seconds", "peak RSS MB"],
                  ([r["phase"], r["seconds"], r.get("peak_rss_mb", "")]
                   for r in report["rows"]),
                  caption=f"peak memory (RSS) {report['peak_rss_mb']:.0f} MB; {where}")
        return 0
    formats = [f.strip() for f in args.only.split(",")] if args.only else None
    with out.progress() as progress:
        names = formats or [n for n, _ in WRITERS]
        bar = progress.add_task("perf data", total=len(names))
        report = perf.perf_data(args.size, formats=formats,
                                progress=lambda name: progress.update(
                                    bar, description=f"generate {name}", advance=1))
    where = saved(report)
    if args.json:
        out.json({**report, "saved": where})
        return 0
    out.table(f"bench perf data ({args.size} world, {report['cpu_count']} CPUs)",
              ["stage", "images", "seconds", "images/s"],
              ([r["stage"], r["images"], r["seconds"], r["images_per_s"]] for r in report["rows"]),
              caption=where)
    return 0


def cmd_tables(args: argparse.Namespace, out: Output) -> int:
    from bench import results, tables
    from bench.io import atomic_write_text

    cfg = _load_config(args)
    runs = results.load(cfg.path(args.runs) if args.runs else cfg.results_dir)
    blocks = tables.TABLES[args.which](results.load_published(), runs)
    fmt = "csv" if args.json and args.format == "rich" else args.format
    if fmt == "rich" and not args.out:
        tables.render_rich(out, blocks)
        return 0
    text = {"md": tables.to_markdown, "csv": tables.to_csv, "html": tables.to_html,
            "rich": tables.to_markdown}[fmt](blocks)
    if args.out:
        atomic_write_text(cfg.path(args.out), text)
        out.info(f"wrote {cfg.path(args.out)}")
    else:
        print(text, end="")
    return 0


def cmd_regress(args: argparse.Namespace, out: Output) -> int:
    from bench import regress, results

    cfg = _load_config(args)
    runs = results.load(cfg.path(args.runs) if args.runs else cfg.results_dir)
    if args.update_golden:
        path = regress.write_golden(runs, cfg.path(args.update_golden))
        out.info(f"wrote {len(regress.golden_rows(runs))} golden rows to {path}")
        return 0
    golden = cfg.path(args.golden) if args.golden else None
    cmp = regress.compare(runs, args.against, args.tolerance, golden)
    if args.against == "golden":
        for f in regress.golden_files(golden):
            if note := regress.golden_machine_differs(f):
                out.info(f"note: {note}; numbers may differ by more than rounding")
    if args.json:
        out.json({"regressions": cmp.regressions, "rows": cmp.table.to_dict("records")})
    else:
        t = cmp.table
        out.table(f"bench regress --against {args.against} (tolerance {args.tolerance:g})",
                  list(t.columns), ([f"{v:.4g}" if isinstance(v, float) else v for v in row]
                                    for row in t.itertuples(index=False)),
                  caption=f"{cmp.regressions} regression(s) in {len(t)} compared rows")
    return 0 if cmp.ok else 1


def cmd_eval(args: argparse.Namespace, out: Output) -> int:
    import adapters
    from bench.data import read_dataset

    cfg = _load_config(args)
    task = adapters.TASKS.get(args.task).obj
    if not hasattr(task, "evaluate_file"):
        raise NotImplementedYet(f"`bench eval {args.task}`")
    pred = cfg.path(args.predictions)
    if not pred.exists():  # a file, or a folder of label maps (parsing)
        raise BenchError(f"{pred}: predictions not found")
    root = _dataset_root_arg(args, cfg)
    if args.gallery_size is not None:
        if (args.task, args.dataset) != ("search", "cuhk_sysu"):
            raise BenchError("--gallery-size is for `bench eval search <predictions> cuhk_sysu`")
        from bench.data.search import read_cuhk_sysu

        data = read_cuhk_sysu(root, gallery_size=args.gallery_size)
    else:
        data = read_dataset(args.dataset, root)
    if args.baseline:
        return _eval_against(args, out, cfg, task, pred, data)
    metrics = task.evaluate_file(pred, data)
    size = getattr(data, "gallery_size", None)  # CUHK-SYSU's TestG<N> protocol
    if args.json:
        out.json({"task": args.task, "dataset": args.dataset, "metrics": metrics,
                  **({"gallery_size": size} if size else {})})
    else:
        title = f"{args.task} on {args.dataset}" + (f", gallery {size}" if size else "")
        out.table(title, ["metric", "value"], ([k, f"{v:.4g}"] for k, v in metrics.items()),
                  caption=str(pred))
    return 0


def _eval_against(args, out: Output, cfg, task, pred: Path, data) -> int:
    if not hasattr(task, "compare_files"):
        raise NotImplementedYet(f"`bench eval {args.task} --baseline`")
    base = cfg.path(args.baseline)
    if not base.exists():
        raise BenchError(f"{base}: baseline predictions not found")
    if args.resamples < 1:
        raise BenchError(f"--resamples must be at least 1, not {args.resamples}")
    rows = task.compare_files(pred, base, data, resamples=args.resamples)
    if args.json:
        out.json({"task": args.task, "dataset": args.dataset, "predictions": str(pred),
                  "baseline": str(base), "resamples": args.resamples, "metrics": rows})
    else:
        out.table(f"{args.task} on {args.dataset}: predictions against baseline",
                  ["metric", "predictions", "baseline", "difference", "95% interval"],
                  ([k, f"{r['a']:.4g}", f"{r['b']:.4g}", f"{r['diff']:+.4g}",
                    f"[{r['lo']:+.3g}, {r['hi']:+.3g}]"] for k, r in rows.items()),
                  caption=f"{pred} against {base}; paired bootstrap over the test images, "
                          f"{args.resamples} resamples")
    return 0


def cmd_sweep(args: argparse.Namespace, out: Output) -> int:
    from bench import sweep

    cfg = _load_config(args)
    cluster = sweep.Cluster(partition=args.partition, gpus_per_node=args.gpus,
                            cpus_per_task=args.cpus, mem_gb=args.mem_gb,
                            timeout_min=args.timeout_min, account=args.account)
    folder = sweep.run_sweep(cfg, _request(args, cfg, None), sweep.parse_lambdas(args.lambdas),
                             out, launcher=args.launcher, cluster=cluster)
    if args.json:
        out.json({"sweep": str(folder)})
    else:
        out.out.print(f"sweep report: {folder / 'report.md'}", soft_wrap=True)
    return 0


def cmd_report(args: argparse.Namespace, out: Output) -> int:
    from bench import report

    cfg = _load_config(args)
    run_dir = report.find_run(cfg.results_dir, args.run)
    dest = report.write(run_dir, cfg.path(args.out) if args.out else None)
    if args.json:
        out.json({"run": run_dir.name, "html": str(dest)})
    else:
        out.out.print(f"report: {dest}", soft_wrap=True)
    return 0


def cmd_analyze(args: argparse.Namespace, out: Output) -> int:
    from types import SimpleNamespace

    import backbones
    from adapters._engine import build_backbone
    from bench import analyze, sweep

    cfg = _load_config(args)
    name = args.backbone or cfg.run.backbone
    meta = backbones.BACKBONES.get(name).meta
    has_controller = bool(meta.get("semantic_controller", False))
    if args.lambdas and not has_controller:
        raise BenchError(f"backbone {name!r} has no semantic controller; --lambda cannot apply")
    lambdas = (sweep.parse_lambdas(args.lambdas) if args.lambdas else [0.0, 1.0]) \
        if has_controller else [None]
    ctx = SimpleNamespace(backbone=name, config=cfg, profile=cfg.run.profile, seed=cfg.run.seed,
                          device="cpu", semantic_weight=None, spec=SimpleNamespace(name="analyze"),
                          log=lambda msg: out.info(msg), out=out)
    model = build_backbone(ctx)
    dest = cfg.path(args.out) if args.out else cfg.results_dir / "analyze" / name
    table = analyze.analyze(model, lambdas, dest, n_people=args.people, name=name)
    if args.json:
        out.json({"dir": str(dest), "rows": table.to_dict("records")})
    else:
        out.table(f"semantic analysis of {name}", list(table.columns),
                  ([f"{v:.4f}" if isinstance(v, float) else v for v in r]
                   for r in table.itertuples(index=False)), caption=str(dest))
    return 0


def cmd_list(args: argparse.Namespace, out: Output) -> int:
    from bench import listing

    cfg = _load_config(args)
    sections = LIST_SECTIONS if args.what == "all" else (args.what,)
    data = {s: listing.SECTIONS[s](cfg, args.pattern) for s in sections}
    if args.json:
        out.json(data)
        return 0
    for s in sections:
        listing.render(out, s, data[s])
    return 0


# --------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Output(quiet=args.quiet, as_json=args.json)
    try:
        return args.func(args, out)
    except BenchError as e:
        out.error(str(e))
        return 2
    except KeyboardInterrupt:
        out.error("interrupted")
        return 130


def entry() -> None:  # console script
    sys.exit(main())


if __name__ == "__main__":
    entry()
