"""The parsing adapter: schedule and λ, SCHP head, targets and losses, self-correction,
flip test with the left/right swap, and a tiny end-to-end run on the synthetic LIP."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adapters import parsing as P
from conftest import tiny_run_config
from bench import cli, results, runner
from bench.data.lip import flip_labels
from bench.metrics.segmentation import mean_iou
from bench.data.synth.world import default_dir


def test_paper_schedule_is_solider_schp():
    s = P.SCHEDULES["paper"]
    assert (s.input_size, s.epochs, s.batch_size, s.lr, s.weight_decay) == (
        (572, 384), 150, 64, 7e-3, 0.0)
    assert (s.warmup_epochs, s.lr_divider, s.cyclical_lr_divider) == (30, 500.0, 2.0)
    assert (s.self_correction, s.schp_start, s.cycle_epochs) == (True, 120, 10)
    assert s.test_scales == (0.5, 0.75, 1.0, 1.25, 1.5) and s.test_flip
    assert s.freeze_patch_embed
    # λ: the released code runs 0.0; the README's 0.8 is recorded beside it
    assert P.SPEC.semantic_weight == 0.0
    assert P.SPEC.extra["readme_semantic_weight"] == 0.8
    assert [m.name for m in P.SPEC.metrics] == ["mIoU", "PixelAcc", "MeanAcc"]


def test_sgdr_learning_rate():
    s = P.SCHEDULES["paper"]
    lr = P.sgdr_lr(s)
    assert lr(0) == pytest.approx(7e-3 / 500)
    assert lr(15) == pytest.approx(7e-3 / 500 + 0.5 * (7e-3 - 7e-3 / 500))
    assert lr(30) == pytest.approx(7e-3)  # peak after warm-up
    assert lr(75) == pytest.approx(7e-3 / 500 + (7e-3 - 7e-3 / 500) / 2)
    assert lr(120) == lr(130) == pytest.approx(7e-3 / 2)  # each cycle restarts at lr/2
    assert lr(125) == pytest.approx(7e-3 / 500 + (7e-3 / 2 - 7e-3 / 500) / 2)


def test_build_model_strides_and_frozen_patch_embed(monkeypatch):
    from types import SimpleNamespace

    from backbones import create_backbone

    seen = {}

    def fake_build(ctx, **kw):
        seen.update(kw)
        return create_backbone("test_solider_swin", semantic_weight=ctx.semantic_weight, **kw)

    monkeypatch.setattr(P, "build_backbone", fake_build)
    ctx = SimpleNamespace(semantic_weight=0.0, device="cpu")
    m = P.Parsing().build_model(ctx, P.SCHEDULES["paper"])
    assert seen["strides"] == (4, 2, 2, 1) and seen["drop_path_rate"] == 0.0
    assert m.semantic_weight == 0.0
    frozen = {n for n, p in m.named_parameters() if not p.requires_grad}
    assert {n for n in frozen if n.startswith("backbone.patch_embed")} == {
        "backbone.patch_embed.projection.weight", "backbone.patch_embed.projection.bias",
        "backbone.patch_embed.norm.weight", "backbone.patch_embed.norm.bias"}
    # besides the patch embedding only the unused last λ FiLM is frozen (backbone's own rule)
    assert all(n.startswith(("backbone.patch_embed", "backbone.semantic_embed_")) for n in frozen)


def test_head_shapes():
    from backbones import create_backbone

    bb = create_backbone("test_solider_swin", semantic_weight=0.0, strides=(4, 2, 2, 1))
    assert bb.feature_strides == [4, 8, 16, 16]
    m = P.ParsingModel(bb, 20, 0.0)
    # edge width 2*C0, decoder low branch C0/2 (SOLIDER: 192 / 48 for Swin-T/S)
    assert m.edge.reduce[0][0].out_channels == 64 and m.decoder.reduce_low[0].out_channels == 16
    assert m.fusion[0].in_channels == 256 + 3 * 64
    out = m(torch.randn(2, 3, 64, 48))
    assert out.parsing.shape == out.fusion.shape == (2, 20, 16, 12)
    assert out.edge.shape == (2, 2, 16, 12)


def test_edge_targets_hand_case():
    lab = torch.tensor([[0, 0, 0, 0, 0, 0],
                        [0, 0, 0, 0, 0, 0],
                        [0, 0, 0, 0, 0, 0],
                        [0, 0, 0, 5, 5, 5],
                        [0, 0, 0, 5, 5, 5]])
    raw = P.edge_targets(lab, width=1)  # no dilation: just the marked pixels
    expected = torch.zeros_like(lab)
    expected[3, 3:] = 1  # lower pixel of a vertical change
    expected[3:, 2] = 1  # left pixel of a horizontal change
    expected[2, 2:5] = 1  # upper-left of a diagonal change: (2,2)-(3,3), (2,3)-(3,4), (2,4)-(3,5)
    expected[2, 4:6] = 1  # upper-right of an anti-diagonal change: (2,4)-(3,3), (2,5)-(3,4)
    expected[3, 2] = 1
    torch.testing.assert_close(raw, expected)
    dil = P.edge_targets(lab)  # 3x3 dilation
    assert dil[0].sum() == 0 and dil[1, 1:].sum() > 0 and dil[4, 0] == 0
    # pixels next to ignore labels are not edges
    ign = torch.zeros(3, 3, dtype=torch.long)
    ign[1, 1] = 255
    assert P.edge_targets(ign[None], width=1).sum() == 0


def test_lovasz_softmax_is_one_minus_iou_on_hard_predictions():
    torch.manual_seed(0)
    y = torch.randint(0, 4, (2, 6, 5))
    pred = torch.randint(0, 5, (2, 6, 5))  # class 4 never in the labels
    y[0, 0] = 255
    probs = F.one_hot(pred, 5).permute(0, 3, 1, 2).float()
    iou = mean_iou(pred.numpy(), y.numpy(), 5).iou
    present = np.unique(y[y != 255].numpy())
    expected = float(np.mean(1 - iou[present]))  # Lovász extension = Jaccard loss at vertices
    assert P.lovasz_softmax(probs, y).item() == pytest.approx(expected, abs=1e-6)
    perfect = F.one_hot(y.clamp(max=4), 5).permute(0, 3, 1, 2).float()
    assert P.lovasz_softmax(perfect, y).item() == pytest.approx(0.0, abs=1e-7)


def test_loss_terms():
    torch.manual_seed(0)
    s = P.SCHEDULES["smoke"]
    y = torch.randint(0, 20, (2, 16, 12))
    y[:, :3] = 255
    out = P.ParsingOutput(torch.randn(2, 20, 16, 12, requires_grad=True),
                          torch.randn(2, 20, 16, 12, requires_grad=True),
                          torch.randn(2, 2, 16, 12, requires_grad=True))
    loss = P.parsing_loss(out, y, s)
    loss.backward()
    assert torch.isfinite(loss) and all(t.grad is not None for t in out)
    # by hand: 0.5 (lovasz + CE) per parsing output + class-balanced edge CE
    e = P.edge_targets(y)
    pos = (e == 1).float().mean()
    w = torch.stack([pos, 1 - pos])
    want = sum(0.5 * (P.lovasz_softmax(z.softmax(1), y) + F.cross_entropy(z, y, ignore_index=255))
               for z in (out.parsing, out.fusion)) + F.cross_entropy(out.edge, e, weight=w)
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    # with soft labels: KL to softmax((1-α) z_schp + α onehot), α = 1/(cycle+1)
    soft = P.ParsingOutput(*(torch.randn_like(t) for t in out))
    lsoft = P.parsing_loss(out, y, s, soft=soft, cycle=1)
    assert torch.isfinite(lsoft)
    # the KL term vanishes where the student equals the refined target
    valid = y != 255
    target = 0.5 * soft.fusion + 0.5 * F.one_hot(y.clamp(max=19), 20).permute(0, 3, 1, 2)
    assert P.soft_kl(target, target, valid).item() == pytest.approx(0.0, abs=1e-6)
    # SCHP's released consistency term is identically zero
    assert P.consistency_term(out.fusion, out.edge, y).item() == 0.0


def test_self_correction_cycles():
    s = P.SCHEDULES["paper"]
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    sc = P.SelfCorrection(net, s.schp_start, s.cycle_epochs)
    assert [e + 1 for e in range(150) if sc.due(e)] == [120, 130, 140, 150]
    assert sc.soft_targets(torch.randn(1, 3, 2, 2)) is None  # no refinement before a cycle
    w0 = net[0].weight.detach().clone()
    sc.update(net)  # cycle 0: α = 1, the SCHP model becomes the trained one
    torch.testing.assert_close(sc.model[0].weight, w0)
    with torch.no_grad():
        net[0].weight.add_(1.0)
    sc.update(net)  # cycle 1: α = 1/2
    torch.testing.assert_close(sc.model[0].weight, w0 + 0.5)
    assert sc.cycle == 2 and not any(p.requires_grad for p in sc.model.parameters())
    # BN statistics re-estimated as the cumulative mean over the loader
    xs = [torch.randn(4, 3, 5, 5) + i for i in range(3)]
    sc.reestimate_bn([(x, None) for x in xs], "cpu")
    with torch.no_grad():
        feats = torch.cat([sc.model[0](x) for x in xs])
    torch.testing.assert_close(sc.model[1].running_mean, feats.mean((0, 2, 3)), rtol=1e-4,
                               atol=1e-5)
    assert not sc.model.training
    state = sc.state_dict()
    other = P.SelfCorrection(net, s.schp_start, s.cycle_epochs)
    other.load_state_dict(state)
    assert other.cycle == 2


def test_affine_fit_and_label_warp():
    # an image already of the input's size maps onto itself
    m = P.fit_affine(8, 6, (8, 6))
    np.testing.assert_allclose(m, np.eye(3), atol=1e-12)
    lab = torch.randint(0, 20, (8, 6))
    torch.testing.assert_close(P.warp_labels(lab, m, (8, 6)), lab)
    # a wide image is fitted by height padding: centre rows kept, border labelled 255
    m = P.fit_affine(4, 12, (12, 12))
    out = P.warp_labels(torch.ones(4, 12, dtype=torch.long), m, (12, 12))
    assert (out[:4] == 255).all() and (out[4:8] == 1).all() and (out[8:] == 255).all()
    # rotations and scaling keep labels valid
    out = P.warp_labels(lab, P.fit_affine(8, 6, (16, 12), 1.2, 40.0), (16, 12))
    assert set(out.unique().tolist()) <= set(lab.unique().tolist()) | {255}


def _mirror_equivariant_net(seed: int = 0):
    """Logits that satisfy f(mirror x) = swap(mirror f(x)): a 1x1 map tied within each
    left/right pair plus position ramps that point the opposite ways for left and right,
    at stride 4 like the real head."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(20, 3, generator=g)
    b = torch.randn(20, generator=g) * 0.1
    for a, c in P.FLIP_PAIRS:
        w[c], b[c] = w[a], b[a]
        b[a] = b[c] = b[a] + 1.0  # make the paired classes win somewhere

    def net(x):
        x = F.avg_pool2d(x, 4)
        z = torch.einsum("kc,bchw->bkhw", w, x) + b.view(1, -1, 1, 1)
        ramp = torch.linspace(-1, 1, x.shape[-1]).view(1, 1, -1)
        for a, c in P.FLIP_PAIRS:
            z[:, a] += 3 * ramp
            z[:, c] -= 3 * ramp
        return z

    return net


