"""Unsupervised reID (Cluster Contrast): DBSCAN, Jaccard distance, cluster memory, sampler,
a re-labelling training loop with its resume, and a tiny end-to-end run."""
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import adapters
from adapters import reid_unsup as ru
from bench import results, runner
from bench.data.reid import ReIDImage
from bench.errors import BenchError
from bench.metrics.reid import jaccard_distance
from conftest import tiny_run_config
from bench.data.synth.world import default_dir


# --------------------------------------------------------------------------------------
# DBSCAN
# --------------------------------------------------------------------------------------
def line(*xs):
    """Distance matrix of points on a line."""
    x = np.asarray(xs, dtype=float)
    return np.abs(x[:, None] - x[None, :])


def test_dbscan_two_groups_and_an_outlier():
    d = line(0, 0.1, 0.2, 5, 5.1, 5.2, 10)
    assert ru.dbscan(d, eps=0.15, min_samples=3).tolist() == [0, 0, 0, 1, 1, 1, -1]
    # a torch matrix works the same; nothing is dense enough -> all outliers
    assert ru.dbscan(torch.tensor(d), eps=0.15, min_samples=4).tolist() == [-1] * 7


def test_dbscan_counts_the_point_itself_and_eps_is_inclusive():
    d = line(0, 1, 3)
    assert ru.dbscan(d, eps=1.0, min_samples=2).tolist() == [0, 0, -1]  # d == eps: neighbours
    assert ru.dbscan(d, eps=0.999, min_samples=2).tolist() == [-1, -1, -1]
    assert ru.dbscan(d, eps=0.5, min_samples=1).tolist() == [0, 1, 2]  # every point is core


def test_dbscan_border_points_and_numbering():
    # cores 1 and 2 (3 neighbours each, themselves included); 0 and 3 are border points
    # reached from them; 4.5 is out of reach of any core
    d = line(0, 1, 2, 3, 4.5)
    assert ru.dbscan(d, eps=1.0, min_samples=3).tolist() == [0, 0, 0, 0, -1]
    # 1.5 is a border point of two clusters: it joins the one numbered first, and clusters
    # are numbered by their lowest index, whatever the order of the points
    x = [0, 0.2, 0.4, 0.6, 1.5, 2.4, 2.6, 2.8, 3.0]
    assert ru.dbscan(line(*x), eps=0.95, min_samples=4).tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    x = [2.4, 0, 1.5, 2.6, 0.2, 2.8, 0.4, 3.0, 0.6]
    assert ru.dbscan(line(*x), eps=0.95, min_samples=4).tolist() == [0, 1, 0, 0, 1, 0, 1, 0, 1]


def test_dbscan_rejects_non_square():
    with pytest.raises(ValueError, match="square"):
        ru.dbscan(np.zeros((2, 3)), 0.5, 2)


def test_dbscan_matches_sklearn():
    sk = pytest.importorskip("sklearn.cluster")
    rng = np.random.default_rng(0)
    for t in range(60):
        n = int(rng.integers(2, 50))
        if t % 2:
            x = rng.normal(size=(n, 2)) * rng.uniform(0.3, 2)
            d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
        else:  # many ties
            a = np.round(rng.random((n, n)), 1)
            d = np.triu(a, 1) + np.triu(a, 1).T
        eps, ms = float(rng.choice([0.2, 0.5, 1.0])), int(rng.integers(1, 6))
        ref = sk.DBSCAN(eps=eps, min_samples=ms, metric="precomputed").fit_predict(d)
        np.testing.assert_array_equal(ru.dbscan(d, eps, ms), ref)


# --------------------------------------------------------------------------------------
# Jaccard distance, pseudo-labels, centroids
# --------------------------------------------------------------------------------------
def blobs(n_per=(6, 6, 6), dim=8, spread=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(len(n_per), dim, generator=g), dim=1) * 3
    x = torch.cat([c + spread * torch.randn(n, dim, generator=g) for c, n in zip(centres, n_per)])
    return F.normalize(x, dim=1), np.repeat(np.arange(len(n_per)), n_per)


