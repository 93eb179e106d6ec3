"""Text-based person search (issue 6): retrieval metrics by hand, IRRA's SDM loss, the
image-text head taken from a VAL-PAT checkpoint, and a tiny end-to-end run + `bench eval`."""
from __future__ import annotations

import dataclasses
import math
import types

import numpy as np
import pytest
import torch

import adapters
from adapters import text_search as ts
from bench import results, runner
from bench.metrics.text_search import chance, retrieval_metrics
from conftest import tiny_run_config
from bench.data.synth.world import default_dir


# --------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------
def test_metrics_by_hand_with_several_positives():
    # query 0 (pid 1): ranking g2(1) g0(2) g3(1) g1(1) -> positives at ranks 1, 3, 4
    # query 1 (pid 2): ranking g3(1) g1(1) g0(2) g2(1) -> its one positive at rank 3
    sim = torch.tensor([[0.8, 0.1, 0.9, 0.3],
                        [0.2, 0.5, 0.1, 0.7]])
    q, g = [1, 2], [2, 1, 1, 1]
    r = retrieval_metrics(sim, q, g, ranks=(1, 2, 3))
    ap0, ap1 = (1 / 1 + 2 / 3 + 3 / 4) / 3, 1 / 3
    assert r.ap.tolist() == pytest.approx([ap0, ap1], abs=1e-12)
    assert r.mAP == pytest.approx((ap0 + ap1) / 2, abs=1e-12)
    assert r.mINP == pytest.approx((3 / 4 + 1 / 3) / 2, abs=1e-12)
    assert r.recall == {1: 0.5, 2: 0.5, 3: 1.0}
    assert (r.num_queries, r.num_skipped) == (2, 0)


def test_ties_rank_the_lower_gallery_index_first():
    sim = torch.tensor([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]])
    r = retrieval_metrics(sim, [7, 8], [8, 7, 7], ranks=(1,))
    # query 7: order g0(8) g1(7) g2(7): AP (1/2 + 2/3)/2, INP 2/3; query 8: g0 first: AP 1
    assert r.ap.tolist() == pytest.approx([(1 / 2 + 2 / 3) / 2, 1.0], abs=1e-12)
    assert r.recall[1] == 0.5 and r.mINP == pytest.approx((2 / 3 + 1) / 2)


def test_queries_without_a_positive_are_left_out_and_counted():
    sim = torch.tensor([[0.9, 0.1], [0.3, 0.2]])
    r = retrieval_metrics(sim, [1, 5], [1, 2])
    assert (r.num_queries, r.num_skipped, r.mAP) == (1, 1, 1.0)
    with pytest.raises(ValueError, match="no query has a positive"):
        retrieval_metrics(sim, [5, 6], [1, 2])
    with pytest.raises(ValueError, match="2-D"):
        retrieval_metrics(torch.zeros(3), [1], [1])


def _brute(sim, q, g, ks):
    """IRRA's ``rank`` in plain Python (no ties in the data)."""
    rec, aps, inps = {k: 0 for k in ks}, [], []
    for i in range(len(q)):
        order = np.argsort(-sim[i], kind="stable")
        m = (np.asarray(g)[order] == q[i]).astype(float)
        for k in ks:
            rec[k] += m[:k].any()
        hits = np.cumsum(m)
        aps.append(float((hits / np.arange(1, len(m) + 1) * m).sum() / m.sum()))
        inps.append(m.sum() / (np.flatnonzero(m)[-1] + 1))
    return {k: v / len(q) for k, v in rec.items()}, float(np.mean(aps)), float(np.mean(inps))


def test_matches_a_plain_reference_and_chunking_changes_nothing():
    rng = np.random.default_rng(0)
    g = rng.integers(0, 12, 60).tolist()
    q = [g[i] for i in rng.integers(0, 60, 45)]
    sim = rng.standard_normal((45, 60))
    rec, mAP, mINP = _brute(sim, q, g, (1, 5, 10))
    for chunk in (1 << 24, 61, 1):
        r = retrieval_metrics(sim, q, g, chunk_elems=chunk)
        assert r.recall == pytest.approx(rec, abs=1e-12)
        assert (r.mAP, r.mINP) == pytest.approx((mAP, mINP), abs=1e-12)
    c = chance(q, g, draws=5)
    assert 0 < c["R@1"] < c["R@10"] < 1 and 0 < c["mAP"] < 0.5


