"""Two `bench run` processes writing into one results store (and one cache) at the same time
both land intact: two finished run folders, no partial one, every file whole, each run's
rows its own."""
import json
import subprocess
import sys
import tomllib

import pytest

from bench import results
from conftest import tiny_run_config

TOML = ('[tasks.reid]\ndatasets = ["market1501"]\n'
        '[tasks.reid.schedule.smoke]\nepochs = 1\ninput_size = [64, 32]\nbatch_size = 16\n')
BENCH = [sys.executable, "-c", "from bench.cli import entry; entry()"]


@pytest.mark.slow
def test_two_runs_into_one_store_at_once_both_land(tmp_path):
    cfg = tiny_run_config(tmp_path, "reid", TOML)  # writes tmp_path/bench.toml
    # the command-line equivalent of tiny_run_config's overrides
    sets = ["paths.results_dir=res", f"paths.cache_dir={tmp_path / 'cache'}",
            "run.backbone=test_solider_swin", 'run.tasks=["reid"]', "run.device=cpu",
            'profiles.smoke.precision="fp32"']
    argv = ["run", "--config", str(tmp_path / "bench.toml"), "--json"]
    for s in sets:
        argv += ["--set", s]
    procs = [subprocess.Popen([*BENCH, *argv, "--seed", str(seed)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    ids = {json.loads(out)["run_id"] for out, _ in outs}
    assert len(ids) == 2

    runs = cfg.results_dir / "runs"
    assert sorted(d.name for d in runs.iterdir()) == sorted(ids)  # nothing partial or stray
    for d in runs.iterdir():
        assert not [f for f in d.rglob(".tmp-*")]
        meta = json.loads((d / "run.json").read_text())
        assert meta["status"] == "complete" and meta["run_id"] == d.name and meta["rows"] == 4
        seed = tomllib.loads((d / "config.toml").read_text())["run"]["seed"]
        rows = results.read_rows(d / "metrics.csv")
        assert {r.run_id for r in rows} == {d.name} and len(rows) == 4
        assert {r.seed for r in rows} == {seed} == {meta["seed"]}
    df = results.load(cfg.results_dir)
    assert set(df["run_id"]) == ids and len(df) == 8
    assert sorted(df.groupby("run_id")["seed"].first()) == [1, 2]


MAKE = ("import sys; from bench.data.synth import world; "
        "world.make(sys.argv[1], 'smoke', 0, formats=['lip'])")


def test_two_processes_make_one_cached_world_at_once(tmp_path):
    """The synthetic-world cache is written under a lock: the second process waits, then
    reuses what the first wrote (without it, they deleted each other's staging folder)."""
    from bench.data import read_dataset

    out = tmp_path / "w"
    procs = [subprocess.Popen([sys.executable, "-c", MAKE, str(out)], stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    assert not list(out.glob(".tmp-*"))
    assert json.loads((out / "world.json").read_text())["formats"].keys() == {"lip"}
    assert len(read_dataset("lip", out / "LIP")) == 16