def test_flip_test_swaps_left_and_right(monkeypatch):
    torch.manual_seed(0)
    net = _mirror_equivariant_net()
    image = torch.rand(3, 37, 24)  # even width: no pixel on the mirror axis, where pairs tie
    size = (64, 48)
    plain = P.parse_image(net, image, size, (1.0,), flip=False)
    flipped = P.parse_image(net, image, size, (1.0,), flip=True)
    assert {14, 15} <= set(plain.unique().tolist())  # the left/right classes are in play
    # with the swap, the mirrored branch agrees with the direct one: averaging is exact
    torch.testing.assert_close(flipped, plain)
    # a mirrored image gives the mirrored parsing with left and right swapped
    mirrored = P.parse_image(net, image.flip(-1), size, (0.75, 1.0), flip=True)
    direct = P.parse_image(net, image, size, (0.75, 1.0), flip=True)
    np.testing.assert_array_equal(mirrored.numpy(), flip_labels(direct.numpy().astype(np.uint8)))
    # without the channel swap the flip test would mix left and right
    monkeypatch.setattr(P, "flip_permutation", lambda n=20: list(range(n)))
    assert not torch.equal(P.parse_image(net, image, size, (1.0,), flip=True), plain)


def test_end_to_end_tiny_run(tmp_path, capsys):
    cfg = tiny_run_config(tmp_path, "parsing", '[tasks.parsing.schedule.smoke]\nepochs = 2\ninput_size = [64, 48]\n'
                                               'batch_size = 4\nschp_start = 1\ncycle_epochs = 1\nmax_train_images = 8\n'
                                               'max_val_images = 4\nbn_reestimate_batches = 1\n')
    run_dir = runner.run(cfg)
    df = results.load(tmp_path / "res")
    assert set(df["dataset"]) == {"lip"} and set(df["split"]) == {"val"}
    assert set(df["metric"]) == {"mIoU", "PixelAcc", "MeanAcc"}
    assert set(df["semantic_weight"]) == {0.0}
    assert ((df["value"] >= 0) & (df["value"] <= 100)).all()
    # self-correction ran a cycle after each epoch
    state = torch.load(run_dir / "parsing" / "lip_state.pt", weights_only=False)
    assert state["epoch"] == 2 and state["extra"]["schp"]["cycle"] == 2
    assert not math.isnan(float(df.loc[df["metric"] == "mIoU", "value"].iloc[0]))
    # the saved label maps re-evaluate to the stored numbers (`bench eval parsing`)
    from bench.data.lip import read_lip
    root = default_dir(tmp_path / "cache", "smoke", 0) / "LIP"
    again = P.Parsing.evaluate_file(run_dir / "parsing" / "lip_predictions",
                                          read_lip(root, "val")[:4])
    stored = df.set_index("metric")["value"]
    assert again == pytest.approx({k: stored[k] for k in again})
    # the per-class table beside the predictions: 20 classes, their IoUs average to mIoU
    import pandas as pd
    table = pd.read_csv(run_dir / "parsing" / "lip_class_iou.csv")
    assert len(table) == 20 and table["class"].iloc[0] == "Background"
    assert table["IoU"].mean() == pytest.approx(stored["mIoU"], abs=1e-3)
    assert table["gt_pixels"].sum() == table["predicted_pixels"].sum() > 0
    # `bench eval parsing --baseline`: against itself, every difference and interval is 0
    pred = run_dir / "parsing" / "lip_predictions"
    capsys.readouterr()
    code = cli.main(["eval", "parsing", str(pred), "lip", str(root), "--baseline", str(pred),
                     "--resamples", "20", "--json", "-q"])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)["metrics"]
    assert rows["mIoU"]["a"] == pytest.approx(stored["mIoU"])
    assert all(r["diff"] == r["lo"] == r["hi"] == 0 for r in rows.values())


