"""bench perf: backbone, eval and e2e produce their figures (speed targets live in the
benchmarks; here only that the figures are there and the comparisons are like for like)."""
import json
import time

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


def test_e2e_phases_attribute_nested_work():
    """Data made inside pretraining counts as data; both are taken out of the task's time."""
    ev = [{"kind": "task", "name": "a", "start": 0.0},
          {"kind": "data", "start": 1.0, "end": 3.0},
          {"kind": "pretrain", "start": 4.0, "end": 14.0},
          {"kind": "data", "start": 5.0, "end": 6.0},  # pretraining's own data
          {"kind": "task", "name": "b", "start": 20.0},
          {"kind": "data", "start": 21.0, "end": 22.0},
          {"kind": "end", "start": 30.0}]
    rows = {r["phase"]: r["seconds"] for r in perf._e2e_phases(ev)}
    assert rows == {"data generation": 4.0, "pretraining": 9.0, "task a": 20 - 3 - 9,
                    "task b": 10 - 1}


def test_e2e_child_records_data_pretraining_and_tasks(registries, tmp_path, monkeypatch):
    """The child's hooks, in this process, with a task that makes data and pretrains."""
    import adapters
    import backbones.pretrain as pretrain
    from bench import runner
    from bench.data.synth import world

    tasks, bbs = registries
    bbs.add("bb", object, arch="test", pretrain_method="sup")
    spec = adapters.TaskSpec(name="toy", version=1, title="T", paper="P", reference_code="R",
                             datasets=("market1501",), metrics=(adapters.Metric("mAP"),))

    def fake_make(*a, **k):
        time.sleep(0.05)

    def fake_train(*a, **k):
        world.make()  # pretraining's data
        time.sleep(0.1)

    monkeypatch.setattr(world, "make", fake_make)
    monkeypatch.setattr(pretrain, "train", fake_train)

    @adapters.register_task(spec)
    class Toy:
        def run(self, ctx):
            world.make()
            pretrain.train()
            yield runner.Measurement("market1501", "test", "mAP", 1.0)

    (tmp_path / "bench.toml").write_text("")
    events = tmp_path / "events.json"
    code = perf._e2e_child(str(events), ["run", "--quiet", "--config", str(tmp_path / "bench.toml"),
                                         "--set", f"paths.results_dir={tmp_path / 'res'}",
                                         "--backbone", "bb", "--tasks", "toy", "--device", "cpu"])
    assert code == 0
    assert world.make is fake_make and pretrain.train is fake_train  # hooks removed
    rec = json.loads(events.read_text())
    assert rec["backbone"] == "bb" and rec["tasks"] == ["toy"]
    rows = {r["phase"]: r["seconds"] for r in perf._e2e_phases(rec["events"])}
    assert rows["data generation"] == pytest.approx(0.1, abs=0.04)
    assert rows["pretraining"] == pytest.approx(0.1, abs=0.04)
    assert 0 <= rows["task toy"] < 0.5


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
    assert report["tasks"] == ["reid"] and report["cache"] == "fresh"
    saved = json.loads(open(report["saved"]).read())
    assert saved["what"] == "e2e" and saved["report"]["rows"] == report["rows"]
    assert not (workdir / "res" / "runs").exists()  # the timed run's results stay temporary
