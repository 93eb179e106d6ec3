"""bench perf backbone and eval produce their figures (speed targets live in the benchmarks)."""
from bench import perf


def test_perf_backbone_rows():
    rows = perf.perf_backbone(("swin_t",), 64, 32, batch=2, steps=1, warmup=0)
    assert [r["model"] for r in rows] == ["hcbench solider_swin_t",
                                          "timm swin_tiny_patch4_window7_224"]
    for r in rows:
        assert r["train_img_s"] > 0 and r["infer_img_s"] > 0 and r["gflop_fwd_per_img"] > 0
        assert "train_mfu_pct" not in r  # no known peak on a CPU


def test_perf_eval_reid_agrees_with_torchreid(monkeypatch):
    monkeypatch.setitem(perf.REID_SIZES, "tiny", (40, 300, 20, 4))
    row = perf.perf_eval_reid("tiny", ref_queries=10)
    assert row["same_numbers"] is True and row["ref_queries"] == 10
    assert row["speedup"] > 0