def test_jaccard_distance_sanity():
    x, y = blobs()
    d = jaccard_distance(x, k1=5, k2=2)
    assert d.shape == (18, 18) and d.dtype == torch.float32
    torch.testing.assert_close(d, d.T, atol=1e-6, rtol=0)
    assert torch.diagonal(d).abs().max() < 1e-6
    assert d.min() >= 0 and d.max() <= 1
    same = torch.as_tensor(y[:, None] == y[None, :])
    assert d[same].max() < 0.7 and d[~same].min() > 0.99  # no shared neighbours: 1
    # the labels of Cluster Contrast recover the blobs (numbered by first appearance)
    assert ru.pseudo_labels(x, eps=0.6, min_samples=4, k1=5, k2=2).tolist() == y.tolist()
    # an isolated point is an outlier
    far = torch.cat([x, F.normalize(torch.ones(1, 8), dim=1) * -1])
    assert ru.pseudo_labels(far, eps=0.6, min_samples=4, k1=5, k2=2)[-1] == -1


def test_centroids_are_normalised_means_without_outliers():
    f = torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 5.0], [9.0, 9.0]])
    c = ru.centroids(f, np.array([0, 0, 1, -1]))
    torch.testing.assert_close(c, torch.tensor([[0.5 ** 0.5, 0.5 ** 0.5], [0.0, 1.0]]))
    assert ru.centroids(f, np.array([-1, -1, -1, -1])).shape == (0, 2)


# --------------------------------------------------------------------------------------
# Cluster memory
# --------------------------------------------------------------------------------------
R = 0.5 ** 0.5


def _memory(update):
    m = ru.ClusterMemory(2, temperature=0.05, momentum=0.1, update=update)
    m.reset(torch.tensor([[3.0, 0.0], [0.0, 1.0]]))  # normalised on reset
    return m


def _unit(v):
    v = torch.tensor(v, dtype=torch.float32)
    return v / v.norm()


def test_cluster_memory_loss_is_cluster_nce():
    m = _memory("hard")
    feat = torch.tensor([[2.0, 2.0], [1.0, 0.0], [0.6, 0.8]], requires_grad=True)
    y = torch.tensor([0, 0, 1])
    loss = m(feat, y)
    sims = [(R, R), (1.0, 0.0), (0.6, 0.8)]
    expect = sum(math.log(sum(math.exp(s / 0.05) for s in row)) - row[t] / 0.05
                 for row, t in zip(sims, (0, 0, 1))) / 3
    assert loss.item() == pytest.approx(expect, rel=1e-5)  # with the memory before the update
    loss.backward()
    assert feat.grad is not None and feat.grad.abs().sum() > 0
    assert not m.features.requires_grad


@pytest.mark.parametrize("update, c0", [
    ("hard", 0.1 * torch.tensor([1.0, 0.0]) + 0.9 * torch.tensor([R, R])),  # least similar
    ("mean", 0.1 * torch.tensor([1.0, 0.0]) + 0.9 * torch.tensor([(1 + R) / 2, R / 2])),
    ("instance", 0.1 * _unit([0.1 + 0.9 * R, 0.9 * R]) + 0.9 * torch.tensor([1.0, 0.0])),
])
def test_cluster_memory_momentum_update(update, c0):
    m = _memory(update)
    m(torch.tensor([[2.0, 2.0], [1.0, 0.0], [0.6, 0.8]]), torch.tensor([0, 0, 1]))
    torch.testing.assert_close(m.features[0], c0 / c0.norm())
    torch.testing.assert_close(m.features[1], _unit([0.9 * 0.6, 0.1 + 0.9 * 0.8]))
    with pytest.raises(ValueError, match="hard, mean or instance"):
        ru.ClusterMemory(2, update="median")


