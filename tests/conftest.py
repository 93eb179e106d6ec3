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


@pytest.fixture
def bench_cli(capsys):
    """Call `bench ARGS...` in-process; returns (exit code, stdout, stderr)."""

    def run(*argv: str):
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    run.json = lambda *argv: json.loads(run(*argv, "--json")[1])
    return run
