"""The `bench run` machinery, end to end, with a throw-away task and backbone."""
from pathlib import Path

import pytest

import adapters
from bench import config, results, runner
from bench.errors import BenchError

SPEC = adapters.TaskSpec(
    name="toy", version=2, title="Toy task", paper="P", reference_code="R",
    datasets=("market1501", "msmt17"),
    metrics=(adapters.Metric("mAP"), adapters.Metric("err", higher_is_better=False)),
    semantic_weight=0.2)


@pytest.fixture
def toy(registries):
    tasks, bbs = registries
    seen = []

    @adapters.register_task(SPEC)
    class Toy:
        def run(self, ctx):
            seen.append(ctx)
            ctx.log("training")
            for d in ctx.datasets:
                yield runner.Measurement(d, "test", "mAP", 0.5 + (ctx.semantic_weight or 0))
                yield runner.Measurement(d, "test", "err", 0.25)

    bbs.add("ctl_swin", object, arch="test", pretrain_method="solider", semantic_controller=True)
    bbs.add("plain_swin", object, arch="test", pretrain_method="sup")
    return seen


def cfg_for(tmp_path, *overrides, text=""):
    p = tmp_path / "bench.toml"
    p.write_text(text)
    return config.load(p, ["paths.results_dir=res", "run.tasks=[\"toy\"]",
                           "run.device=cpu", *overrides])


def test_run_writes_tidy_rows(tmp_path, toy, bench_cli):
    cfg = cfg_for(tmp_path, "run.backbone=ctl_swin", "run.seed=7",
                  text='[data.msmt17]\nroot = "/real/msmt"\n')
    run_dir = runner.run(cfg)
    df = results.load(tmp_path / "res")
    assert len(df) == 4 and (df["run_id"] == run_dir.name).all()
    r = df.set_index(["dataset", "metric"])
    assert r.loc[("market1501", "mAP"), "value"] == pytest.approx(0.7)  # official λ 0.2
    assert not r.loc[("market1501", "err"), "higher_is_better"]
    assert r.loc[("market1501", "mAP"), "data_kind"] == "synthetic"
    assert r.loc[("msmt17", "mAP"), "data_kind"] == "real"
    assert set(df["task_version"]) == {2} and set(df["seed"]) == {7}
    assert set(df["pretrain_method"]) == {"solider"} and set(df["profile"]) == {"smoke"}
    # the resolved config saved with the run loads back to the same run settings
    saved = config.load(run_dir / "config.toml")
    assert saved.run == cfg.run
    assert "[toy] training" in (run_dir / "log.txt").read_text()
    env = results.read_run_summary(run_dir)
    assert env["tasks"] == ["toy"]


@pytest.mark.parametrize("weights, expected", [
    ("pretrain", "sup"),  # the zoo entry's own method
    ("random", "random"),
    ("ours.safetensors", "valpat"),  # our checkpoint's sidecar names what trained it
    ("official.pth", "sup"),  # a foreign file: the entry it is loaded into
])
def test_rows_record_what_the_weights_are(tmp_path, toy, weights, expected):
    import torch

    from backbones.checkpoint import save_checkpoint

    save_checkpoint(torch.nn.Linear(2, 2), tmp_path / "ours.safetensors", pretrain_method="valpat")
    torch.save({"w": torch.zeros(1)}, tmp_path / "official.pth")
    run_dir = runner.run(cfg_for(tmp_path, "run.backbone=plain_swin",
                                 text=f'[backbones.plain_swin]\nweights = "{weights}"\n'))
    assert set(results.load(tmp_path / "res")["pretrain_method"]) == {expected}
    summary = results.read_run_summary(run_dir)
    assert summary["pretrain_method"] == expected
    assert summary["weights"] == (weights if weights in ("pretrain", "random")
                                  else str(tmp_path / weights))


@pytest.mark.parametrize("native", [True, False])
def test_run_records_the_precision_it_used(tmp_path, toy, monkeypatch, native):
    """smoke asks for bf16; a CPU without native bf16 runs it in fp32, and run.json says so."""
    import bench.env

    monkeypatch.setattr(bench.env, "native_cpu_bf16", lambda: native)
    run_dir = runner.run(cfg_for(tmp_path, "run.backbone=ctl_swin"))
    assert results.read_run_summary(run_dir)["precision"] == ("bf16" if native else "fp32")