# --------------------------------------------------------------------------------------
# Sampler over pseudo-labels
# --------------------------------------------------------------------------------------
def test_cluster_sampler_groups_cameras_and_determinism():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, -1, 2, 2, 2, 2, 2, -1])
    cams = np.array([0, 1, 1, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 0])
    calls = []
    s = ru.ClusterSampler(lambda e: calls.append(e) or labels, cams, batch_size=8, k=4, iters=5,
                          seed=1)
    with pytest.raises(RuntimeError, match="set_epoch"):
        iter(s)
    s.set_epoch(0)
    order = list(s)
    assert calls == [0] and len(order) == len(s) == 40
    for g in range(0, 40, 4):
        group = np.array(order[g:g + 4])
        assert len(set(labels[group])) == 1 and labels[group[0]] >= 0  # one cluster, no outlier
        others = cams[labels == labels[group[0]]]
        if (others != cams[group[0]]).any():  # other cameras first
            assert (cams[group[1:]] != cams[group[0]]).all()
    assert len({labels[i] for i in order}) == 3
    s.set_epoch(0)
    assert list(s) == order
    s.set_epoch(1)
    assert list(s) != order and calls == [0, 0, 1]
    s.relabel = lambda e: np.full(len(cams), -1)
    s.set_epoch(2)
    assert list(s) == []  # no cluster: an epoch that trains nothing
    with pytest.raises(BenchError, match="not a multiple"):
        ru.ClusterSampler(lambda e: labels, cams, batch_size=6, k=4, iters=1)


def test_schedules():
    p = ru.SCHEDULES["paper"]
    assert (p.k1, p.k2, p.min_samples, p.eps) == (30, 6, 4, None)
    assert (ru.REFERENCE_EPS, ru.REFERENCE_ITERS) == ({"market1501": 0.6, "msmt17": 0.7},
                                                      {"market1501": 200, "msmt17": 400})
    assert (p.batch_size, p.k, p.lr, p.weight_decay, p.epochs, p.step_size, p.gamma) == \
        (256, 16, 3.5e-4, 5e-4, 50, 20, 0.1)
    assert (p.momentum, p.temperature, p.memory_update, p.input_size) == \
        (0.1, 0.05, "hard", (256, 128))
    assert ru.SPEC.name not in adapters.SOLIDER_TASKS and ru.SPEC.name in adapters.EXTRA_TASKS
    assert adapters.TASKS.get("reid_unsup").obj is ru.ReIDUnsup
    assert {m.name for m in ru.SPEC.metrics} >= {"mAP", "Rank-1", "frozen mAP", "frozen Rank-1"}


# --------------------------------------------------------------------------------------
# The training loop on a tiny hand-made dataset (in-process, fast)
# --------------------------------------------------------------------------------------
def tiny_data(tmp_path, n_ids=3, per_id=4):
    """Solid-colour 'people' with noise: n_ids identities x per_id images, 2 cameras."""
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 255, size=(n_ids, 3))
    images = []
    for pid in range(n_ids):
        for j in range(per_id):
            a = np.clip(colours[pid] + rng.normal(0, 12, size=(64, 32, 3)), 0, 255)
            path = tmp_path / f"{pid + 1:04d}_c{j % 2 + 1}s1_{j:06d}_00.jpg"
            Image.fromarray(a.astype(np.uint8)).save(path)
            images.append(ReIDImage(str(path), pid + 1, j % 2))
    return SimpleNamespace(name="market1501", train=tuple(images), query=tuple(images[::per_id]),
                           gallery=tuple(images))


def fake_ctx(work_dir):
    from bench.console import Output

    lines = []
    work_dir.mkdir(exist_ok=True)
    return SimpleNamespace(work_dir=work_dir, seed=0, device="cpu", precision="fp32",
                           spec=ru.SPEC, out=Output(quiet=True), log=lines.append,
                           semantic_weight=0.2), lines


TINY = dataclasses.replace(ru.SCHEDULES["smoke"], input_size=(32, 16), epochs=2, iters=1,
                           batch_size=4, k=2, eps=0.7, min_samples=2, k1=4, k2=2,
                           eval_batch_size=16)


