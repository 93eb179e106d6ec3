"""VAL-PAT pretraining (issue 6): attributes parsed from captions, the MoCo v3 and image-text
losses, the objective in the loop (export, strict reload, exact resume), the probe."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from backbones import create_backbone
from backbones.pretrain import profile_config, train
from backbones.pretrain.valpat import (ITCHead, ValpatViews, attribute_probe, caption_attributes,
                                       itc_head_path, load_itc_head, masked_bce, moco_loss,
                                       save_itc_head, text_model_cfg)
from bench import config as config_mod
from bench.data.synth.people import PA100K_ATTRIBUTES
from bench.errors import BenchError


@pytest.fixture(scope="module")
def bench_cfg(tmp_path_factory):
    import os

    cache = os.environ.get("HCBENCH_TEST_CACHE") or str(tmp_path_factory.mktemp("cache"))
    return config_mod.load(None, [f'paths.cache_dir="{cache}"'])


def _labels(caption):
    v, k = caption_attributes(caption)
    return ({a: int(x) for a, x, kk in zip(PA100K_ATTRIBUTES, v, k) if kk},
            {a for a, kk in zip(PA100K_ATTRIBUTES, k) if not kk})


def test_caption_attributes_of_a_synthetic_caption():
    lab, unknown = _labels("A woman with long black hair wearing a striped white long-sleeved "
                           "shirt and patterned navy dress, brown boots, with a navy shoulder "
                           "bag and something held in front.")
    assert unknown == {"Front", "Side", "Back"}  # no caption says the view
    on = {a for a, v in lab.items() if v}
    assert on == {"Female", "Age18-60", "LongSleeve", "UpperStride", "LowerPattern",
                  "Skirt&Dress", "boots", "ShoulderBag", "HoldObjectsInFront"}


def test_caption_attributes_tie_patterns_to_their_garment():
    lab, _ = _labels("A man wearing a blue shirt and striped black trousers, with a cap.")
    assert lab["LowerStripe"] == 1 and lab["UpperStride"] == 0 and lab["Hat"] == 1
    lab, _ = _labels("A man in a striped shirt and trousers.")
    assert lab["UpperStride"] == 1 and lab["LowerStripe"] == 0
    lab, _ = _labels("A boy in a plaid red-spliced short-sleeved shirt and shorts.")
    assert (lab["UpperPlaid"], lab["UpperSplice"], lab["ShortSleeve"], lab["LongSleeve"]) == (1, 1, 1, 0)
    assert (lab["AgeLess18"], lab["Female"], lab["Shorts"], lab["Trousers"]) == (1, 0, 1, 0)
    lab, _ = _labels("An elderly man in a long coat with a logo, seen from behind.")
    assert (lab["AgeOver60"], lab["LongCoat"], lab["UpperLogo"], lab["Back"], lab["Front"]) == (1, 1, 1, 1, 0)


def test_caption_attributes_leave_undecided_attributes_unlabelled():
    # a CUHK-PEDES style sentence: no gender word twice over, no lower garment named
    lab, unknown = _labels("The person is wearing a black jacket over a white t-shirt.")
    assert {"Female", "AgeOver60", "Age18-60", "AgeLess18", "Trousers", "Shorts", "Skirt&Dress",
            "ShortSleeve", "LongSleeve"} <= unknown  # jacket and t-shirt disagree on sleeves
    assert lab["Hat"] == 0 and lab["Backpack"] == 0  # present-keyword: absent means no
    lab, unknown = _labels("A man and a woman walking.")
    assert "Female" in unknown and lab["Age18-60"] == 1
    lab, _ = _labels("She is dressed in a grey sweater and jeans.")  # 'dressed' is no dress
    assert (lab["Female"], lab["Trousers"], lab["Skirt&Dress"], lab["LongSleeve"]) == (1, 1, 0, 1)
    lab, unknown = _labels("A man in a sleeveless vest.")  # neither sleeve length, decided
    assert (lab["ShortSleeve"], lab["LongSleeve"]) == (0, 0) and "LongSleeve" not in unknown


def test_caption_attributes_agree_with_the_truth_on_the_synthetic_pool(bench_cfg):
    from bench.data import dataset_root
    from bench.data.pools import read_luperson_ta

    root, _ = dataset_root(bench_cfg, "luperson_ta", profile="smoke")
    pool = read_luperson_ta(root)
    parsed = [caption_attributes(c, pool.attribute_names) for c in pool.captions]
    vals, known = np.stack([p[0] for p in parsed]), np.stack([p[1] for p in parsed])
    views = [pool.attribute_names.index(a) for a in ("Front", "Side", "Back")]
    others = [j for j in range(len(pool.attribute_names)) if j not in views]
    assert known[:, views].sum() == 0 and known[:, others].all()
    assert (vals[:, others] == pool.attributes[:, others]).all()


def test_masked_bce_by_hand():
    logits = torch.tensor([[0.0, 2.0, -1.0], [0.0, 0.0, 0.0]])
    target = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    known = torch.tensor([[1, 0, 1], [0, 0, 0]])
    # the mean over the labelled entries (0, 0) and (0, 2) only
    expected = (math.log(2) + math.log(1 + math.e)) / 2
    assert masked_bce(logits, target, known).item() == pytest.approx(expected, rel=1e-6)
    assert masked_bce(logits, target, torch.zeros(2, 3)).item() == 0.0
    # RethinkPAR's weights: a positive of an attribute with rate r weighs exp(1 - r)
    ratio = torch.tensor([0.2, 0.5, 0.9])
    weighted = (math.log(2) * math.exp(0.8) + math.log(1 + math.e) * math.exp(0.1)) / 2
    assert masked_bce(logits, target, known, ratio).item() == pytest.approx(weighted, rel=1e-6)
    from bench.metrics.attributes import weighted_bce

    torch.testing.assert_close(masked_bce(logits, target, torch.ones(2, 3), ratio) * 3,
                               weighted_bce(logits, target, ratio))  # it sums attributes


def test_moco_loss_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # normalised inside
    k = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    T = 0.5
    # row i: logits (1/T on the diagonal, 0 off it); CE = log(1 + e^{-1/T}); times 2T
    assert moco_loss(q, k, T).item() == pytest.approx(2 * T * math.log(1 + math.exp(-1 / T)),
                                                      rel=1e-6)
    k2 = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # keys swapped: positives orthogonal
    assert moco_loss(q, k2, T).item() == pytest.approx(2 * T * math.log(1 + math.exp(1 / T)),
                                                       rel=1e-6)


def test_views_are_two_person_crops_and_deterministic():
    from PIL import Image

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 64, 3), dtype=np.uint8))
    a = ValpatViews((64, 32))(img, torch.Generator().manual_seed(1))
    b = ValpatViews((64, 32))(img, torch.Generator().manual_seed(1))
    assert len(a) == 2 and a[0].shape == (3, 64, 32) and not torch.equal(a[0], a[1])
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)


def test_itc_head_round_trip_and_errors(tmp_path):
    torch.manual_seed(0)
    head = ITCHead(24, text_model_cfg("test"))
    path = save_itc_head(head, tmp_path / "x.text.safetensors", steps=1)
    again = load_itc_head(path)
    tok = head.text.tokenize(["A man in a red shirt.", "A woman with a hat."])
    torch.testing.assert_close(again.encode_text(tok), head.encode_text(tok))
    torch.testing.assert_close(again.logit_scale, head.logit_scale)
    assert itc_head_path(tmp_path / "test_sup_swin.safetensors").name == "test_sup_swin.text.safetensors"
    with pytest.raises(BenchError, match="not found"):
        load_itc_head(tmp_path / "nope.text.safetensors")
    other = save_itc_head(ITCHead(16, text_model_cfg("test")), tmp_path / "o.text.safetensors")
    other.with_suffix(".json").write_text((tmp_path / "x.text.json").read_text())
    with pytest.raises(BenchError, match=r"o\.text\.safetensors: not the image-text head"):
        load_itc_head(other)
    with pytest.raises(BenchError, match="text_model: unknown 'huge'"):
        text_model_cfg("huge")


def test_valpat_only_settings_leave_other_methods_hashes_alone():
    for m in ("dino", "solider", "clasp", "clip"):
        assert profile_config(m, "smoke", ssl_loss=3.0, text_model="test").hash() == \
            profile_config(m, "smoke").hash()
    assert profile_config("valpat", "smoke", ssl_loss=3.0).hash() != \
        profile_config("valpat", "smoke").hash()
    p = profile_config("valpat", "paper")
    assert (p.data, p.text_model, p.ssl_temp, p.momentum_teacher, p.clip_grad) == \
        ("luperson_ta", "base", 0.2, 0.99, 0.0)


def tiny_valpat(**kw):
    base = dict(arch="test", epochs=2, batch_size=4, max_images=16, global_size=(64, 32),
                head_hidden=32, head_bottleneck=16, text_model="test", save_every=100)
    base.update(kw)
    return profile_config("valpat", "smoke", **base)


def test_valpat_trains_exports_loads_strictly_and_resumes_exactly(tmp_path, bench_cfg):
    cfg = tiny_valpat()
    full = train(cfg, tmp_path / "full", bench_cfg=bench_cfg, device="cpu")
    assert full.zoo_name == "test_sup_swin" and full.steps == 8
    for k in ("ssl", "itc", "attr", "i2t_acc", "attr_acc"):
        assert math.isfinite(full.last[k]), k
    model = create_backbone("test_sup_swin", checkpoint=str(full.checkpoint))  # strict
    head = load_itc_head(itc_head_path(full.checkpoint))
    x = torch.randn(2, 3, 64, 32)
    model.eval()
    assert head.encode_image(model(x)).shape == (2, head.text.embed_dim)

    part = train(cfg.replace(stop_after=3), tmp_path / "resumed", bench_cfg=bench_cfg, device="cpu")
    assert part.checkpoint is None
    resumed = train(cfg, tmp_path / "resumed", bench_cfg=bench_cfg, device="cpu")
    assert resumed.resumed_from == 3
    a = torch.load(full.out_dir / "train_state.pth", weights_only=True)
    b = torch.load(resumed.out_dir / "train_state.pth", weights_only=True)
    for key in ("student", "teacher", "heads"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            torch.testing.assert_close(a[key][k], b[key][k], rtol=0, atol=0, msg=f"{key}.{k}")
    assert a["heads"].keys() >= {"itc.logit_scale", "attribute.weight"}
    for k, v in a["optimizer"]["state"].items():
        torch.testing.assert_close(v["exp_avg"], b["optimizer"]["state"][k]["exp_avg"],
                                   rtol=0, atol=0)


def test_attribute_probe_is_in_range():
    torch.manual_seed(0)
    r = attribute_probe(create_backbone("test_sup_swin"), n_train=16, n_test=16,
                        input_size=(64, 32), steps=5)
    assert 0 <= r["mA"] <= 100 and r["chance_mA"] == 50.0 and len(r["label_mA"]) == 26