@pytest.mark.parametrize("overrides, expected", [
    ((), 0.2),  # the task's official λ
    (("run.semantic_weight=0.9",), 0.9),  # --lambda wins over everything
    (("run.semantic_weight=0.0",), 0.0),  # zero is a value, not "unset"
])
def test_lambda_resolution(tmp_path, toy, overrides, expected):
    cfg = cfg_for(tmp_path, "run.backbone=ctl_swin", *overrides,
                  text="[tasks]\n")
    req = runner.request_from_config(cfg)
    assert runner.resolve_semantic_weight(cfg, req, SPEC, True) == expected


def test_lambda_precedence_task_over_backbone(tmp_path, toy):
    text = "[tasks.toy]\nsemantic_weight = 0.4\n[backbones.ctl_swin]\nsemantic_weight = 0.6\n"
    cfg = cfg_for(tmp_path, "run.backbone=ctl_swin", text=text)
    req = runner.request_from_config(cfg)
    assert runner.resolve_semantic_weight(cfg, req, SPEC, True) == 0.4
    cfg = cfg_for(tmp_path, "run.backbone=ctl_swin", text="[backbones.ctl_swin]\nsemantic_weight = 0.6\n")
    assert runner.resolve_semantic_weight(cfg, runner.request_from_config(cfg), SPEC, True) == 0.6


def test_lambda_on_backbone_without_controller(tmp_path, toy):
    cfg = cfg_for(tmp_path, "run.backbone=plain_swin")
    assert runner.resolve_semantic_weight(cfg, runner.request_from_config(cfg), SPEC, False) is None
    runner.run(cfg)
    assert results.load(tmp_path / "res")["semantic_weight"].isna().all()
    with pytest.raises(BenchError, match="has no semantic controller"):
        runner.run(cfg_for(tmp_path, "run.backbone=plain_swin", "run.semantic_weight=0.5"))


def test_cli_run_with_flags(tmp_path, toy, bench_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = bench_cli("run", "--backbone", "ctl_swin", "--tasks", "toy", "--lambda",
                               "0.5", "--seed", "3", "--device", "cpu", "--set",
                               "paths.results_dir=res")
    assert code == 0, err
    assert "run " in out and "market1501" in out
    df = results.load(tmp_path / "res")
    assert set(df["semantic_weight"]) == {0.5} and set(df["seed"]) == {3}


def test_task_reporting_bad_values_fails_the_run(tmp_path, registries):
    tasks, bbs = registries
    bbs.add("b", object)

    @adapters.register_task(adapters.TaskSpec(
        name="nan", version=1, title="", paper="", reference_code="",
        datasets=("lip",), metrics=(adapters.Metric("mIoU"),)))
    class NaNTask:
        def run(self, ctx):
            return [runner.Measurement("lip", "val", "mIoU", float("nan"))]

    cfg = cfg_for(tmp_path, "run.backbone=b", "run.tasks=[\"nan\"]")
    with pytest.raises(BenchError, match="mIoU on lip is nan"):
        runner.run(cfg)
    assert results.load(tmp_path / "res").empty
    assert [p.name.endswith(".partial") for p in (tmp_path / "res" / "runs").iterdir()] == [True]


def test_all_means_the_six_solider_tasks(registries):
    with pytest.raises(BenchError, match="task 'reid' is not implemented yet"):
        runner.resolve_tasks(["all"])
    assert adapters.SOLIDER_TASKS == ("reid", "attribute", "search", "detection", "parsing",
                                      "pose")


@pytest.mark.skipif(not Path("/proc/self/status").exists(),
                    reason="reads the resident set size from /proc")
def test_release_memory_hands_freed_heap_back():
    """Freed tensors below glibc's mmap threshold stay resident until release_memory (the
    runner calls it after every task and after pretraining)."""
    import gc

    import torch

    from bench.env import release_memory

    def rss_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024

    release_memory()  # what earlier tests left is not counted below
    blocks = [torch.ones(16384) for _ in range(4000)]  # 4,000 x 64 KiB = 250 MB on the heap
    kept = blocks[::2]  # every other block stays alive: the freed ones are holes, not the top
    del blocks
    gc.collect()
    before = rss_mb()
    release_memory()
    assert before - rss_mb() > 60, "the freed half (125 MB) should mostly leave the process"
    assert len(kept) == 2000
