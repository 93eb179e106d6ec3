"""``bench sweep``: one backbone, tasks, a range of semantic weights λ; a report with plots.

Each λ is an ordinary ``bench run`` (same config, ``--lambda`` set), run here one after
another or as one cluster job each through submitit (``--launcher slurm``, as dinov2
launches its jobs), so every run lands in the results store as usual; the sweep then pivots their rows into ``sweep.csv``
(task, dataset, metric, λ, value), one PNG per task (each metric against λ) and a
``report.md`` that states the measured trend of every metric (the slope of a least-squares
line).  The paper's Exp 2 observed re-ID falling and detection rising as λ grows; the report
shows what was measured, and nothing here asserts or tunes for that.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.config import Config
from bench.console import Output
from bench.errors import BenchError
from bench.io import atomic_write_bytes, atomic_write_text


def parse_lambdas(text: str) -> list[float]:
    """``0:1:0.25`` (start:stop:step, stop included) or ``0,0.5,1``; every value in [0, 1]."""
    try:
        if ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            if step <= 0:
                raise ValueError
            n = int(np.floor((stop - start) / step + 1e-9)) + 1
            values = [round(start + i * step, 10) for i in range(n)]
        else:
            values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BenchError(f"--lambda {text!r}: expected start:stop:step or a comma list") from None
    if not values or any(not 0 <= v <= 1 for v in values):
        raise BenchError(f"--lambda {text!r}: values must lie in [0, 1]")
    return values


LAUNCHERS = ("local", "slurm", "submitit-local")


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Slurm settings of ``--launcher slurm`` (submitit's ``slurm_*`` parameters)."""
    partition: str | None = None
    gpus_per_node: int = 1
    cpus_per_task: int = 10
    mem_gb: int = 64
    timeout_min: int = 24 * 60
    account: str | None = None


def _run_one(cfg: Config, req) -> str:
    """One λ of a sweep, inside a submitit job: an ordinary run into the shared store."""
    from bench import runner

    return runner.run(cfg, req, Output(quiet=True)).name


def _submit(cfg: Config, reqs: list, launcher: str, jobs_dir: Path, cluster: Cluster,
            out: Output) -> list[str]:
    """One submitit job per request (dinov2's launcher shape); waits and returns run ids."""
    try:
        import submitit
    except ImportError:  # pragma: no cover - a dependency; this only guards odd installs
        raise BenchError("--launcher slurm needs the submitit package") from None
    executor = submitit.AutoExecutor(folder=str(jobs_dir / "%j"),
                                     cluster="local" if launcher == "submitit-local" else "slurm")
    params: dict = {"timeout_min": cluster.timeout_min, "name": "hcbench-sweep"}
    if launcher == "slurm":
        params.update(gpus_per_node=cluster.gpus_per_node, cpus_per_task=cluster.cpus_per_task,
                      mem_gb=cluster.mem_gb, tasks_per_node=1, nodes=1,
                      slurm_signal_delay_s=120)
        if cluster.partition:
            params["slurm_partition"] = cluster.partition
        if cluster.account:
            params["slurm_account"] = cluster.account
    executor.update_parameters(**params)
    with executor.batch():
        jobs = [executor.submit(_run_one, cfg, r) for r in reqs]
    out.info(f"submitted {len(jobs)} {launcher} job(s): "
             + ", ".join(str(j.job_id) for j in jobs) + f" (logs in {jobs_dir})")
    run_ids = []
    for job, r in zip(jobs, reqs):
        try:
            run_ids.append(job.result())
        except Exception as e:  # a failed job: say which λ, keep the others' results
            raise BenchError(f"sweep job {job.job_id} (λ = {r.semantic_weight:g}) failed: "
                             f"{str(e).strip().splitlines()[-1] if str(e).strip() else e!r}; "
                             f"its log is under {jobs_dir}") from None
    return run_ids


