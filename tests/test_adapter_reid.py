"""The reID adapter: loss, sampler, schedule overrides, head, and a tiny end-to-end run."""
import dataclasses

import numpy as np
import pytest
import torch

import adapters
from adapters import reid
from adapters._engine import IdentitySampler, cosine_warmup, schedule_for
from bench import config, results, runner
from bench.errors import BenchError
from bench.data.synth.world import default_dir


def test_batch_hard_triplet_hand_computed():
    feat = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 5.0]])
    pids = torch.tensor([1, 1, 2, 2])
    # anchor 0: hardest positive 3 (to 1), hardest negative 1 (to 2)
    # anchor 1: pos 3, neg min(|(3,0)-(0,1)|, |(3,0)-(0,5)|) = sqrt(10)
    # anchor 2: pos 4, neg 1; anchor 3: pos 4, neg 5
    ap = torch.tensor([3.0, 3.0, 4.0, 4.0])
    an = torch.tensor([1.0, 10 ** 0.5, 1.0, 5.0])
    assert reid.batch_hard_triplet(feat, pids).item() == pytest.approx(
        torch.log1p(torch.exp(ap - an)).mean().item(), rel=1e-5)
    assert reid.batch_hard_triplet(feat, pids, margin=0.3).item() == pytest.approx(
        torch.relu(ap - an + 0.3).mean().item(), rel=1e-5)


def test_identity_sampler_batches_and_determinism():
    pids = np.repeat(np.arange(10), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    s = IdentitySampler(pids, batch_size=8, k=4, seed=3)
    order = list(s)
    assert len(order) == len(s) and len(order) % 8 == 0
    for b in range(0, len(order), 8):
        batch = pids[order[b:b + 8]]
        ids, counts = np.unique(batch, return_counts=True)
        assert len(ids) == 2 and set(counts) == {4}
    s.set_epoch(0)
    assert list(s) == order
    s.set_epoch(1)
    assert list(s) != order
    with pytest.raises(BenchError, match="not a multiple"):
        IdentitySampler(pids, batch_size=6, k=4)


def test_cosine_warmup_matches_timm():
    from timm.scheduler import CosineLRScheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-4)
    ref = CosineLRScheduler(opt, t_initial=120, lr_min=0.002 * 2e-4, warmup_lr_init=0.01 * 2e-4,
                            warmup_t=20, cycle_limit=1, t_in_epochs=True)
    ours = cosine_warmup(2e-4, 120, 20, 0.01 * 2e-4, 0.002 * 2e-4)
    for epoch in (0, 1, 10, 19, 20, 21, 60, 119):
        ref.step(epoch)
        assert ours(epoch) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9)


def test_paper_schedule_is_solider_reid():
    s = reid.SCHEDULES["paper"]
    assert (s.input_size, s.epochs, s.batch_size, s.k) == ((384, 128), 120, 64, 4)
    assert (s.base_lr, s.weight_decay, s.warmup_epochs, s.bias_lr_factor) == (2e-4, 1e-4, 20, 2.0)
    assert s.mean == s.std == (0.5, 0.5, 0.5) and s.triplet_margin is None
    assert reid.SPEC.semantic_weight == 0.2 and s.freeze_controller and s.neck_feat == "before"


def test_head_shapes_and_feature_choice():
    from backbones import create_backbone

    bb = create_backbone("test_solider_swin", semantic_weight=0.2)
    m = reid.ReIDModel(bb, num_classes=7, semantic_weight=0.2)
    x = torch.randn(4, 3, 64, 32)
    logits, feat = m(x)
    assert logits.shape == (4, 7) and feat.shape == (4, bb.num_features)
    assert not m.bottleneck.bias.requires_grad and m.classifier.bias is None
    m.eval()
    torch.testing.assert_close(m(x), bb(x, semantic_weight=0.2))


def _ctx_cfg(tmp_path, *extra, text=""):
    p = tmp_path / "bench.toml"
    p.write_text(text)
    return config.load(p, ["paths.results_dir=res", f"paths.cache_dir={tmp_path / 'cache'}",
                           "run.backbone=test_solider_swin", "run.tasks=[\"reid\"]", "run.device=cpu",
                           *extra])


