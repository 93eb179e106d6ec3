"""Shared fixtures: isolated registries and results folders, and a CLI runner."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import adapters
import backbones
from bench import cli
from bench.registry import Registry

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture
def registries(monkeypatch):
    """Empty task and backbone registries, so tests can register throw-away entries."""
    tasks, bbs = Registry("task"), Registry("backbone")
    monkeypatch.setattr(adapters, "TASKS", tasks)
    monkeypatch.setattr(backbones, "BACKBONES", bbs)
    return tasks, bbs


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in an empty folder (no bench.toml): config comes from defaults + --set."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def tiny_run_config(tmp_path, task: str, toml: str = "", *overrides: str):
    """A config for a tiny end-to-end run of ``task`` on the random-weight test backbone,
    fp32 on the CPU, with the synthetic world and results under ``tmp_path``."""
    from bench import config

    p = tmp_path / "bench.toml"
    p.write_text(toml + '\n[backbones.test_solider_swin]\nweights = "random"\n')
    return config.load(p, ["paths.results_dir=res", f"paths.cache_dir={tmp_path / 'cache'}",
                           "run.backbone=test_solider_swin", f'run.tasks=["{task}"]',
                           "run.device=cpu", 'profiles.smoke.precision="fp32"', *overrides])


@pytest.fixture
def bench_cli(capsys):
    """Call `bench ARGS...` in-process; returns (exit code, stdout, stderr)."""

    def run(*argv: str):
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    run.json = lambda *argv: json.loads(run(*argv, "--json")[1])
    return run