def run_sweep(cfg: Config, req, lambdas: list[float], out: Output,
              sweep_dir: Path | None = None, launcher: str = "local",
              cluster: Cluster | None = None) -> Path:
    """Run every λ (one after another, or one submitit job each) and write the report.

    With ``launcher="slurm"`` every λ is a Slurm job (``submitit-local``: the same jobs as
    local processes, which is how this is tested); each job is an ordinary ``bench run``
    writing into the shared results store, which two writers at once do not corrupt.
    """
    import backbones
    from bench import results, runner

    if launcher not in LAUNCHERS:
        raise BenchError(f"--launcher {launcher!r}: one of {', '.join(LAUNCHERS)}")
    meta = backbones.BACKBONES.get(req.backbone).meta
    if not meta.get("semantic_controller", False):
        raise BenchError(f"backbone {req.backbone!r} has no semantic controller: "
                         "there is no λ to sweep")
    sweep_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{req.backbone}"
    sweep_dir = sweep_dir or cfg.results_dir / "sweeps" / sweep_id
    reqs = [dataclasses.replace(req, semantic_weight=lam) for lam in lambdas]
    if launcher == "local":
        run_ids = []
        for i, r in enumerate(reqs):
            out.info(f"sweep {i + 1}/{len(reqs)}: λ = {r.semantic_weight:g}")
            run_ids.append(runner.run(cfg, r, out).name)
    else:
        run_ids = _submit(cfg, reqs, launcher, sweep_dir / "jobs", cluster or Cluster(), out)
    rows = results.load(cfg.results_dir)
    rows = rows[rows["run_id"].isin(run_ids)]
    return write_report(rows, sweep_dir, req.backbone)


def trend(lams: np.ndarray, values: np.ndarray) -> float:
    """Least-squares slope of value against λ (units of the metric per unit λ)."""
    if len(np.unique(lams)) < 2:
        return float("nan")
    return float(np.polyfit(lams, values, 1)[0])


def write_report(rows: pd.DataFrame, sweep_dir: Path, backbone: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if rows.empty:
        raise BenchError("the sweep produced no metric rows")
    sweep_dir = Path(sweep_dir)
    table = (rows.groupby(["task", "dataset", "metric", "higher_is_better", "semantic_weight"],
                          as_index=False)["value"].mean()
             .sort_values(["task", "dataset", "metric", "semantic_weight"]))
    atomic_write_text(sweep_dir / "sweep.csv", table.rename(
        columns={"semantic_weight": "lambda"}).to_csv(index=False))
    lines = [f"# λ sweep of {backbone}", "",
             f"Runs: {', '.join(sorted(rows['run_id'].unique()))}; data: "
             f"{', '.join(sorted(rows['data_kind'].unique()))}; profile: "
             f"{', '.join(sorted(rows['profile'].unique()))}.", "",
             "| task | dataset | metric | " + " | ".join(
                 f"λ={v:g}" for v in sorted(table["semantic_weight"].unique())) + " | slope per unit λ |",
             "|---|---|---|" + "---|" * (table["semantic_weight"].nunique() + 1)]
    for (task, dataset, metric, higher), g in table.groupby(
            ["task", "dataset", "metric", "higher_is_better"], sort=False):
        slope = trend(g["semantic_weight"].to_numpy(), g["value"].to_numpy())
        arrow = "↑" if higher else "↓"
        vals = " | ".join(f"{v:.2f}" for v in g["value"])
        lines.append(f"| {task} | {dataset} | {metric} {arrow} | {vals} | {slope:+.3f} |")
    lines += ["", "Slopes are measured, not expected values: the paper's Exp 2 reports re-ID "
                  "falling and detection rising as λ grows, on real data at full scale.", ""]
    for task, g in table.groupby("task", sort=False):
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
        for (dataset, metric, higher), m in g.groupby(["dataset", "metric", "higher_is_better"]):
            ax.plot(m["semantic_weight"], m["value"], marker="o",
                    label=f"{dataset} {metric} {'↑' if higher else '↓'}")
        ax.set_xlabel("semantic weight λ")
        ax.set_ylabel("metric")
        ax.set_title(f"{task}: {backbone}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        atomic_write_bytes(sweep_dir / f"{task}.png", buf.getvalue())
        lines.append(f"![{task}]({task}.png)")
    atomic_write_text(sweep_dir / "report.md", "\n".join(lines) + "\n")
    return sweep_dir