def test_schedule_overrides_are_checked(tmp_path):
    text = "[tasks.reid.schedule.smoke]\nepochs = 2\ninput_size = [64, 32]\n"
    cfg = _ctx_cfg(tmp_path, text=text)
    ctx = type("C", (), {"profile": "smoke", "settings": cfg.tasks["reid"], "spec": reid.SPEC,
                         "config": cfg})
    s = schedule_for(ctx, reid.SCHEDULES)
    assert s.epochs == 2 and s.input_size == (64, 32)
    assert s.base_lr == reid.SCHEDULES["smoke"].base_lr
    bad = _ctx_cfg(tmp_path, text="[tasks.reid.schedule.smoke]\nepoch = 2\n")
    ctx.settings = bad.tasks["reid"]
    with pytest.raises(config.ConfigError, match=r"tasks.reid.schedule.smoke.epoch: unknown key; did you mean 'epochs'"):
        schedule_for(ctx, reid.SCHEDULES)


def test_weights_pretrain_means_pretrain_here(tmp_path, monkeypatch):
    """No checkpoint configured: the backbone is pretrained first (once), then loaded."""
    import backbones.pretrain as bp
    from adapters import _engine

    calls = []

    def fake_train(pcfg, dest, bench_cfg=None, device=None, progress=None):
        calls.append((pcfg.method, pcfg.arch, pcfg.profile))
        # the run's precision (smoke on a CPU with bf16 units: bf16) applies to its pretraining
        assert (pcfg.precision, pcfg.cpu_autocast) == ("bf16", True)
        raise BenchError("stop here")  # the real training is tested in test_pretrain.py

    monkeypatch.setattr(bp, "train", fake_train)
    from bench.console import Output
    ctx = type("C", (), {"backbone": "solider_swin_t", "profile": "smoke", "seed": 0,
                         "device": "cpu", "precision": "bf16", "config": _ctx_cfg(tmp_path),
                         "log": lambda s, m: None, "out": Output(quiet=True)})()
    with pytest.raises(BenchError, match="stop here"):
        _engine.pretrained_here(ctx)
    assert calls == [("solider", "swin_t", "smoke")]
    # a checkpoint pretrained earlier with the same settings is reused, not trained again
    pcfg = bp.profile_config("solider", "smoke", arch="swin_t", seed=0, precision="bf16",
                             cpu_autocast=True)
    ckpt = bp.default_out_dir(ctx.config, pcfg) / "solider_swin_t.safetensors"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    assert _engine.pretrained_here(ctx) == str(ckpt) and len(calls) == 1
    ctx.backbone = "test_solider_swin"  # test models have no recipe: random init
    assert _engine.pretrained_here(ctx) is None
    ctx.backbone = "valpat_swin_t"  # VAL-PAT backbones are pretrained here too (issue 6)
    with pytest.raises(BenchError, match="stop here"):
        _engine.pretrained_here(ctx)
    assert calls[-1] == ("valpat", "swin_t", "smoke")


def test_end_to_end_tiny_run(tmp_path):
    text = ('[tasks.reid]\ndatasets = ["market1501"]\n'
            '[tasks.reid.schedule.smoke]\nepochs = 1\ninput_size = [64, 32]\nbatch_size = 16\n'
            '[backbones.test_solider_swin]\nweights = "random"\n')
    cfg = _ctx_cfg(tmp_path, "profiles.smoke.precision=\"fp32\"", text=text)
    run_dir = runner.run(cfg)
    df = results.load(tmp_path / "res")
    assert sorted(df["metric"]) == ["Rank-1", "Rank-10", "Rank-5", "mAP"]
    assert set(df["task"]) == {"reid"} and set(df["semantic_weight"]) == {0.2}
    assert ((df["value"] >= 0) & (df["value"] <= 100)).all()
    r = df.set_index("metric")["value"]
    assert r["Rank-1"] <= r["Rank-5"] <= r["Rank-10"]
    assert (run_dir / "reid" / "market1501_state.pt").is_file()
    assert "epoch 1/1" in (run_dir / "log.txt").read_text()
    # the saved predictions re-evaluate to the same numbers through `bench eval`
    from bench import cli
    import json
    pred = run_dir / "reid" / "market1501_predictions.npz"
    root = default_dir(tmp_path / "cache", "smoke", 0) / "Market-1501-v15.09.15"
    code = cli.main(["eval", "reid", str(pred), "market1501", str(root), "--json",
                     "--config", str(tmp_path / "bench.toml")])
    assert code == 0
    assert pytest.approx(r["mAP"]) == reid.ReID.evaluate_file(
        pred, __import__("bench.data", fromlist=["read_dataset"]).read_dataset("market1501", root))["mAP"]