# --------------------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------------------
def test_sdm_loss_by_hand():
    e = torch.eye(2)
    s, eps = 5.0, 1e-8
    a = math.exp(s) / (math.exp(s) + 1)  # each row's softmax: [a, 1-a]
    row = a * (math.log(a) - math.log(1 + eps)) + (1 - a) * (math.log(1 - a) - math.log(eps))
    got = ts.sdm_loss(e, e, torch.tensor([3, 4]), s)
    assert got.item() == pytest.approx(2 * row, rel=1e-5)  # image->text plus text->image
    # same identity: the target is uniform, so identical embeddings are a perfect match
    same = ts.sdm_loss(torch.ones(2, 3), torch.ones(2, 3), torch.tensor([3, 3]), s)
    assert abs(same.item()) < 1e-6


# --------------------------------------------------------------------------------------
# The image-text head: from a VAL-PAT checkpoint, or from scratch
# --------------------------------------------------------------------------------------
def _ctx(tmp_path, weights, logs):
    from bench import config

    p = tmp_path / "bench.toml"
    p.write_text(f'[backbones.test_sup_swin]\nweights = "{weights}"\n')
    cfg = config.load(p, [f"paths.cache_dir={tmp_path / 'cache'}"])
    return types.SimpleNamespace(config=cfg, backbone="test_sup_swin", log=logs.append)


def test_head_comes_from_the_checkpoint_when_there_is_one(tmp_path):
    from backbones import create_backbone
    from backbones.checkpoint import save_checkpoint
    from backbones.pretrain.valpat import ITCHead, itc_head_path, save_itc_head, text_model_cfg

    torch.manual_seed(0)
    bb = create_backbone("test_sup_swin")
    ckpt = save_checkpoint(bb, tmp_path / "test_sup_swin.safetensors", pretrain_method="valpat")
    saved = ITCHead(bb.num_features, text_model_cfg("test"))
    save_itc_head(saved, itc_head_path(ckpt))
    s = ts.SCHEDULES["smoke"]
    logs: list[str] = []
    head, pretrained = ts.build_head(_ctx(tmp_path, ckpt, logs), s, bb.num_features)
    assert pretrained and "from " + str(itc_head_path(ckpt)) in logs[-1]
    torch.testing.assert_close(head.image_proj.weight, saved.image_proj.weight)
    scratch = dataclasses.replace(s, text_init="scratch", text_model="test")
    head, pretrained = ts.build_head(_ctx(tmp_path, ckpt, logs), scratch, bb.num_features)
    assert not pretrained and "text_init = scratch" in logs[-1]
    head, pretrained = ts.build_head(_ctx(tmp_path, "random", logs), s, bb.num_features)
    assert not pretrained and head.text.embed_dim == 128  # the smoke schedule's small tower
    from bench.errors import BenchError
    with pytest.raises(BenchError, match="image projection takes 256 features"):
        ts.build_head(_ctx(tmp_path, ckpt, logs), s, 64)


# --------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------
TINY = ('[tasks.text_search.schedule.smoke]\nepochs = 1\ninput_size = [64, 32]\n'
        'batch_size = 16\ntext_model = "test"\n')


def test_registered_as_an_extra_task():
    assert "text_search" in adapters.EXTRA_TASKS and "text_search" not in adapters.SOLIDER_TASKS
    assert adapters.TASKS.get("text_search").obj is ts.TextSearch
    assert [s.name for s in runner.resolve_tasks(["all"])] == list(adapters.SOLIDER_TASKS)


def test_end_to_end_tiny_run_and_bench_eval(tmp_path, bench_cli, capsys):
    cfg = tiny_run_config(tmp_path, "text_search", TINY)
    run_dir = runner.run(cfg)
    capsys.readouterr()  # the run's summary table
    df = results.load(tmp_path / "res")
    got = dict(zip(df["metric"], df["value"]))
    assert set(got) == {"R@1", "R@5", "R@10", "mAP", "mINP"}
    assert set(df["dataset"]) == {"cuhk_pedes"} and set(df["task"]) == {"text_search"}
    assert all(0 <= v <= 100 for v in got.values()) and got["R@1"] <= got["R@5"] <= got["R@10"]
    log = (run_dir / "log.txt").read_text()
    assert "chance R@1" in log and "from scratch (no image-text head" in log
    pred = run_dir / "text_search" / "cuhk_pedes_predictions.npz"
    root = default_dir(tmp_path / "cache", "smoke", 0) / "CUHK-PEDES"
    again = bench_cli.json("eval", "text_search", str(pred), "cuhk_pedes", str(root),
                           "--set", f"paths.cache_dir={tmp_path / 'cache'}")
    for k, v in got.items():
        assert again["metrics"][k] == pytest.approx(v, abs=1e-4)