def train_tiny(tmp_path, work, s=TINY):
    from backbones import create_backbone

    ctx, lines = fake_ctx(tmp_path / work)
    gen = ru.seed_everything(0)
    model = ru.UnsupReIDModel(create_backbone("test_solider_swin", semantic_weight=0.2), 0.2)
    data = tiny_data(tmp_path)
    ru.ReIDUnsup().train(ctx, s, model, data, "market1501", gen)
    return model, lines


def test_training_reclusters_every_epoch_and_resumes_exactly(tmp_path):
    model, lines = train_tiny(tmp_path, "full")
    assert [ln.split(":")[0] for ln in lines if "clusters" in ln] == ["epoch 1", "epoch 2"]
    losses = [float(ln.split()[3]) for ln in lines if " loss " in ln]
    assert len(losses) == 2 and min(losses) > 0  # clusters were found and trained on
    # stop after epoch 1 (its state saved), then run again: it resumes, re-clusters from the
    # saved model and ends with the same weights as the uninterrupted run
    train_tiny(tmp_path, "cut", dataclasses.replace(TINY, epochs=1))
    resumed, lines = train_tiny(tmp_path, "cut")
    assert lines[0] == "resuming from the end of epoch 1"
    assert [ln.split(":")[0] for ln in lines if "clusters" in ln] == ["epoch 2"]
    for (k, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


def test_an_epoch_without_clusters_trains_nothing(tmp_path):
    s = dataclasses.replace(TINY, epochs=1, min_samples=100)
    model, lines = train_tiny(tmp_path, "none", s)
    assert any("DBSCAN found no cluster (all 12 images are outliers at eps=0.7, "
               "min_samples=100); this epoch trains nothing" in ln for ln in lines)
    assert "epoch 1/1 loss 0.0000" in lines[-1]


@pytest.mark.parametrize("mode, names", [
    ("frozen", ["frozen mAP", "frozen Rank-1", "frozen Rank-5", "frozen Rank-10"]),
    ("train", ["mAP", "Rank-1", "Rank-5", "Rank-10"]),
])
def test_modes_report_their_own_rows(tmp_path, monkeypatch, mode, names):
    from backbones import create_backbone

    monkeypatch.setattr(ru, "build_backbone", lambda ctx, **kw: create_backbone(
        "test_solider_swin", semantic_weight=0.2, **kw))
    ctx, lines = fake_ctx(tmp_path / "work")
    s = dataclasses.replace(TINY, mode=mode, epochs=1)
    rows = list(ru.ReIDUnsup().run_dataset(ctx, s, tiny_data(tmp_path), "market1501"))
    assert [r.metric for r in rows] == names and {r.split for r in rows} == {"test"}
    assert all(0 <= r.value <= 100 for r in rows)
    trained = (tmp_path / "work" / "market1501_state.pt").is_file()
    assert trained == (mode == "train")
    assert (tmp_path / "work" / f"market1501_{'frozen_' * (mode == 'frozen')}predictions.npz").is_file()


def test_schedule_overrides_are_checked(tmp_path):
    from bench import config
    from adapters._engine import schedule_for

    def ctx_for(text):
        cfg = tiny_run_config(tmp_path, "reid_unsup", text)
        return SimpleNamespace(profile="smoke", settings=cfg.tasks["reid_unsup"], spec=ru.SPEC,
                               config=cfg)

    s = schedule_for(ctx_for('[tasks.reid_unsup.schedule.smoke]\nmode = "frozen"\neps = 0.5\n'),
                     ru.SCHEDULES)
    assert (s.mode, s.eps, s.k1) == ("frozen", 0.5, ru.SCHEDULES["smoke"].k1)
    bad = ctx_for('[tasks.reid_unsup.schedule.smoke]\nmemory_update = "median"\n')
    with pytest.raises(config.ConfigError, match="memory_update: expected one of"):
        schedule_for(bad, ru.SCHEDULES)


# --------------------------------------------------------------------------------------
# End to end through the runner and `bench eval`
# --------------------------------------------------------------------------------------
SMOKE_TOML = ('[tasks.reid_unsup]\ndatasets = ["market1501"]\n'
              '[tasks.reid_unsup.schedule.smoke]\nepochs = {epochs}\niters = 1\n'
              'input_size = [64, 32]\nbatch_size = 8\nk = 4\neval_batch_size = 128\n')


def test_end_to_end_tiny_run(tmp_path, bench_cli, capsys):
    cfg = tiny_run_config(tmp_path, "reid_unsup", SMOKE_TOML.format(epochs=1))
    run_dir = runner.run(cfg)
    capsys.readouterr()  # the run's summary table
    df = results.load(tmp_path / "res")
    r = df.set_index("metric")["value"]
    assert sorted(r.index) == sorted(m.name for m in ru.SPEC.metrics)
    assert set(df["split"]) == {"test"} and set(df["semantic_weight"]) == {0.2}
    assert ((df["value"] >= 0) & (df["value"] <= 100)).all()
    for p in ("", "frozen "):
        assert r[f"{p}Rank-1"] <= r[f"{p}Rank-5"] <= r[f"{p}Rank-10"]
    log = (run_dir / "log.txt").read_text()
    assert "chance level mAP" in log and "epoch 1: " in log and "epoch 1/1 loss" in log
    # both prediction files re-evaluate to their rows through `bench eval reid_unsup`
    root = default_dir(tmp_path / "cache", "smoke", 0) / "Market-1501-v15.09.15"
    for name, prefix in (("market1501_predictions.npz", ""),
                         ("market1501_frozen_predictions.npz", "frozen ")):
        code, out, err = bench_cli("eval", "reid_unsup", str(run_dir / "reid_unsup" / name),
                                   "market1501", str(root), "--json",
                                   "--config", str(tmp_path / "bench.toml"))
        assert code == 0, err
        assert json.loads(out)["metrics"]["mAP"] == pytest.approx(r[f"{prefix}mAP"], abs=1e-9)


RUN = ("import sys\nfrom bench import config, runner\n"
       "args = [a for a in sys.argv[2:] if a != '--resume']\n"
       "cfg = config.load(sys.argv[1], args)\n"
       "runner.run(cfg, resume='' if '--resume' in sys.argv else None)\n")


@pytest.mark.slow
def test_sigkill_after_an_epoch_then_resume_gives_the_same_numbers(tmp_path):
    toml = tmp_path / "bench.toml"
    toml.write_text(SMOKE_TOML.format(epochs=2)
                    + '[backbones.test_solider_swin]\nweights = "random"\n')
    common = [f"paths.cache_dir={tmp_path / 'cache'}", "run.backbone=test_solider_swin",
              'run.tasks=["reid_unsup"]', "run.device=cpu", 'profiles.smoke.precision="fp32"']

    def go(results_dir, *extra, kill=None):
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        if kill:
            env["HCBENCH_FAULT_KILL_AFTER_EPOCH"] = kill
        return subprocess.run([sys.executable, "-c", RUN, str(toml),
                               f"paths.results_dir={results_dir}", *common, *extra], env=env,
                              capture_output=True, text=True)

    ref = go(tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-2000:]
    killed = go(tmp_path / "cut", kill="reid_unsup:1")
    assert killed.returncode == -signal.SIGKILL
    resumed = go(tmp_path / "cut", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = results.load(tmp_path / "ref").set_index("metric")["value"]
    b = results.load(tmp_path / "cut").set_index("metric")["value"]
    assert a.to_dict() == pytest.approx(b.to_dict(), abs=1e-9)
    log = (next((tmp_path / "cut" / "runs").iterdir()) / "log.txt").read_text()
    assert "resuming from the end of epoch 1" in log and "frozen features evaluated earlier" in log
