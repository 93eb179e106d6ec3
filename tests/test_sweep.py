"""bench sweep: one run per λ, a CSV, a markdown report with slopes, a PNG per task."""
import pandas as pd
import pytest

import adapters
from bench import config, runner, sweep
from bench.errors import BenchError


@pytest.mark.parametrize("text, values", [
    ("0:1:0.25", [0.0, 0.25, 0.5, 0.75, 1.0]),
    ("0:1:0.1", [round(i / 10, 10) for i in range(11)]),
    ("0.2,0.8", [0.2, 0.8]),
])
def test_parse_lambdas(text, values):
    assert sweep.parse_lambdas(text) == values


@pytest.mark.parametrize("text", ["0:2:0.5", "a,b", "0:1:0", ""])
def test_parse_lambdas_errors(text):
    with pytest.raises(BenchError):
        sweep.parse_lambdas(text)


def test_sweep_end_to_end(tmp_path, registries, bench_cli, monkeypatch):
    tasks, bbs = registries

    @adapters.register_task(adapters.TaskSpec(
        name="toy", version=1, title="", paper="", reference_code="", datasets=("market1501",),
        metrics=(adapters.Metric("mAP"), adapters.Metric("MR", higher_is_better=False))))
    class Toy:
        def run(self, ctx):  # a fake task whose numbers depend on λ, for the machinery only
            yield runner.Measurement("market1501", "test", "mAP", 50 - 10 * ctx.semantic_weight)
            yield runner.Measurement("market1501", "test", "MR", 20 - 5 * ctx.semantic_weight)

    bbs.add("ctl", object, arch="test", pretrain_method="solider", semantic_controller=True)
    bbs.add("plain", object, arch="test", pretrain_method="sup")
    monkeypatch.chdir(tmp_path)
    code, out, err = bench_cli("sweep", "--backbone", "ctl", "--tasks", "toy", "--lambda",
                               "0:1:0.5", "--device", "cpu", "--set", "paths.results_dir=res")
    assert code == 0, err
    [folder] = list((tmp_path / "res" / "sweeps").iterdir())
    table = pd.read_csv(folder / "sweep.csv")
    assert sorted(table["lambda"].unique()) == [0.0, 0.5, 1.0]
    assert table[table["metric"] == "mAP"]["value"].tolist() == [50.0, 45.0, 40.0]
    report = (folder / "report.md").read_text()
    assert "-10.000" in report and "-5.000" in report and "![toy](toy.png)" in report
    assert (folder / "toy.png").read_bytes()[:4] == b"\x89PNG"
    assert len(list((tmp_path / "res" / "runs").iterdir())) == 3
    code, _, err = bench_cli("sweep", "--backbone", "plain", "--tasks", "toy", "--lambda", "0,1",
                             "--set", "paths.results_dir=res")
    assert code == 2 and "has no semantic controller" in err


def test_sweep_through_submitit_local_jobs(tmp_path, bench_cli, monkeypatch):
    """--launcher submitit-local: each λ a submitit job (a separate process), all into one store;
    the same code path as --launcher slurm but for the executor."""
    pytest.importorskip("submitit")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bench.toml").write_text(
        '[tasks.reid]\ndatasets = ["market1501"]\n'
        '[tasks.reid.schedule.smoke]\nepochs = 1\ninput_size = [64, 32]\nbatch_size = 16\n'
        '[backbones.test_solider_swin]\nweights = "random"\n')
    code, out, err = bench_cli(
        "sweep", "--backbone", "test_solider_swin", "--tasks", "reid", "--lambda", "0,1",
        "--launcher", "submitit-local", "--timeout-min", "10", "--device", "cpu",
        "--set", "paths.results_dir=res", "--set", f'paths.cache_dir="{tmp_path / "cache"}"',
        "--set", 'profiles.smoke.precision="fp32"')
    assert code == 0, err
    [folder] = list((tmp_path / "res" / "sweeps").iterdir())
    table = pd.read_csv(folder / "sweep.csv")
    assert sorted(table["lambda"].unique()) == [0.0, 1.0]
    assert set(table["metric"]) >= {"mAP", "Rank-1"}
    runs = [p for p in (tmp_path / "res" / "runs").iterdir()]
    assert len(runs) == 2 and not any(p.name.endswith(".partial") for p in runs)
    assert list((folder / "jobs").iterdir())  # submitit's job folders (logs, pickles)
