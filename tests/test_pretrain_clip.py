"""CLASP's CLIP teacher (issue 6): open_clip models from local files, dense features,
``bench pretrain --method clip``."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from backbones.clip_teacher import CLIPTeacher, build_clip, dense_tokens, load_teacher
from backbones.pretrain import profile_config, train
from backbones.pretrain.clip import CLIP_MODELS, CaptionView, clip_loss
from bench import config as config_mod
from bench.errors import BenchError

TINY = CLIP_MODELS["test"]


@pytest.fixture(scope="module")
def bench_cfg(tmp_path_factory):
    import os

    cache = os.environ.get("HCBENCH_TEST_CACHE") or str(tmp_path_factory.mktemp("cache"))
    return config_mod.load(None, [f'paths.cache_dir="{cache}"'])


def _images(n=3, size=(64, 32)):
    return torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(0))


def test_a_random_open_clip_model_saved_to_disk_reloads_exactly(tmp_path):
    torch.manual_seed(0)
    clip = build_clip(TINY)
    path = tmp_path / "clip.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in clip.state_dict().items()}}, path)
    cfg_file = tmp_path / "tiny.json"
    cfg_file.write_text(json.dumps(TINY))
    ref = CLIPTeacher(clip)
    for model in (TINY, str(cfg_file)):
        t = load_teacher(path, model=model)
        x = _images()
        torch.testing.assert_close(t.encode_image(x), ref.encode_image(x))
        torch.testing.assert_close(t.encode_dense(x), ref.encode_dense(x))
        texts = ["A man wearing a red shirt.", "A woman with a hat."]
        torch.testing.assert_close(t.encode_text(texts), ref.encode_text(texts))


def test_teacher_errors_name_the_file(tmp_path):
    with pytest.raises(BenchError, match="not found"):
        load_teacher(tmp_path / "missing.pt", model=TINY)
    torch.manual_seed(0)
    path = tmp_path / "clip.pt"
    torch.save(build_clip(TINY).state_dict(), path)
    with pytest.raises(BenchError, match=r"clip\.pt: no sidecar"):
        load_teacher(path)
    other = json.loads(json.dumps(TINY))
    other["vision_cfg"]["width"] = 48
    with pytest.raises(BenchError, match=r"clip\.pt: not a checkpoint of this open_clip model"):
        load_teacher(path, model=other)
    with pytest.raises(BenchError, match="not an open_clip model name"):
        load_teacher(path, model="no-such-model")
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(BenchError, match=r"bad\.json: malformed JSON"):
        load_teacher(path, model=str(bad))
    hf = json.loads(json.dumps(TINY))
    hf["text_cfg"]["hf_model_name"] = "bert-base-uncased"
    with pytest.raises(BenchError, match="Hugging Face"):
        load_teacher(path, model=hf)


def test_avg_pooled_image_embedding_is_the_mean_of_the_dense_tokens():
    torch.manual_seed(0)
    clip = build_clip(TINY).eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        dense = dense_tokens(clip.visual, x)
        pooled = clip.encode_image(x)
    assert dense.shape == (2, 4, 2, TINY["embed_dim"])
    torch.testing.assert_close(dense.mean((1, 2)), pooled, rtol=1e-5, atol=1e-5)


def test_tok_pooled_dense_tokens_go_through_the_same_head():
    cfg = json.loads(json.dumps(TINY))
    cfg["vision_cfg"]["pool_type"] = "tok"
    torch.manual_seed(0)
    clip = build_clip(cfg).eval()
    x = torch.randn(1, 3, 64, 32)
    v = clip.visual
    with torch.no_grad():
        tokens = v.transformer(v._embeds(x))
        expect = v.ln_post(tokens[:, 1:]) @ v.proj
        torch.testing.assert_close(dense_tokens(v, x).reshape(1, -1, cfg["embed_dim"]), expect)
        torch.testing.assert_close(v.ln_post(tokens[:, 0]) @ v.proj, clip.encode_image(x))


def test_teacher_renormalises_and_resizes_imagenet_inputs():
    torch.manual_seed(0)
    clip = build_clip(TINY)
    t = CLIPTeacher(clip, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    raw = torch.rand(1, 3, 128, 64)
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    got = t.preprocess((raw - mean) / std)
    want = (F.interpolate(raw, size=(64, 32), mode="bilinear", align_corners=False) - 0.5) / 0.25
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not any(p.requires_grad for p in t.parameters())


def test_clip_loss_by_hand():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    loss, stats = clip_loss(img, txt, torch.tensor(2.0))
    # logits = 2 * [[1, 1], [0, 0]]; image rows: log(1+e^0)=ln2 for row 0, ln2 for row 1;
    # text rows (columns): col 0 = [2, 0] -> ln(1+e^-2), col 1 = [2, 0] target 1 -> ln(1+e^2)
    i2t = math.log(2)
    t2i = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(2))) / 2
    assert loss.item() == pytest.approx((i2t + t2i) / 2, abs=1e-6)
    assert stats["i2t_acc"] == pytest.approx(0.5)


def test_caption_view_keeps_colours():
    from PIL import Image

    img = Image.new("RGB", (64, 128), (200, 35, 35))
    (x,) = CaptionView((64, 32))(img, torch.Generator().manual_seed(0))
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    rgb = (x * std + mean).mean((1, 2)) * 255
    torch.testing.assert_close(rgb, torch.tensor([200.0, 35.0, 35.0]), atol=1.0, rtol=0)


def test_pretrain_clip_exports_a_teacher_its_sidecar_describes(tmp_path, bench_cfg):
    cfg = profile_config("clip", "smoke", clip_model="test", epochs=2, batch_size=8,
                         max_images=16, save_every=100)
    res = train(cfg, tmp_path / "run", bench_cfg=bench_cfg, device="cpu")
    assert res.checkpoint.name == "clip_test.safetensors" and res.zoo_name == "clip_test"
    assert res.steps == 4 and math.isfinite(res.last["loss"])
    side = json.loads(res.checkpoint.with_suffix(".json").read_text())
    assert side["open_clip_config"] == TINY and side["pretrain_method"] == "clip"
    teacher = load_teacher(res.checkpoint)  # architecture from the sidecar
    import open_clip  # plain open_clip reads the file too

    clip = build_clip(TINY)
    open_clip.load_checkpoint(clip, str(res.checkpoint))
    x = _images()
    torch.testing.assert_close(teacher.encode_image(x),
                               CLIPTeacher(clip, side["mean"], side["std"]).encode_image(x))
    # the trained weights moved away from a fresh init of the same seed
    torch.manual_seed(cfg.seed)
    fresh = build_clip(TINY)
    assert not torch.equal(fresh.visual.proj, clip.visual.proj)


def test_clip_hash_ignores_the_swin_arch():
    a = profile_config("clip", "smoke", arch="swin_s")
    b = profile_config("clip", "smoke", arch="test")
    assert a.hash() == b.hash()
    assert a.hash() != profile_config("clip", "smoke", clip_model="test").hash()


def test_cli_pretrain_clip_prints_how_to_use_the_teacher(bench_cli, workdir, bench_cfg,
                                                         monkeypatch):
    import backbones.pretrain as pre

    small = profile_config("clip", "smoke", clip_model="test", epochs=1, batch_size=8,
                           max_images=8)
    seen = {}

    def fake(method, profile, **kw):
        seen.update(method=method, **kw)
        return small
    monkeypatch.setattr(pre, "profile_config", fake)
    code, out, err = bench_cli("pretrain", "--method", "clip", "--clip-model", "test", "--out",
                               str(workdir / "run"), "--set",
                               f'paths.cache_dir="{bench_cfg.cache_dir}"')
    assert code == 0, err
    assert seen["method"] == "clip" and seen["clip_model"] == "test"
    assert "clip_test.safetensors" in out and "--method clasp --teacher" in out
