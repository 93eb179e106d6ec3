"""bench perf: backbone, eval and e2e produce their figures (speed targets live in the
benchmarks; here only that the figures are there and the comparisons are like for like)."""
import json
import time
from pathlib import Path

import pytest

from bench import perf
from bench.errors import BenchError


def test_perf_backbone_rows():
    rows = perf.perf_backbone(("swin_t",), 64, 32, batch=2, steps=1, warmup=0)
    assert [r["model"] for r in rows] == ["hcbench solider_swin_t",
                                          "timm swin_tiny_patch4_window7_224"]
    for r in rows:
        assert r["train_img_s"] > 0 and r["infer_img_s"] > 0 and r["gflop_fwd_per_img"] > 0
        assert "train_mfu_pct" not in r  # no known peak on a CPU


def test_perf_eval_reid_agrees_with_torchreid(monkeypatch):
    pytest.importorskip("torchreid")
    monkeypatch.setitem(perf.REID_SIZES, "tiny", (40, 300, 20, 4))
    rows = perf.perf_eval_reid("tiny", ref_queries=10, repeats=2)
    python = next(r for r in rows if r["reference"] == "torchreid evaluate_rank (python)")
    assert python["same_numbers"] is True and python["ref_queries"] == 10
    assert python["speedup"] > 0 and python["ours_s"] > 0
    assert all(r["same_numbers"] for r in rows)  # the Cython build too, where there is one


def test_perf_eval_keypoints_agrees_with_pycocotools():
    size = {"images": 60, "people_images": 30, "people": 120, "labelled": 70, "poses": 900}
    coco, ids, kps, scores = perf.synthetic_coco_keypoints(**size)
    anns = coco.dataset["annotations"]
    assert len(coco.getImgIds()) == 60 and len(anns) == 120 and len(ids) == 900
    assert sum(a["num_keypoints"] > 0 for a in anns) == 70
    assert len({a["image_id"] for a in anns}) == 30
    (row,) = perf.perf_eval_keypoints(size, repeats=1)
    assert row["same_numbers"] is True and 0 < row["AP"] < 1 and row["speedup"] > 0


def test_perf_eval_other_evaluators_at_small_sizes(monkeypatch):
    """Search (a per-query gallery and every frame), MR^-2 and mIoU rows: ours timed, the
    reference named, a metric in range (here at small sizes)."""
    monkeypatch.setitem(perf.SEARCH_SIZES, "cuhk_sysu", (30, 80, 10))
    monkeypatch.setitem(perf.SEARCH_SIZES, "prw", (20, 60, 0))
    monkeypatch.setitem(perf.CITYPERSONS_VAL, "images", 20)
    monkeypatch.setitem(perf.LIP_VAL, "images", 150)
    rows = {r["benchmark"]: r for w in ("cuhk_sysu", "prw", "citypersons", "lip")
            for r in perf.perf_eval(w, repeats=1)}
    assert set(rows) == {"search eval cuhk_sysu", "search eval prw",
                         "detection eval citypersons", "parsing eval lip"}
    for r in rows.values():
        assert r["ours_s"] > 0 and "not installable" in r["reference"]
    assert 0 < rows["search eval prw"]["mAP"] <= 100
    assert 0 < rows["search eval cuhk_sysu"]["mAP"] <= 100
    assert 0 < rows["detection eval citypersons"]["MR^-2 Reasonable"] < 100
    assert 40 < rows["parsing eval lip"]["mIoU"] < 80  # 70% of pixels right, 20 classes
    with pytest.raises(ValueError, match="unknown"):
        perf.perf_eval("nope")


def test_phases_attribute_nested_work(monkeypatch):
    """Data made inside pretraining counts as data; both are taken out of the task's time."""
    from bench import timing

    now = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])

    def at(t):
        now[0] = t

    with timing.recording() as rec:
        with timing.phase("task a"):  # 0 .. 20
            at(1.0)
            with timing.phase(timing.DATA):
                at(3.0)
            at(4.0)
            with timing.phase(timing.PRETRAIN):
                at(5.0)
                with timing.phase(timing.DATA):  # pretraining's own data
                    at(6.0)
                at(14.0)
            at(20.0)
        with timing.phase("task b"):  # 20 .. 30
            at(21.0)
            with timing.phase(timing.DATA):
                at(22.0)
            at(30.0)
    with timing.phase("task c"):  # no recording open: not recorded anywhere
        at(40.0)
    rows = {r["phase"]: r["seconds"] for r in rec.rows()}
    assert rows == {"data generation": 4.0, "pretraining": 9.0, "task a": 20 - 3 - 9,
                    "task b": 10 - 1}
    assert [r["phase"] for r in rec.rows()][:2] == ["data generation", "pretraining"]


