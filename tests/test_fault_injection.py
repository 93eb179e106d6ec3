"""Fault injection (issue 15): SIGKILL at several points of pretraining and fine-tuning, then
resume; the result equals an uninterrupted run's and the store never shows a partial run.

The points are those of ``bench/faults.py`` (``HCBENCH_FAULT_KILL``).  Deterministic CPU
mode: fp32, fixed seeds, one process per run.  The kill after a saved fine-tuning epoch is
also in ``tests/test_resume.py``; the slower points are marked ``slow``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from bench import results

PRETRAIN = """
import sys
from backbones.pretrain import profile_config, train
from bench import config
cfg = profile_config("solider", "smoke", arch="test", epochs=2, batch_size=4, max_images=16,
                     global_size=(64, 32), local_size=(32, 16), n_local=2, out_dim=64,
                     head_hidden=32, head_bottleneck=16, drop_path=0.0, save_every=3)
train(cfg, sys.argv[1], config.load(None, [f'paths.cache_dir="{sys.argv[2]}"']), device="cpu")
"""

FINETUNE = """
import sys
from bench import config, runner
args = [a for a in sys.argv[2:] if a != "--resume"]
runner.run(config.load(sys.argv[1], args), resume="" if "--resume" in sys.argv else None)
"""


def _env(kill: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HCBENCH_FAULT")}
    env.update(PYTHONHASHSEED="0", OMP_NUM_THREADS="1")
    if kill:
        env["HCBENCH_FAULT_KILL"] = kill
    return env


def _pretrain(out, cache, kill=None):
    return subprocess.run([sys.executable, "-c", PRETRAIN, str(out), str(cache)], env=_env(kill),
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def pretrain_ref(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    ref = _pretrain(root / "ref", root / "cache")
    assert ref.returncode == 0, ref.stderr[-2000:]
    return root


# 8 optimizer steps, state saved at steps 3, 6 and 8: a kill before any save (2), right after
# one (3), mid-epoch between saves (5) and in the last stretch (7)
@pytest.mark.parametrize("step", [
    5, pytest.param(2, marks=pytest.mark.slow), pytest.param(3, marks=pytest.mark.slow),
    pytest.param(7, marks=pytest.mark.slow)])
def test_pretraining_killed_then_resumed_ends_in_the_same_state(pretrain_ref, step):
    from safetensors.torch import load_file

    root = pretrain_ref
    out = root / f"cut{step}"
    killed = _pretrain(out, root / "cache", kill=f"pretrain:step:{step}")
    assert killed.returncode == -signal.SIGKILL
    assert not list(out.glob("*.safetensors"))  # no checkpoint from a killed run
    resumed = _pretrain(out, root / "cache")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = load_file(str(next((root / "ref").glob("*.safetensors"))))
    b = load_file(str(next(out.glob("*.safetensors"))))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    # the log holds each step once, as the uninterrupted run's does
    steps = [json.loads(ln)["step"] for ln in (out / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))


@pytest.fixture(scope="module")
def finetune(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    toml = root / "bench.toml"
    toml.write_text('[tasks.reid]\ndatasets = ["market1501"]\n'
                    '[tasks.reid.schedule.smoke]\nepochs = 2\ninput_size = [64, 32]\n'
                    'batch_size = 16\n[backbones.test_solider_swin]\nweights = "random"\n')
    common = [f"paths.cache_dir={root / 'cache'}", "run.backbone=test_solider_swin",
              'run.tasks=["reid"]', "run.device=cpu", 'profiles.smoke.precision="fp32"']

    def go(results_dir, *extra, kill=None):
        return subprocess.run([sys.executable, "-c", FINETUNE, str(toml),
                               f"paths.results_dir={results_dir}", *common, *extra],
                              env=_env(kill), capture_output=True, text=True)

    ref = go(root / "ref")
    assert ref.returncode == 0, ref.stderr[-2000:]
    return root, go


@pytest.mark.slow
@pytest.mark.parametrize("point", ["reid:step:3", "reid:eval"])
def test_finetuning_killed_then_resumed_gives_the_same_numbers(finetune, point):
    root, go = finetune
    cut = root / point.replace(":", "_")
    killed = go(cut, kill=point)
    assert killed.returncode == -signal.SIGKILL
    assert results.load(cut).empty  # the store never shows the partial run
    resumed = go(cut, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = results.load(root / "ref").set_index("metric")["value"].to_dict()
    b = results.load(cut).set_index("metric")["value"].to_dict()
    assert a == pytest.approx(b, abs=1e-9)
