"""Resume: an interrupted run continues from its saved config and loses nothing."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

import adapters
from bench import config, results, runner
from bench.errors import BenchError


def test_resume_skips_finished_tasks(tmp_path, registries, monkeypatch):
    tasks, bbs = registries
    calls = []

    def make(name, fail_once):
        @adapters.register_task(adapters.TaskSpec(
            name=name, version=1, title="", paper="", reference_code="",
            datasets=("market1501",), metrics=(adapters.Metric("mAP"),)))
        class T:
            def run(self, ctx):
                calls.append(name)
                if fail_once and calls.count(name) == 1:
                    raise KeyboardInterrupt  # the user pressed Ctrl-C during this task
                yield runner.Measurement("market1501", "test", "mAP", 1.0 if name == "a" else 2.0)

    make("a", False)
    make("b", True)
    bbs.add("bb", object, arch="test")
    p = tmp_path / "bench.toml"
    p.write_text("")
    monkeypatch.chdir(tmp_path)
    cfg = config.load(p, ["paths.results_dir=res", 'run.tasks=["a", "b"]', "run.backbone=bb",
                          "run.device=cpu", "run.seed=5"])
    with pytest.raises(KeyboardInterrupt):
        runner.run(cfg)
    assert results.load(tmp_path / "res").empty  # nothing finished yet
    [partial] = results.unfinished_runs(tmp_path / "res")
    # resuming uses the run's own saved config, whatever the current one says
    other = config.load(p, ["paths.results_dir=res", "run.seed=99"])
    run_dir = runner.run(other, resume="")
    assert calls == ["a", "b", "b"]  # a was not run again
    df = results.load(tmp_path / "res")
    assert sorted(df["task"]) == ["a", "b"] and set(df["seed"]) == {5}
    assert run_dir.name == partial.name[: -len(".partial")]
    assert "resumed; tasks done already: a" in (run_dir / "log.txt").read_text()
    with pytest.raises(BenchError, match="no unfinished run"):
        runner.run(other, resume="")


RUN = textwrap.dedent("""
    import sys
    from bench import config, runner
    args = [a for a in sys.argv[2:] if a != "--resume"]
    cfg = config.load(sys.argv[1], args)
    runner.run(cfg, resume="" if "--resume" in sys.argv else None)
""")


def test_sigkill_during_training_then_resume_gives_the_same_numbers(tmp_path):
    """A reid run killed after epoch 1 of 2 and resumed ends with the metrics of an
    uninterrupted run (deterministic CPU)."""
    toml = tmp_path / "bench.toml"
    toml.write_text('[tasks.reid]\ndatasets = ["market1501"]\n'
                    '[tasks.reid.schedule.smoke]\nepochs = 2\ninput_size = [64, 32]\nbatch_size = 16\n'
                    '[backbones.test_solider_swin]\nweights = "random"\n')
    common = [f"paths.cache_dir={tmp_path / 'cache'}", "run.backbone=test_solider_swin",
              'run.tasks=["reid"]', "run.device=cpu", 'profiles.smoke.precision="fp32"']
    env = {**os.environ, "PYTHONHASHSEED": "0"}

    def go(results_dir, *extra, kill=None):
        e = dict(env)
        if kill:
            e["HCBENCH_FAULT_KILL_AFTER_EPOCH"] = kill
        return subprocess.run([sys.executable, "-c", RUN, str(toml), f"paths.results_dir={results_dir}",
                               *common, *extra], env=e, capture_output=True, text=True)

    ref = go(tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-2000:]
    killed = go(tmp_path / "cut", kill="reid:1")
    assert killed.returncode == -signal.SIGKILL
    assert results.load(tmp_path / "cut").empty  # the store never shows the partial run
    resumed = go(tmp_path / "cut", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = results.load(tmp_path / "ref").set_index("metric")["value"]
    b = results.load(tmp_path / "cut").set_index("metric")["value"]
    assert a.to_dict() == pytest.approx(b.to_dict(), abs=1e-9)
    log = next((tmp_path / "cut" / "runs").iterdir()) / "log.txt"
    assert "resuming from the end of epoch 1" in log.read_text()