def _can_reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return "VmHWM:" in Path("/proc/self/status").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not _can_reset_peak_rss(), reason="needs Linux's VmHWM and clear_refs")
def test_phases_record_their_own_peak_memory():
    """A 400 MB buffer made inside a nested phase is that phase's peak, not the outer
    one's; the outer phase's own 100 MB, before and after the inner one, is its own."""
    import numpy as np

    from bench import timing

    with timing.recording() as rec:
        with timing.phase("task a"):
            a = np.ones(100 * 2**20 // 8)  # written, so resident
            del a
            with timing.phase(timing.DATA):
                b = np.ones(400 * 2**20 // 8)
                del b
            c = np.ones(100 * 2**20 // 8)
            del c
    peaks = {r["phase"]: r.get("peak_rss_mb") for r in rec.rows()}
    assert peaks["pretraining"] is None  # never entered: no peak recorded
    assert peaks["data generation"] - peaks["task a"] > 250
    assert peaks["task a"] > 100  # at least the 100 MB buffer (and the interpreter)


def test_run_json_records_data_pretraining_and_tasks(registries, tmp_path, monkeypatch):
    """The runner's phases, with a task that makes data and pretrains (the real hooks: the
    world's writer and the engine's pretraining)."""
    import types

    import adapters
    import backbones.pretrain as pretrain
    from adapters import _engine
    from bench import runner
    from bench.data.synth import world

    tasks, bbs = registries
    bbs.add("bb", object, arch="test", pretrain_method="sup")
    spec = adapters.TaskSpec(name="toy", version=1, title="T", paper="P", reference_code="R",
                             datasets=("market1501",), metrics=(adapters.Metric("mAP"),))

    def fake_write(*a, **k):  # the world's writer; _make_locked times it as data generation
        time.sleep(0.1)
        return {}

    def fake_train(*a, **k):  # pretraining, which writes its pool first
        world._make_locked(tmp_path / "w", "smoke", 0, ["pools"], None, True)
        time.sleep(0.1)
        return types.SimpleNamespace(checkpoint=tmp_path / "bb.safetensors", steps=1)

    monkeypatch.setattr(world, "_write", fake_write)
    monkeypatch.setattr(pretrain, "train", fake_train)
    # release_memory (gc + malloc_trim) ends each phase; after a long test session its cost
    # alone can exceed the sleeps this test times
    monkeypatch.setattr(_engine, "release_memory", lambda: None)
    monkeypatch.setattr(runner.env_mod, "release_memory", lambda: None)

    @adapters.register_task(spec)
    class Toy:
        def run(self, ctx):
            world._make_locked(tmp_path / "w", "smoke", 0, ["market1501"], None, True)
            assert _engine.pretrained_here(ctx) == str(tmp_path / "bb.safetensors")
            yield runner.Measurement("market1501", "test", "mAP", 1.0)

    (tmp_path / "bench.toml").write_text("")
    from bench import cli

    code = cli.main(["run", "--quiet", "--config", str(tmp_path / "bench.toml"),
                     "--set", f"paths.results_dir={tmp_path / 'res'}",
                     "--backbone", "bb", "--tasks", "toy", "--device", "cpu"])
    assert code == 0
    (run_json,) = (tmp_path / "res" / "runs").glob("*/run.json")
    phases = json.loads(run_json.read_text())["phases"]
    rows = {r["phase"]: r["seconds"] for r in phases}
    assert list(rows) == ["data generation", "pretraining", "task toy"]
    if _can_reset_peak_rss():  # each phase that ran records its own peak memory
        assert all(r["peak_rss_mb"] > 10 for r in phases)
    assert rows["data generation"] == pytest.approx(0.2, abs=0.05)
    assert rows["pretraining"] == pytest.approx(0.1, abs=0.05)
    assert 0 <= rows["task toy"] < 0.1


def test_e2e_reports_a_failed_run():
    with pytest.raises(BenchError, match="exited with 2"):
        perf.perf_e2e(backbone="no_such_backbone", tasks="reid", cache="fresh")


def test_save_report(tmp_path):
    a = perf.save_report(tmp_path, "eval", [{"x": 1}])
    b = perf.save_report(tmp_path, "eval", [{"x": 2}])
    assert a != b and a.parent == tmp_path / "perf"
    saved = json.loads(b.read_text())
    assert saved["what"] == "eval" and saved["report"] == [{"x": 2}] and "torch" in saved["env"]


TINY_REID = ('[tasks.reid]\ndatasets = ["market1501"]\n'
             '[tasks.reid.schedule.smoke]\nepochs = 1\ninput_size = [64, 32]\nbatch_size = 16\n'
             '[backbones.test_solider_swin]\nweights = "random"\n')


@pytest.mark.slow  # ~20 s: a real `bench run` in a child process
def test_perf_e2e_times_a_real_run(bench_cli, workdir):
    (workdir / "bench.toml").write_text(TINY_REID)
    report = bench_cli.json("perf", "e2e", "--config", "bench.toml", "--backbone",
                            "test_solider_swin", "--tasks", "reid", "--device", "cpu", "--set",
                            'profiles.smoke.precision="fp32"', "--set", "paths.results_dir=res")
    rows = {r["phase"]: r["seconds"] for r in report["rows"]}
    assert list(rows) == ["data generation", "pretraining", "task reid",
                          "start-up and the rest", "total (wall)"]
    assert rows["data generation"] > 0 and rows["pretraining"] == 0  # a random-weight model
    assert rows["task reid"] > 0 and report["peak_rss_mb"] > 100
    reid = next(r for r in report["rows"] if r["phase"] == "task reid")
    if _can_reset_peak_rss():
        assert 100 < reid["peak_rss_mb"] <= report["peak_rss_mb"]
    assert report["tasks"] == ["reid"] and report["cache"] == "fresh"
    saved = json.loads(open(report["saved"]).read())
    assert saved["what"] == "e2e" and saved["report"]["rows"] == report["rows"]
    assert not (workdir / "res" / "runs").exists()  # the timed run's results stay temporary
