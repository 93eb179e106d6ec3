"""Pretraining module (issue 5): clustering, masking, λ, schedules, resume, export, CLI."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from backbones import create_backbone
from backbones.pretrain import profile_config, train, zoo_name
from backbones.pretrain.cluster import (batched_kmeans, foreground, mask_part, order_parts,
                                        part_labels)
from backbones.pretrain.dino import image_lambdas
from backbones.pretrain.loop import cosine_schedule
from bench import config as config_mod


@pytest.fixture(scope="module")
def bench_cfg(tmp_path_factory):
    """Defaults, with the cache (synthetic world, outputs) in a folder shared by the module."""
    import os

    cache = os.environ.get("HCBENCH_TEST_CACHE") or str(tmp_path_factory.mktemp("cache"))
    return config_mod.load(None, [f'paths.cache_dir="{cache}"'])


def tiny(method: str = "dino", **kw):
    """A few-second run: 16 images, 64x32 global / 32x16 local crops, batch 4."""
    base = dict(arch="test", epochs=2, batch_size=4, max_images=16, global_size=(64, 32),
                local_size=(32, 16), n_local=2, out_dim=64, head_hidden=32, head_bottleneck=16,
                drop_path=0.0, save_every=100)
    base.update(kw)
    return profile_config(method, "smoke", **base)


# -- k-means -----------------------------------------------------------------------------
def _brute_force(x: np.ndarray, k: int) -> float:
    """Optimal k-means inertia of a tiny point set by trying every assignment."""
    best = np.inf
    for lab in itertools.product(range(k), repeat=len(x)):
        lab = np.array(lab)
        inertia = sum(((x[lab == c] - x[lab == c].mean(0)) ** 2).sum()
                      for c in range(k) if (lab == c).any())
        best = min(best, inertia)
    return best


def test_batched_kmeans_reaches_the_optimum_of_each_set():
    rng = np.random.default_rng(0)
    sets = []
    for _ in range(5):  # three blobs in 4-D, 8 points each set
        centres = rng.normal(0, 5, (3, 4))
        sets.append(centres[rng.integers(0, 3, 8)] + rng.normal(0, 0.5, (8, 4)))
    x = torch.tensor(np.stack(sets), dtype=torch.float32)
    labels, centres, inertia = batched_kmeans(x, 3, generator=torch.Generator().manual_seed(0))
    for i, s in enumerate(sets):
        assert inertia[i].item() == pytest.approx(_brute_force(s, 3), rel=1e-4)
        # centres are the means of their points
        for c in range(3):
            if (labels[i] == c).any():
                np.testing.assert_allclose(centres[i, c].numpy(), s[labels[i].numpy() == c].mean(0),
                                           rtol=1e-4, atol=1e-4)


def test_batched_kmeans_respects_the_valid_mask():
    x = torch.tensor([[[0.0], [0.1], [10.0], [10.1], [1000.0]]])
    valid = torch.tensor([[True, True, True, True, False]])
    _, centres, inertia = batched_kmeans(x, 2, valid, generator=torch.Generator().manual_seed(0))
    assert sorted(centres[0, :, 0].tolist()) == pytest.approx([0.05, 10.05], abs=1e-5)
    assert inertia.item() == pytest.approx(4 * 0.05 ** 2, abs=1e-5)


def test_foreground_is_the_high_norm_split_even_for_layernormed_tokens():
    # LayerNorm'd tokens have norms equal to 4-5 digits; the split must still be exact
    f = torch.ones(2, 16, 4, 2) * 4.0
    f[0, :, 1:3] *= 1.00002
    f[1, :, 0] *= 1.00002
    fg = foreground(f)
    assert fg[0].tolist() == [[False, False], [True, True], [True, True], [False, False]]
    assert fg[1].tolist() == [[True, True], [False, False], [False, False], [False, False]]


def test_parts_are_ordered_top_to_bottom_and_background_is_zero():
    labels = torch.tensor([[[2, 2], [0, 0], [1, 1], [0, 1]]])  # cluster ids, arbitrary order
    fg = torch.tensor([[[True, True], [True, True], [True, False], [True, False]]])
    out = order_parts(labels, fg, 3)
    # cluster 2 (row 0) first, cluster 0 (rows 1, 3) second, cluster 1 (row 2) last
    assert out.tolist() == [[[1, 1], [2, 2], [3, 0], [2, 0]]]


def test_part_labels_on_a_striped_person():
    C, h, w = 8, 8, 4
    f = torch.zeros(3, C, h, w)
    f[:, 0] = 1.0  # background: small norm
    for band, rows in enumerate(((1, 2, 3), (4, 5), (6, 7))):
        for r in rows:
            f[:, band + 1, r, 1:3] = 5.0  # person: columns 1-2, three feature bands
    parts, keep = part_labels(f, 3, generator=torch.Generator().manual_seed(0), min_fg=0.25)
    assert keep.all()
    expect = torch.zeros(h, w, dtype=torch.long)
    expect[1:4, 1:3], expect[4:6, 1:3], expect[6:8, 1:3] = 1, 2, 3
    assert parts[0].tolist() == expect.tolist()
    # an image with too little foreground is not kept (official: > 0.5 h w tokens)
    assert not part_labels(f, 3, generator=torch.Generator().manual_seed(0))[1].any()


def test_mask_part_upsamples_the_token_mask_x32():
    images = torch.ones(2, 3, 256, 128)
    labels = torch.zeros(2, 8, 4, dtype=torch.long)
    labels[0, 2, 1] = 2
    labels[1, 7, 3] = 2
    out = mask_part(images, labels, 2)
    assert out.shape == images.shape
    assert out[0, :, 64:96, 32:64].abs().sum() == 0 and out[0].sum() == 3 * (256 * 128 - 32 * 32)
    assert out[1, :, 224:, 96:].abs().sum() == 0
    assert (mask_part(images, labels, 1) == images).all()


# -- λ ----------------------------------------------------------------------------------
def test_lambda_is_binary_per_image_and_shared_by_its_views():
    idx = torch.arange(200)
    lam = image_lambdas(0, 5, idx)
    assert set(lam.tolist()) == {0.0, 1.0} and 0.35 < lam.mean() < 0.65
    # a function of (seed, step, image): the same on any rank / in any batch order
    assert torch.equal(image_lambdas(0, 5, idx.flip(0)), lam.flip(0))
    assert not torch.equal(image_lambdas(0, 6, idx), lam)


def test_solider_step_feeds_one_lambda_to_every_view(monkeypatch):
    from backbones.pretrain.loop import build_objective
    from backbones.swin import SwinTransformer

    cfg = tiny("solider")
    obj = build_objective(cfg)
    seen = []
    orig = SwinTransformer.forward_features

    def spy(self, x, semantic_weight=None, task=None):
        seen.append((x.shape[0], semantic_weight))
        return orig(self, x, semantic_weight, task)

    monkeypatch.setattr(SwinTransformer, "forward_features", spy)
    B = 4
    crops = [torch.randn(B, 3, 64, 32) for _ in range(2)] + [torch.randn(B, 3, 32, 16)] * 2
    idx = torch.arange(B)
    out = obj.step((crops, torch.full((B,), -1), idx), 3)
    lam = image_lambdas(cfg.seed, 3, idx)
    teacher_views, cluster, student_glob, student_loc = seen
    assert torch.equal(teacher_views[1], torch.cat([lam, lam]))  # teacher at the image's λ
    assert cluster[1] == 1.0  # clustering pass at λ=1
    M = student_glob[0] - 2 * B  # masked copies first, then both global views
    assert torch.equal(student_glob[1][M:], torch.cat([lam, lam]))
    assert torch.equal(student_loc[1], lam.repeat(2))
    assert set(student_glob[1].tolist()) <= {0.0, 1.0}
    assert {"loss", "dino", "part", "teacher_entropy", "kl", "keep_frac"} <= set(out)


def test_part_classifier_is_frozen_unless_asked():
    from backbones.pretrain.loop import build_objective

    off, on = build_objective(tiny("solider")), build_objective(tiny("solider", train_part_classifier=True))
    assert not any(p.requires_grad for p in off.part_classifier.parameters())
    assert off.trainable() is off.student
    assert any(p is on.part_classifier.mlp[0].weight for p in on.trainable().parameters())


# -- schedules ---------------------------------------------------------------------------
def test_cosine_schedules_match_dino():
    s = cosine_schedule(1.0, 0.0, epochs=4, niter_per_ep=5, warmup_epochs=1)
    assert len(s) == 20 and s[0] == 0 and s[4] == pytest.approx(0.8) and s[5] == 1.0
    assert np.all(np.diff(s[5:]) < 0)
    m = cosine_schedule(0.996, 1.0, epochs=10, niter_per_ep=10)
    assert m[0] == 0.996 and m[-1] == pytest.approx(1.0, abs=1e-5)
    assert m[50] == pytest.approx(0.998, abs=2e-4) and np.all(np.diff(m) >= 0)


def test_teacher_is_an_ema_of_the_student():
    from backbones.pretrain.loop import build_objective

    obj = build_objective(tiny("dino"))
    t0 = [p.clone() for p in obj.teacher.parameters()]
    with torch.no_grad():
        for p in obj.student.parameters():
            p.add_(1.0)
    obj.update_teacher(0.9)
    for p0, pt, ps in zip(t0, obj.teacher.parameters(), obj.student.parameters()):
        torch.testing.assert_close(pt, 0.9 * p0 + 0.1 * ps)


# -- loop: resume, export ----------------------------------------------------------------
def _final_state(out):
    from safetensors.torch import load_file

    return load_file(str(next(out.glob("*.safetensors"))))


@pytest.mark.parametrize("method", [pytest.param("dino", marks=pytest.mark.slow), "solider"])
def test_resume_gives_the_same_final_state(tmp_path, bench_cfg, method):
    torch.set_num_threads(1)
    cfg = tiny(method, drop_path=0.1)  # drop path: the RNG state must be restored too
    full = train(cfg, tmp_path / "full", bench_cfg, device="cpu")
    assert full.steps == 8
    part = train(cfg.replace(stop_after=3), tmp_path / "cut", bench_cfg, device="cpu")
    assert part.checkpoint is None and part.steps == 3
    rest = train(cfg, tmp_path / "cut", bench_cfg, device="cpu")
    assert rest.resumed_from == 3 and rest.steps == 8
    a, b = _final_state(tmp_path / "full"), _final_state(tmp_path / "cut")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    log = [json.loads(l) for l in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 9))


@pytest.mark.parametrize("method", ["sup", "dino", "dinoclust", "solider"])
def test_export_loads_strictly_into_its_zoo_entry(tmp_path, bench_cfg, method):
    cfg = tiny(method, epochs=1, batch_size=4 if method != "sup" else 8, max_images=8,
               sup_size=(32, 32))
    res = train(cfg, tmp_path, bench_cfg, device="cpu")
    meta = json.loads(res.checkpoint.with_suffix(".json").read_text())
    assert meta["pretrain_method"] == method and meta["arch"] == "test"
    assert meta["config_hash"] == cfg.hash() and meta["steps"] == res.steps
    model = create_backbone(zoo_name(method, "test"), checkpoint=str(res.checkpoint))
    assert model.has_controller == (method == "solider")
    # official training-dict layout in the resumable state
    state = torch.load(tmp_path / "train_state.pth", weights_only=True)
    if method != "sup":
        assert any(k.startswith("backbone.norm") for k in state["teacher"])
        assert any(k.startswith("head.last_layer.weight_g") for k in state["teacher"])
    assert all(k.startswith("module.") for k in state["student"])


def test_zoo_names():
    assert zoo_name("solider", "swin_s") == "solider_swin_s"
    assert zoo_name("dinoclust", "swin_b") == "dinoclust_swin_b"
    assert zoo_name("solider", "test") == "test_solider_swin"
    assert zoo_name("dino", "test") == "test_sup_swin"


def test_paper_profile_is_the_official_recipe():
    cfg = profile_config("solider", "paper")
    assert (cfg.epochs, cfg.batch_size, cfg.base_lr, cfg.warmup_epochs, cfg.min_lr) == (
        100, 384, 5e-4, 10, 1e-6)
    assert (cfg.out_dim, cfg.global_size, cfg.local_size, cfg.n_local) == (
        65536, (256, 128), (128, 64), 8)
    assert (cfg.student_temp, cfg.teacher_temp, cfg.center_momentum, cfg.momentum_teacher) == (
        0.1, 0.04, 0.9, 0.996)
    assert (cfg.weight_decay, cfg.weight_decay_end, cfg.clip_grad, cfg.freeze_last_layer) == (
        0.04, 0.4, 3.0, 1)
    assert cfg.train_part_classifier is False


# -- evaluation helpers ------------------------------------------------------------------
def test_adjusted_rand_and_token_truth():
    from backbones.pretrain.evaluate import adjusted_rand, token_truth

    a = np.array([0, 0, 1, 1, 2, 2])
    assert adjusted_rand(a, a) == pytest.approx(1.0)
    assert adjusted_rand(a, np.array([5, 5, 7, 7, 9, 9])) == pytest.approx(1.0)  # names free
    # by hand: table [[2,0],[1,1],[0,2]]: index 2, expected 3*6/15, max 4.5 -> 0.8/3.3
    assert adjusted_rand(a, np.array([0, 0, 0, 1, 1, 1])) == pytest.approx(0.24242424, abs=1e-6)
    bands = np.zeros((1, 4, 2), np.int64)
    bands[0, :3, 0] = 3  # 3 of 4 pixels of the left cell are "lower body"
    assert token_truth(bands, (1, 2)).tolist() == [[[3, 0]]]


# -- CLI ---------------------------------------------------------------------------------
def test_cli_pretrain_errors_are_one_line(bench_cli, workdir):
    code, out, err = bench_cli("pretrain", "--method", "dino", "--arch", "test",
                               "--data", str(workdir / "nowhere"))
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert code == 2 and len(errors) == 1 and "nowhere" in errors[0]
    assert err.strip().splitlines()[-1] == errors[0]


def test_cli_pretrain_writes_a_checkpoint(bench_cli, workdir, bench_cfg, monkeypatch):
    import backbones.pretrain as pre

    small = tiny("dino", epochs=1, max_images=8)
    monkeypatch.setattr(pre, "profile_config", lambda method, profile, **kw: small.replace(
        **{k: v for k, v in kw.items() if v is not None and k in ("seed",)}))
    code, out, err = bench_cli("pretrain", "--method", "dino", "--arch", "test", "--out",
                               str(workdir / "run"), "--set",
                               f'paths.cache_dir="{bench_cfg.cache_dir}"')
    assert code == 0, err
    assert "test_sup_swin.safetensors" in out and "[backbones.test_sup_swin]" in out
