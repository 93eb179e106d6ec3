"""bench regress: passes on the golden numbers, fails on a degraded run, respects direction."""
import pytest

from bench import regress, results
from bench.errors import BenchError
from bench.results import MetricRow, RunWriter


def row(run, metric="mAP", value=50.0, higher=True, kind="synthetic", backbone="test_swin",
        task="reid", dataset="market1501", lam=0.2):
    return MetricRow(run, backbone, "swin_t", backbone.split("_")[0], lam, task, 1, dataset,
                     "test", metric, value, higher, "smoke", 0, kind)


def write(tmp_path, run, rows):
    with RunWriter(tmp_path, run, config_toml="", env={}) as w:
        w.add_rows(rows)


@pytest.fixture
def store(tmp_path):
    write(tmp_path, "20260101-000000-a", [row("20260101-000000-a", value=50.0),
                                          row("20260101-000000-a", "MR", 12.0, higher=False)])
    golden = tmp_path / "golden.csv"
    regress.write_golden(results.load(tmp_path), golden)
    return tmp_path, golden


def test_golden_passes_on_itself(store):
    root, golden = store
    cmp = regress.compare(results.load(root), "golden", 0.5, golden)
    assert cmp.ok and len(cmp.table) == 2 and set(cmp.table["status"]) == {"ok"}


def test_golden_records_the_machine_that_wrote_it(store, monkeypatch, bench_cli):
    import json

    root, golden = store
    record = regress.machine_path(golden)
    assert record.name == "golden.machine.json"
    assert json.loads(record.read_text()) == regress.machine()
    assert regress.golden_machine_differs(golden) is None
    other = {**regress.machine(), "cpu_capability": "AVX512"}
    record.write_text(json.dumps(other))
    note = regress.golden_machine_differs(golden)
    assert "written on cpu_capability AVX512" in note and "this machine has cpu_capability" in note
    code, _, err = bench_cli("regress", "--runs", str(root), "--golden", str(golden))
    assert code == 0 and "note: golden numbers written on cpu_capability AVX512" in err
    record.unlink()
    assert "no record of the machine" in regress.golden_machine_differs(golden)
    record.write_text("{not json")
    with pytest.raises(BenchError, match="golden.machine.json: unreadable machine record"):
        regress.golden_machine_differs(golden)


@pytest.mark.parametrize("mAP, mr, regressions", [
    (49.6, 12.0, 0),   # within tolerance
    (49.0, 12.0, 1),   # mAP fell by 1.0 > 0.5
    (50.0, 12.8, 1),   # miss rate rose: lower is better
    (55.0, 10.0, 0),   # both better: never a failure
    (40.0, 20.0, 2),
])
def test_degraded_results_fail(store, mAP, mr, regressions):
    root, golden = store
    run = "20260102-000000-b"  # later run: it is the one compared
    write(root, run, [row(run, value=mAP), row(run, "MR", mr, higher=False)])
    cmp = regress.compare(results.load(root), "golden", 0.5, golden)
    assert cmp.regressions == regressions


def test_synthetic_never_compared_with_published(tmp_path):
    write(tmp_path, "r", [row("r", backbone="solider_swin_t", value=10.0)])
    with pytest.raises(BenchError, match="only real-data runs count"):
        regress.compare(results.load(tmp_path), "published")
    write(tmp_path, "s", [row("s", backbone="solider_swin_t", value=10.0, kind="real", lam=None)])
    cmp = regress.compare(results.load(tmp_path), "published", 1.0)
    # published SOLIDER Swin-T Market-1501 mAP: ablation 89.9 and SOTA 91.6 -> both far above 10
    assert cmp.regressions == len(cmp.table) == 2


def test_cli_regress(store, bench_cli, monkeypatch):
    root, golden = store
    monkeypatch.chdir(root)
    code, out, err = bench_cli("regress", "--runs", str(root), "--golden", str(golden))
    assert code == 0, err
    run = "20260103-000000-c"
    write(root, run, [row(run, value=30.0), row(run, "MR", 12.0, higher=False)])
    code, out, _ = bench_cli("regress", "--runs", str(root), "--golden", str(golden), "--json")
    import json
    data = json.loads(out)
    assert code == 1 and data["regressions"] == 1
    code, _, err = bench_cli("regress", "--runs", str(root / "empty"), "--golden", str(golden))
    assert code == 2 and "no finished run" in err
