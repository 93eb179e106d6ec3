"""The backbone zoo: SOLIDER's Swin (against timm and an independent reading of the official
algorithm), the λ controller, checkpoint loading, the registry entries, and CLASP's PC-MoE.

Default tests run on CPU in well under a minute; full-size models are ``@pytest.mark.slow``.
"""
from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
import torch.nn.functional as F

from backbone_helpers import lam_input, reference_swin_forward
from backbones import BACKBONES, create_backbone, list_backbones
from backbones.checkpoint import (concat_to_unfold_order, load_checkpoint,
                                  resize_rel_pos_table, save_checkpoint, unwrap)
from backbones.swin import PatchMerging, SwinTransformer, relative_position_index
from bench.errors import BenchError

torch.set_num_threads(min(2, torch.get_num_threads()))

TEST_ENTRIES = list_backbones("test_*")
FULL_ENTRIES = [n for n in list_backbones() if not n.startswith("test_")]


def perturb(model, scale=0.1, seed=0):
    """Move norms and biases off their 1/0 init so that permutation bugs cannot hide."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n or n.endswith("bias") or "relative_position" in n:
                p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


def small_swin(**kw):
    """Two blocks in every stage so every stage has a shifted block."""
    kw = {"embed_dims": 16, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 2, 4), **kw}
    return perturb(SwinTransformer(**kw)).eval()


def solider_training_dict(model):
    """A checkpoint laid out as SOLIDER's released swin_*.pth (main_solider.py's save_dict)."""
    sd = model.state_dict()
    head = {"head.mlp.0.weight": torch.randn(8, 4), "head.last_layer.weight_g": torch.ones(1, 8),
            "head.last_layer.weight_v": torch.randn(16, 8)}
    return {
        "teacher": {**{"backbone." + k: v.clone() for k, v in sd.items()}, **head},
        "student": {"module.backbone." + k: v.clone() + 1 for k, v in sd.items()},
        "optimizer": {"state": {}, "param_groups": [{"lr": 5e-5, "params": [0, 1]}]},
        "epoch": 10,
        "args": argparse.Namespace(arch="swin_tiny", lr=5e-5, out_dim=65536),
        "dino_loss": {"center": torch.zeros(1, 16)},
        "fp16_scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 3},
    }


# --------------------------------------------------------------------------------------
# equivalence with timm's Swin (ImageNet weights path)
# --------------------------------------------------------------------------------------
def _timm_swin(variant, always_partition=False):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = timm.create_model(variant, pretrained=False, always_partition=always_partition)
    return perturb(ref).eval()


def _timm_vs_ours(variant, entry, always_partition, tmp_path, batch=1):
    ref = _timm_swin(variant, always_partition)
    path = tmp_path / "imagenet.pth"
    torch.save(ref.state_dict(), path)
    # Microsoft/timm disable the shift where a map is one window (7x7 at stage 3 of 224);
    # SOLIDER's code does not.  always_partition=True makes timm shift there too.
    ours = create_backbone(entry, shift_single_window=always_partition).eval()
    report = load_checkpoint(ours, path)
    assert report.format == "timm_swin"
    assert set(report.kept_init) == {f"norm{i}.{p}" for i in range(3) for p in ("weight", "bias")}
    x = torch.randn(batch, 3, 224, 224)
    with torch.no_grad():
        final, want_maps = ref.forward_intermediates(x)
        want = ref.forward_head(final, pre_logits=True)
        got = ours(x)
        got_maps = ours.forward_intermediates(x, norm=False)
    return want, got, want_maps, got_maps


@pytest.mark.parametrize("always_partition", [False, True], ids=["ms_rule", "solider_rule"])
def test_timm_swin_tiny_equivalence(tmp_path, always_partition):
    want, got, want_maps, got_maps = _timm_vs_ours(
        "swin_tiny_patch4_window7_224", "sup_swin_t", always_partition, tmp_path)
    assert got.shape == want.shape == (1, 768)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    for a, b in zip(got_maps, want_maps, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_microsoft_swin_layout_loads_like_timm(tmp_path):
    """Microsoft's release: downsample at the end of stages 0-2, buffers, under 'model'."""
    sd = _timm_swin("swin_tiny_patch4_window7_224").state_dict()
    ms = {}
    for k, v in sd.items():
        if ".downsample." in k:
            i = int(k.split(".")[1])
            k = k.replace(f"layers.{i}.", f"layers.{i - 1}.", 1)
        ms[k.replace("head.fc.", "head.")] = v
    ms["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(49, 49, dtype=torch.long)
    ms["layers.0.blocks.1.attn_mask"] = torch.zeros(64, 49, 49)
    torch.save({"model": ms}, tmp_path / "ms.pth")
    torch.save(sd, tmp_path / "timm.pth")
    a, b = create_backbone("sup_swin_t"), create_backbone("sup_swin_t")
    assert load_checkpoint(a, tmp_path / "ms.pth").format == "ms_swin"
    load_checkpoint(b, tmp_path / "timm.pth")
    for k, v in b.state_dict().items():
        assert torch.equal(a.state_dict()[k], v), k


@pytest.mark.slow
@pytest.mark.parametrize("variant,entry,rel", [
    ("swin_small_patch4_window7_224", "sup_swin_s", False),
    ("swin_base_patch4_window7_224", "sup_swin_b", True),
])
def test_timm_swin_small_base_equivalence(tmp_path, variant, entry, rel):
    want, got, want_maps, got_maps = _timm_vs_ours(variant, entry, False, tmp_path)
    tol = dict(atol=1e-5, rtol=1e-4) if rel else dict(atol=1e-5, rtol=0)
    torch.testing.assert_close(got, want, **tol)
    for a, b in zip(got_maps, want_maps, strict=True):
        scale = b.abs().max().item() if rel else 1.0
        assert (a - b).abs().max().item() <= (1e-4 * scale if rel else 1e-5)


def test_merge_order_conversion_matches_unfold():
    """timm/MS concat order -> nn.Unfold order, checked on a real 2x2 neighbourhood."""
    B, H, W, C = 1, 4, 6, 3
    x = torch.randn(B, H, W, C)
    concat = x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3)
    unfold = F.unfold(x.permute(0, 3, 1, 2), 2, stride=2).transpose(1, 2)
    unfold = unfold.reshape(B, H // 2, W // 2, 4 * C)
    torch.testing.assert_close(concat_to_unfold_order(concat), unfold)


# --------------------------------------------------------------------------------------
# equivalence with the official algorithm (padding, shifted small maps, strides, λ)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("strides", [(4, 2, 2, 2), (4, 2, 2, 1), (4, 2, 1, 1)])
@pytest.mark.parametrize("size", [(256, 128), (70, 45)])
def test_matches_official_algorithm(strides, size):
    m = small_swin(strides=strides, semantic_weight=0.0)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        got, got_maps = m(x, semantic_weight=0.3), m.forward_intermediates(x, semantic_weight=0.3)
        want, want_maps = reference_swin_forward(m.state_dict(), x, m.depths, (1, 2, 2, 4),
                                                 strides, semantic_weight=lam_input(0.3, 2))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    for a, b in zip(got_maps, want_maps, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # 256x128: the last stage is 8x4 (stride 32), padded to 14x7 and still shifted
    if size == (256, 128) and strides == (4, 2, 2, 2):
        assert got_maps[-1].shape[-2:] == (8, 4)


def test_gradients_match_official_algorithm():
    """SDPA with (bias + mask) as attn_mask must back-propagate into the bias tables."""
    m = small_swin(semantic_weight=0.5)
    x = torch.randn(2, 3, 96, 64)
    lam = torch.tensor([0.0, 1.0])
    m(x, semantic_weight=lam).pow(2).sum().backward()
    params = {n: p.detach().clone().requires_grad_(True) for n, p in m.named_parameters()}
    sd = {**params, **dict(m.named_buffers())}
    want, _ = reference_swin_forward(sd, x, m.depths, (1, 2, 2, 4),
                                     semantic_weight=torch.stack([lam, 1 - lam], 1))
    want.pow(2).sum().backward()
    for n, p in m.named_parameters():
        ref = params[n].grad
        if ref is None:  # norm0..2 do not reach the pooled output
            assert p.grad is None, n
        else:
            torch.testing.assert_close(p.grad, ref, atol=1e-6 * max(1.0, ref.abs().max().item()),
                                       rtol=1e-4, msg=n)
    assert m.stages[0].blocks[1].attn.w_msa.relative_position_bias_table.grad.abs().sum() > 0


@pytest.mark.parametrize("stride,size", [(2, (7, 5)), (2, (8, 6)), (1, (7, 5)), (1, (4, 4))])
def test_patch_merging_is_unfold_with_corner_padding(stride, size):
    C = 3
    pm = PatchMerging(C, 6, stride)
    x = torch.randn(2, *size, C)
    got = pm(x)
    xc = x.permute(0, 3, 1, 2)
    H, W = size
    pad_h = max((math.ceil(H / stride) - 1) * stride + 2 - H, 0)
    pad_w = max((math.ceil(W / stride) - 1) * stride + 2 - W, 0)
    u = F.unfold(F.pad(xc, [0, pad_w, 0, pad_h]), 2, stride=stride).transpose(1, 2)
    want = pm.reduction(pm.norm(u)).reshape(got.shape)
    assert got.shape[1:3] == (math.ceil(H / stride), math.ceil(W / stride))
    torch.testing.assert_close(got, want)


def test_relative_position_index_matches_official_formula():
    ws = 7  # official WindowMSA: double_step_seq(2*Ww-1, Wh, 1, Ww), + its transpose, flip(1)
    seq = torch.arange(0, (2 * ws - 1) * ws, 2 * ws - 1)[:, None] + torch.arange(ws)[None]
    seq = seq.reshape(1, -1)
    official = (seq + seq.T).flip(1)
    assert torch.equal(relative_position_index(ws), official)


# --------------------------------------------------------------------------------------
# SOLIDER checkpoint and the λ controller
# --------------------------------------------------------------------------------------
@pytest.fixture
def solider_file(tmp_path):
    src = perturb(create_backbone("test_solider_swin")).eval()
    path = tmp_path / "swin_tiny.pth"
    torch.save(solider_training_dict(src), path)
    return src, path


def test_official_solider_checkpoint_loads_strictly(solider_file):
    src, path = solider_file
    m = create_backbone("test_solider_swin", checkpoint=str(path)).eval()
    for k, v in src.state_dict().items():  # the teacher, not the student (+1)
        assert torch.equal(m.state_dict()[k], v), k
    report = load_checkpoint(create_backbone("test_solider_swin"), path)
    assert report.format == "solider" and report.loaded == len(src.state_dict())
    x = torch.randn(2, 3, 128, 64)
    with torch.no_grad():
        torch.testing.assert_close(m(x, semantic_weight=0.2), src(x, semantic_weight=0.2))


def test_student_and_bare_layouts_load(tmp_path, solider_file):
    src, _ = solider_file
    sd = src.state_dict()
    layouts = {"student": {"module.backbone." + k: v for k, v in sd.items()},
               "bare": dict(sd),
               "mmdet": {"state_dict": {"backbone." + k: v for k, v in sd.items()}}}
    for name, obj in layouts.items():
        torch.save(obj, tmp_path / f"{name}.pth")
        m = create_backbone("test_solider_swin", checkpoint=tmp_path / f"{name}.pth")
        assert all(torch.equal(m.state_dict()[k], v) for k, v in sd.items()), name


def test_lambda_semantics(solider_file):
    _, path = solider_file
    m = create_backbone("test_solider_swin", checkpoint=path).eval()
    x = torch.randn(3, 3, 256, 128)
    with torch.no_grad():
        o0, o1 = m.forward_intermediates(x, 0.0), m.forward_intermediates(x, 1.0)
        # stage 0's output is taken before the first modulation
        assert torch.equal(o0[0], o1[0])
        for a, b in zip(o0[1:], o1[1:]):
            assert (a - b).abs().max() > 1e-4
        # the last stage's FiLM never reaches an output
        before = m(x, 0.7)
        m.semantic_embed_w[3].weight.normal_()
        m.semantic_embed_b[3].bias.normal_()
        assert torch.equal(m(x, 0.7), before)
        assert not m.semantic_embed_w[3].weight.requires_grad
        # per-sample λ equals per-call floats row by row, for (B,) and (B, 1)
        lams = [0.0, 0.35, 1.0]
        rows = torch.cat([m(x[i:i + 1], lam) for i, lam in enumerate(lams)])
        torch.testing.assert_close(m(x, torch.tensor(lams)), rows, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(m(x, torch.tensor(lams)[:, None]), rows, atol=1e-5, rtol=1e-5)
        per_map = m.forward_intermediates(x, torch.tensor(lams))
        assert torch.equal(per_map[0], o0[0])
        # the constructor default λ is used when a call gives none
        torch.testing.assert_close(m(x), m(x, 1.0))
        m7 = create_backbone("test_solider_swin", checkpoint=path, semantic_weight=0.7).eval()
        torch.testing.assert_close(m7(x), m(x, 0.7))


def test_lambda_path_matches_official_with_controller_weights(solider_file):
    _, path = solider_file
    m = create_backbone("test_solider_swin", checkpoint=path).eval()
    x = torch.randn(2, 3, 96, 48)
    with torch.no_grad():
        want, _ = reference_swin_forward(m.state_dict(), x, m.depths, (1, 2, 4, 8),
                                         semantic_weight=lam_input(0.2, 2))
        torch.testing.assert_close(m(x, 0.2), want, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------
def test_registry_names_and_meta():
    names = list_backbones()
    for method in ("sup", "dino", "dinoclust", "solider", "valpat", "clasp"):
        for size in "tsb":
            assert f"{method}_swin_{size}" in names
    assert {"test_solider_swin", "test_sup_swin", "test_clasp_swin"} <= set(TEST_ENTRIES)
    for name in names:
        meta = BACKBONES.get(name).meta
        cfg = meta["cfg"]
        assert meta["arch"] == cfg.arch in ("swin_t", "swin_s", "swin_b", "test")
        assert meta["semantic_controller"] == (meta["pretrain_method"] == "solider"
                                               or name == "test_solider_swin")
        assert meta["paper"] and meta["source"]
        assert cfg.preprocessing("reid") == {"input_size": (384, 128), "mean": (0.5,) * 3,
                                             "std": (0.5,) * 3}
        assert cfg.preprocessing("pose")["mean"] == (0.485, 0.456, 0.406)
        assert len(meta["feature_channels"]) == len(meta["feature_strides"]) == 4
        with pytest.raises(TypeError):
            cfg.input_size["reid"] = (1, 1)
    assert BACKBONES.get("solider_swin_b").meta["feature_channels"] == (128, 256, 512, 1024)
    assert BACKBONES.get("clasp_swin_t").meta["task_prompts"][0] == "default"


@pytest.mark.parametrize("name", TEST_ENTRIES)
def test_test_entries_forward_backward_shapes(name):
    m = create_backbone(name, drop_path_rate=0.1).train()
    cfg = BACKBONES.get(name).meta["cfg"]
    x = torch.randn(2, 3, 256, 128)
    maps = m.forward_intermediates(x)
    assert m.feature_channels == list(cfg.feature_channels)
    assert m.feature_strides == list(cfg.feature_strides) == [4, 8, 16, 32]
    for f, c, s in zip(maps, m.feature_channels, m.feature_strides, strict=True):
        assert f.shape == (2, c, 256 // s, 128 // s)
    pooled = m(x)
    assert pooled.shape == (2, m.num_features) and torch.isfinite(pooled).all()
    (pooled.pow(2).mean() + sum(f.mean() for f in maps)).backward()
    frozen = {"semantic_embed_w.3.weight", "semantic_embed_w.3.bias",
              "semantic_embed_b.3.weight", "semantic_embed_b.3.bias"}
    for n, p in m.named_parameters():
        if n in frozen:
            assert not p.requires_grad
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), n


@pytest.mark.parametrize("strides,expect", [((4, 2, 2, 1), [4, 8, 16, 16]),
                                            ((4, 2, 1, 1), [4, 8, 8, 8])])
def test_stride_overrides(strides, expect):
    m = create_backbone("test_solider_swin", strides=strides).eval()
    assert m.feature_strides == expect
    x = torch.randn(1, 3, 256, 128)
    with torch.no_grad():
        maps = m.forward_intermediates(x)
    assert [tuple(f.shape[-2:]) for f in maps] == [(256 // s, 128 // s) for s in expect]
    assert [f.shape[1] for f in maps] == [32, 64, 128, 256]


def test_out_indices_override_and_full_checkpoint(solider_file):
    src, path = solider_file
    m = create_backbone("test_solider_swin", out_indices=(1, 2, 3), checkpoint=path).eval()
    assert not hasattr(m, "norm0") and m.feature_strides == [8, 16, 32]
    report = load_checkpoint(m, path)
    assert set(report.ignored) == {"norm0.weight", "norm0.bias", "head.mlp.0.weight",
                                   "head.last_layer.weight_g", "head.last_layer.weight_v"}
    x = torch.randn(1, 3, 128, 64)
    with torch.no_grad():
        got, want = m.forward_intermediates(x, 0.5), src.forward_intermediates(x, 0.5)[1:]
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(m(x, 0.5), src(x, 0.5))


def test_construction_errors():
    with pytest.raises(BenchError, match=r"unknown option\(s\) depth "):
        create_backbone("test_sup_swin", depth=3)
    with pytest.raises(BenchError, match="strides after the first must be 1 or 2"):
        create_backbone("test_sup_swin", strides=(4, 2, 3, 2))
    with pytest.raises(BenchError, match="out_indices must lie in 0..3"):
        create_backbone("test_sup_swin", out_indices=(4,))


@pytest.mark.slow
@pytest.mark.parametrize("name", FULL_ENTRIES)
def test_full_size_entries_forward(name):
    m = create_backbone(name).eval()
    cfg = BACKBONES.get(name).meta["cfg"]
    kw = {"task": "reid"} if cfg.task_prompts else {}
    for size in ((256, 128), (384, 128)):
        with torch.no_grad():
            maps = m.forward_intermediates(torch.randn(1, 3, *size), **kw)
        assert [f.shape[1] for f in maps] == list(cfg.feature_channels)
        assert [f.shape[-2:] for f in maps] == [(size[0] // s, size[1] // s)
                                                for s in cfg.feature_strides]


# --------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------
def test_lambda_and_task_errors():
    plain = create_backbone("test_sup_swin")
    x = torch.randn(1, 3, 64, 32)
    with pytest.raises(BenchError, match=r"'test_sup_swin' has no semantic controller"):
        plain(x, semantic_weight=0.5)
    with pytest.raises(BenchError, match=r"'test_sup_swin' has no semantic controller"):
        plain.forward_intermediates(x, semantic_weight=torch.ones(1))
    with pytest.raises(BenchError, match="has no semantic controller"):
        create_backbone("sup_swin_t", semantic_weight=0.5)
    with pytest.raises(BenchError, match=r"has no task prompts \(PC-MoE\); task='reid'"):
        plain(x, task="reid")
    with pytest.raises(BenchError, match=r"has no task prompts"):
        create_backbone("test_solider_swin").forward_intermediates(x, task="pose")
    with pytest.raises(BenchError, match=r"shape \(2,\) or \(2, 1\) .* got \(2, 2\)"):
        create_backbone("test_solider_swin")(torch.randn(2, 3, 64, 32), torch.ones(2, 2))


def test_strict_load_reports_missing_and_unexpected(tmp_path, solider_file):
    _, solider = solider_file
    # a controller checkpoint into a backbone without one: unexpected keys
    with pytest.raises(BenchError) as e:
        create_backbone("test_sup_swin", checkpoint=solider)
    msg = str(e.value)
    assert str(solider) in msg and "has a semantic controller" in msg
    assert "16 unexpected: semantic_embed_w.*.weight x4, semantic_embed_w.*.bias x4" in msg
    assert "\n" not in msg and e.value.unexpected[0] == "semantic_embed_w.0.weight"
    # a controller-less checkpoint into SOLIDER's Swin: missing keys
    plain = tmp_path / "plain.pth"
    torch.save(create_backbone("test_sup_swin").state_dict(), plain)
    with pytest.raises(BenchError, match=r"plain.pth: .*has no semantic controller.*16 missing"):
        create_backbone("test_solider_swin", checkpoint=plain)
    # strict=False loads what fits and reports the rest
    report = load_checkpoint(create_backbone("test_solider_swin"), plain, strict=False)
    assert len(report.missing) == 16 and report.loaded > 0
    # wrong variant
    with pytest.raises(BenchError, match=r"wrong variant: the checkpoint is a Swin with embed 32, "
                                         r"depths \(1, 1, 2, 1\), sup_swin_t has embed 96"):
        create_backbone("sup_swin_t", checkpoint=plain)
    # wrong prefix
    odd = tmp_path / "odd.pth"
    plain_sd = create_backbone("test_sup_swin").state_dict()
    torch.save({"encoder." + k: v for k, v in plain_sd.items()}, odd)
    with pytest.raises(BenchError, match=r"odd.pth: .*none of its .* keys match.*wrong prefix "
                                         r"\(its keys sit under 'encoder.'\)"):
        create_backbone("test_sup_swin", checkpoint=odd)
    with pytest.raises(BenchError, match=r"nope.pth: checkpoint file not found"):
        create_backbone("test_sup_swin", checkpoint=tmp_path / "nope.pth")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"patch_embed.projection.weight": torch.zeros(1)},
                "x": _Payload(marker)}, path)
    with pytest.raises(BenchError, match=r"evil.pth: refused to load: .*weights_only=True"):
        create_backbone("test_sup_swin", checkpoint=path)
    assert not marker.exists()


def test_safetensors_round_trip_and_sidecar(tmp_path):
    src = perturb(create_backbone("test_solider_swin")).eval()
    path = save_checkpoint(src, tmp_path / "ours.safetensors", epoch=3)
    side = json.loads((tmp_path / "ours.json").read_text())
    assert side["arch"] == "test" and side["epoch"] == 3 and side["semantic_controller"]
    m = create_backbone("test_solider_swin", checkpoint=path).eval()
    x = torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x, 0.4), src(x, 0.4))
    with pytest.raises(BenchError, match=r"ours.safetensors: the checkpoint is a test .* "
                                         r"'solider_swin_t' is a swin_t: wrong variant"):
        create_backbone("solider_swin_t", checkpoint=path)
    (tmp_path / "ours.json").unlink()  # the header carries the same description
    report = load_checkpoint(create_backbone("test_solider_swin"), path)
    assert report.format == "hcbench" and report.meta["arch"] == "test"


def test_relative_position_tables_are_resized(tmp_path, solider_file):
    src, path = solider_file
    m = create_backbone("test_solider_swin", window_size=8)
    report = load_checkpoint(m, path)
    key = "stages.0.blocks.0.attn.w_msa.relative_position_bias_table"
    assert key in report.resized and m.state_dict()[key].shape == (225, 1)
    table = src.state_dict()[key]
    want = F.interpolate(table.T.reshape(1, 1, 13, 13), size=(15, 15), mode="bicubic")
    torch.testing.assert_close(m.state_dict()[key], want.reshape(1, 225).T)
    assert torch.equal(resize_rel_pos_table(table, 169), table)
    assert m.stages[0].blocks[0].attn.w_msa.relative_position_index.max() == 224


def test_unwrap_prefers_teacher_and_strips_prefixes():
    t = torch.zeros(1)
    sd, fmt = unwrap({"teacher": {"backbone.norm0.weight": t, "head.mlp.0.weight": t},
                      "student": {"module.backbone.norm0.weight": t}})
    assert fmt == "solider" and list(sd) == ["norm0.weight"]
    sd, _ = unwrap({"model": {"module.backbone.norm1.bias": t}})
    assert list(sd) == ["norm1.bias"]


# --------------------------------------------------------------------------------------
# bf16 and torch.compile
# --------------------------------------------------------------------------------------
def test_bf16_autocast_and_bf16_weights():
    m = perturb(create_backbone("test_solider_swin")).eval()
    x = torch.randn(2, 3, 128, 64)
    with torch.no_grad():
        ref = m(x, 0.5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            amp = m(x, 0.5)
        mb = create_backbone("test_solider_swin").eval()
        mb.load_state_dict(m.state_dict())
        half = mb.to(torch.bfloat16)(x.bfloat16(), torch.tensor([0.5, 0.5]))
    for y in (amp, half):
        assert torch.isfinite(y).all()
        assert (y.float() - ref).norm() / ref.norm() < 0.05


def test_fullgraph_trace_has_no_graph_breaks():
    m = create_backbone("test_solider_swin").eval()
    x = torch.randn(2, 3, 128, 64)
    compiled = torch.compile(m, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, 0.3), m(x, 0.3))


@pytest.mark.slow
def test_inductor_compile_matches_eager():
    m = create_backbone("test_clasp_swin").eval()
    x = torch.randn(2, 3, 256, 128)
    compiled = torch.compile(m, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, task="pose"), m(x, task="pose"),
                                   atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------
# CLASP: prompt-controlled MoE
# --------------------------------------------------------------------------------------
def test_clasp_gates_and_outputs_differ_between_tasks():
    m = create_backbone("test_clasp_swin").eval()
    assert m.tasks == ("default", "reid", "attribute", "search", "detection", "parsing", "pose")
    gates = {t: m.task_gates(t) for t in m.tasks}
    blocks = list(gates["reid"])
    assert blocks == ["stages.2.blocks.0.ffn", "stages.2.blocks.1.ffn", "stages.3.blocks.0.ffn"]
    for name in blocks:
        g, c = gates["reid"][name]
        assert g.shape == (4,) and torch.allclose(g.sum(), torch.tensor(1.0))
        assert c.shape == (4, m.stages[int(name.split(".")[1])].blocks[0].norm1.normalized_shape[0])
        assert ((c > 0) & (c < 1)).all()
        assert (gates["reid"][name][0] - gates["pose"][name][0]).abs().max() > 1e-3
        assert (gates["reid"][name][1] - gates["pose"][name][1]).abs().max() > 1e-3
    x = torch.randn(2, 3, 128, 64)
    with torch.no_grad():
        outs = {t: m.forward_intermediates(x, task=t) for t in m.tasks}
        torch.testing.assert_close(m.forward_intermediates(x), outs["default"])
    for t in m.tasks[1:]:
        assert torch.equal(outs[t][0], outs["default"][0])  # dense stages are shared
        assert torch.equal(outs[t][1], outs["default"][1])
        assert (outs[t][3] - outs["default"][3]).abs().max() > 1e-4


def test_clasp_fused_experts_equal_explicit_mixture():
    from backbones.clasp import PromptMoEFFN
    torch.manual_seed(0)
    ffn = PromptMoEFFN(dims=12, hidden=48, num_experts=3, prompt_dims=8)
    prompt, x = torch.randn(8), torch.randn(2, 5, 4, 12)
    g, c = ffn.gates(prompt)
    ex = ffn.experts
    want = sum(g[e] * c[e] * F.linear(F.gelu(F.linear(x, ex.w1[e], ex.b1[e])), ex.w2[e], ex.b2[e])
               for e in range(3))
    torch.testing.assert_close(ffn(x, prompt), want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("task", ["default", "reid", "attribute", "search", "detection",
                                  "parsing", "pose"])
def test_clasp_forward_backward_per_task(task):
    m = create_backbone("test_clasp_swin").train()
    pooled = m(torch.randn(2, 3, 128, 64), task=task)
    pooled.pow(2).mean().backward()
    row = m.tasks.index(task)
    grad = m.task_prompts.grad
    assert grad[row].abs().sum() > 0
    assert grad[[i for i in range(len(m.tasks)) if i != row]].abs().sum() == 0
    for _, blk in m.moe_blocks():
        for p in (blk.experts.w1, blk.experts.w2, blk.gate_global.weight, blk.gate_channel.weight):
            assert p.grad is not None and p.grad.abs().sum() > 0


def test_clasp_errors_and_checkpoints(tmp_path):
    m = create_backbone("test_clasp_swin").eval()
    x = torch.randn(1, 3, 64, 32)
    with pytest.raises(BenchError, match=r"unknown task 'reidd' .*known: default, reid"):
        m(x, task="reidd")
    reid = create_backbone("test_clasp_swin", default_task="reid").eval()
    reid.load_state_dict(m.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(reid(x), m(x, task="reid"))
    with pytest.raises(BenchError, match="default_task 'reidd' is not one of the prompts"):
        create_backbone("test_clasp_swin", default_task="reidd")
    with pytest.raises(BenchError, match="has no semantic controller"):
        m(x, semantic_weight=0.5)
    path = save_checkpoint(m, tmp_path / "clasp.safetensors")
    assert json.loads((tmp_path / "clasp.json").read_text())["task_prompts"][1] == "reid"
    m2 = create_backbone("test_clasp_swin", checkpoint=path).eval()
    with torch.no_grad():
        torch.testing.assert_close(m2(x, task="parsing"), m(x, task="parsing"))
    dense = tmp_path / "dense.pth"
    torch.save(create_backbone("test_sup_swin").state_dict(), dense)
    with pytest.raises(BenchError, match="CLASP .PC-MoE. backbone and the checkpoint is a dense"):
        create_backbone("test_clasp_swin", checkpoint=dense)
    with pytest.raises(BenchError, match="has CLASP PC-MoE weights"):
        create_backbone("test_sup_swin", checkpoint=path)
