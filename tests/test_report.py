"""bench report: one self-contained HTML page per run."""
import pytest

from bench import report
from bench.errors import BenchError
from bench.results import MetricRow, RunWriter


def test_report_page(tmp_path, bench_cli, monkeypatch):
    rid = "20260101-000000-solider_swin_t-abc"
    with RunWriter(tmp_path, rid, config_toml="[run]\nseed = 0\n", env={"torch": "2.x"},
                   meta={"backbone": "solider_swin_t", "profile": "smoke", "tasks": ["reid"]}) as w:
        w.log("hello <log>")
        w.add_rows([MetricRow(rid, "solider_swin_t", "swin_t", "solider", 0.2, "reid", 1,
                              "market1501", "test", "mAP", 12.5, True, "smoke", 0, "synthetic")])
    monkeypatch.chdir(tmp_path)
    code, out, err = bench_cli("report", "20260101", "--set", f"paths.results_dir={tmp_path}")
    assert code == 0, err
    page = (tmp_path / "runs" / rid / "report.html").read_text()
    assert "12.5" in page and "89.9 (ablation), 91.6 (sota)" in page  # published beside
    assert "data:image/png;base64," in page and "hello &lt;log&gt;" in page
    with pytest.raises(BenchError, match="no finished run"):
        report.find_run(tmp_path, "2030")