def test_prediction_is_scored_at_the_original_image_size():
    """A 6x12 image fitted into a 12x12 input (padded above and below) comes back as a 6x12
    label map, scored against the 6x12 mask (SCHP warps the logits back before arg-max)."""
    def net(x):  # class 1 on the input's left half, background on the right, at full res
        z = torch.zeros(x.shape[0], 20, *x.shape[-2:])
        z[:, 1, :, :6] = 10.0
        z[:, 0, :, 6:] = 10.0
        return z

    pred = P.parse_image(net, torch.rand(3, 6, 12), (12, 12), (1.0,), flip=False)
    assert pred.shape == (6, 12)
    assert (pred[:, :6] == 1).all() and (pred[:, 6:] == 0).all()
    gt = np.zeros((6, 12), np.uint8)
    gt[:, :4] = 1
    gt[0, 11] = 255  # ignored
    r = P.evaluate([pred.numpy()], [gt])
    # class 0: 35 of its 47 valid pixels found, no false positives -> IoU 35/47;
    # class 1: its 24 pixels found plus 12 of class 0 -> IoU 24/36; 18 classes absent -> 0
    assert r.mIoU == pytest.approx((35 / 47 + 24 / 36) / 20)
    assert r.pixel_accuracy == pytest.approx(59 / 71)
