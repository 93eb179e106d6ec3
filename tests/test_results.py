import json
import os
import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from bench import results
from bench.io import atomic_write_json, atomic_write_text
from bench.results import MetricRow, RunWriter


def row(run_id, **kw):
    base = dict(run_id=run_id, backbone="test_swin", arch="test", pretrain_method="random",
                semantic_weight=0.2, task="reid", task_version=1, dataset="market1501",
                split="test", metric="mAP", value=0.5, higher_is_better=True, profile="smoke",
                seed=0, data_kind="synthetic")
    base.update(kw)
    return MetricRow(**base)


def write_run(root, run_id, rows):
    with RunWriter(root, run_id, config_toml="[run]\n", env={"torch": "x"},
                   meta={"backbone": "test_swin"}) as w:
        w.log("hello")
        w.add_rows([row(run_id, **r) for r in rows])
    return w


def test_run_folder_contents_and_load(tmp_path):
    w = write_run(tmp_path, "r1", [dict(value=0.25), dict(metric="Rank-1", value=0.75,
                                                          semantic_weight=None)])
    d = tmp_path / "runs" / "r1"
    assert w.dir == d and not (tmp_path / "runs" / "r1.partial").exists()
    assert sorted(p.name for p in d.iterdir()) == ["config.toml", "env.json", "log.txt",
                                                   "metrics.csv", "run.json"]
    summary = results.read_run_summary(d)
    assert summary["status"] == "complete" and summary["rows"] == 2
    df = results.load(tmp_path)
    assert list(df.columns) == results.ROW_COLUMNS
    assert df["value"].tolist() == [0.25, 0.75]
    assert df["semantic_weight"].iloc[0] == 0.2 and pd.isna(df["semantic_weight"].iloc[1])
    assert df["higher_is_better"].dtype == bool and df["seed"].dtype == "int64"


def test_values_round_trip_exactly(tmp_path):
    v = 0.1 + 0.2  # not representable in a short decimal
    write_run(tmp_path, "r1", [dict(value=v)])
    assert results.load(tmp_path)["value"].iloc[0] == v


def test_empty_store_has_the_schema(tmp_path):
    df = results.load(tmp_path)
    assert df.empty and list(df.columns) == results.ROW_COLUMNS


def test_failed_run_stays_partial_and_invisible(tmp_path):
    with pytest.raises(RuntimeError):
        with RunWriter(tmp_path, "bad", config_toml="", env={}) as w:
            w.add_rows([row("bad")])
            raise RuntimeError("boom")
    assert (tmp_path / "runs" / "bad.partial" / "metrics.csv").is_file()
    assert "boom" in (tmp_path / "runs" / "bad.partial" / "log.txt").read_text()
    assert results.load(tmp_path).empty


def test_damaged_run_is_reported_and_skipped(tmp_path):
    write_run(tmp_path, "good", [dict()])
    write_run(tmp_path, "bad", [dict()])
    (tmp_path / "runs" / "bad" / "metrics.csv").write_text("run_id,value\nbad,1\n")
    write_run(tmp_path, "norun", [dict()])
    (tmp_path / "runs" / "norun" / "run.json").unlink()
    with pytest.warns(UserWarning) as caught:
        df = results.load(tmp_path)
    messages = sorted(str(w.message) for w in caught)
    assert "missing columns" in messages[0] and "damaged run (no run.json)" in messages[1]
    assert df["run_id"].tolist() == ["good"]
    assert sorted(os.path.basename(s) for s in df.attrs["skipped"]) == ["bad", "norun"]


def test_rows_of_another_run_rejected(tmp_path):
    with RunWriter(tmp_path, "a", config_toml="", env={}) as w:
        with pytest.raises(ValueError, match="given to run 'a'"):
            w.add_rows([row("b")])


def test_run_ids_are_unique_and_sortable():
    ids = {results.new_run_id("solider_swin_s", when=0) for _ in range(50)}
    assert len(ids) == 50
    assert all(i.startswith("19700101-000000-solider_swin_s-") for i in ids)


# A process killed at the worst moment of a write: after the new bytes are on disk
# but before the rename.  The target must still hold the old, complete content.
KILL_DURING_WRITE = textwrap.dedent("""
    import os, signal, sys
    import bench.io as io
    target, when = sys.argv[1], sys.argv[2]
    real = {"fsync": os.fsync, "replace": os.replace}
    def die(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)
    if when == "fsync":
        io.os.fsync = die
    else:
        io.os.replace = die
    io.atomic_write_text(target, "NEW" * 1_000_000)
""")


@pytest.mark.parametrize("when", ["fsync", "replace"])
def test_sigkill_mid_write_leaves_no_partial_file(tmp_path, when):
    target = tmp_path / "metrics.csv"
    atomic_write_text(target, "OLD,complete\n")
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_WRITE, str(target), when])
    assert proc.returncode == -signal.SIGKILL
    assert target.read_text() == "OLD,complete\n"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "metrics.csv"]
    assert all(name.startswith(".tmp-") for name in leftovers)


def test_sigkill_mid_run_never_shows_a_partial_run(tmp_path):
    script = textwrap.dedent("""
        import os, signal, sys
        from bench.results import RunWriter, MetricRow
        w = RunWriter(sys.argv[1], "killed", config_toml="", env={})
        w.add_rows([MetricRow("killed", "b", "a", "random", None, "reid", 1, "market1501",
                              "test", "mAP", 1.0, True, "smoke", 0, "synthetic")])
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)])
    assert proc.returncode == -signal.SIGKILL
    assert (tmp_path / "runs" / "killed.partial").is_dir()
    assert results.load(tmp_path).empty


def test_atomic_json_and_failed_write_cleans_up(tmp_path, monkeypatch):
    p = atomic_write_json(tmp_path / "a" / "x.json", {"b": 1, "a": [1, 2]})
    assert json.loads(p.read_text()) == {"a": [1, 2], "b": 1}

    def fail(*a):
        raise OSError("disk full")

    monkeypatch.setattr("bench.io.os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(p, "new")
    assert json.loads(p.read_text()) == {"a": [1, 2], "b": 1}
    assert [q.name for q in p.parent.iterdir()] == ["x.json"]


def test_atomic_writes_get_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        import importlib
        import bench.io
        importlib.reload(bench.io)
        p = bench.io.atomic_write_text(tmp_path / "x.txt", "hi")
        assert (p.stat().st_mode & 0o777) == 0o644
    finally:
        os.umask(old)
        importlib.reload(bench.io)
