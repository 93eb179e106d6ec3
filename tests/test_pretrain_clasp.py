"""CLASP pretraining (issue 6): CLIP pseudo-labels, the multi-task objective on the PC-MoE
Swin, prompt picking at export, gate report, pseudo-label quality."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backbones import create_backbone
from backbones.pretrain import profile_config, train
from backbones.pretrain.clasp import (PART_NAMES, PART_PROMPTS, PROMPT_OF, PRETRAIN_PROMPT,
                                      CLASPCrops, PseudoLabeler, band_prior, gate_report,
                                      majority_pool, pseudo_label_quality, two_means_split)
from backbones.pretrain.data import MultiCrop
from bench import config as config_mod


@pytest.fixture(scope="module")
def bench_cfg(tmp_path_factory):
    import os

    cache = os.environ.get("HCBENCH_TEST_CACHE") or str(tmp_path_factory.mktemp("cache"))
    return config_mod.load(None, [f'paths.cache_dir="{cache}"'])


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    """A randomly initialised tiny open_clip model saved to disk (a user's local file)."""
    import json

    from backbones.clip_teacher import build_clip
    from backbones.pretrain.clip import CLIP_MODELS

    d = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(0)
    path = d / "tiny_clip.pt"
    torch.save(build_clip(CLIP_MODELS["test"]).state_dict(), path)
    (d / "tiny_clip.json").write_text(json.dumps(CLIP_MODELS["test"]))
    return path, d / "tiny_clip.json"


class FakeTeacher:
    """A teacher whose every prompt has a fixed orthogonal embedding and whose images are
    given directly as token embeddings (for checking the labelling logic by hand)."""

    def __init__(self, dense: torch.Tensor, texts: list[str]):
        self.dense, self.index = dense, {t: i for i, t in enumerate(texts)}
        self.dim = dense.shape[-1]
        self.logit_scale = 10.0

    def encode_text(self, texts):
        return torch.stack([F.one_hot(torch.tensor(self.index.get(t, self.dim - 1)), self.dim)
                            .float() for t in texts])

    def encode_dense(self, x):
        return F.normalize(self.dense, dim=-1)

    def encode_image(self, x):
        return F.normalize(self.dense.mean((1, 2)), dim=-1)


def _part_texts():
    return [t for p in PART_NAMES for t in PART_PROMPTS[p]]


def test_two_means_split_by_hand():
    v = torch.tensor([[0.1, 0.2, 0.15, 0.9, 1.0], [5.0, 5.0, 5.1, 0.0, 0.2]])
    assert two_means_split(v).tolist() == [[False, False, False, True, True],
                                           [True, True, True, False, False]]


def test_majority_pool_votes_by_area_and_upsamples_by_nearest():
    lab = torch.tensor([[[1, 1, 2, 2], [1, 3, 2, 2], [0, 0, 3, 3], [0, 3, 3, 3]]])
    assert majority_pool(lab, (2, 2), 4).tolist() == [[[1, 2], [0, 3]]]
    up = majority_pool(torch.tensor([[[1, 2]]]), (2, 4), 4)
    assert up.tolist() == [[[1, 1, 2, 2], [1, 1, 2, 2]]]


def test_part_labels_follow_the_tokens_that_match_each_picked_prompt():
    texts = _part_texts()
    D = len(texts) + 1
    # a 6x2 image: rows 0-1 match "brown hair", rows 2-3 "red shirt", row 4 "blue trousers",
    # row 5 is background: a weak mix of everything
    emb = lambda t: F.one_hot(torch.tensor(texts.index(t)), D).float()
    dense = torch.zeros(1, 6, 2, D)
    dense[0, 0:2] = emb("brown hair")
    dense[0, 2:4] = emb("red shirt")
    dense[0, 4] = emb("blue trousers")
    dense[0, 5] = torch.full((D,), 0.05)
    dense[0, 5, -1] = 1.0
    lab = PseudoLabeler(FakeTeacher(dense, texts), attribute_names=("Hat",)).parts(None)
    assert lab.tolist() == [[[1, 1], [1, 1], [2, 2], [2, 2], [3, 3], [0, 0]]]


def test_attribute_probability_is_the_positive_prompt_set_against_the_negative():
    from backbones.pretrain.clasp import attribute_prompts

    p = attribute_prompts()
    texts = list(dict.fromkeys(t for a in ("Hat", "Female") for s in p[a] for t in s))
    D = len(texts) + 1
    # an image whose embedding is the positive "Hat" prompts' mean: cosine 1 with it, 0 with
    # the negative prompts' mean
    hat = sum(F.one_hot(torch.tensor(texts.index(t)), D).float() for t in p["Hat"][0])
    dense = hat.expand(1, 2, 2, D).clone()
    probs = PseudoLabeler(FakeTeacher(dense, texts), attribute_names=("Hat", "Female")).attributes(None)
    assert probs[0, 0].item() == pytest.approx(1 / (1 + math.exp(-10)), rel=1e-5)
    assert probs[0, 1].item() == pytest.approx(0.5)  # neither woman nor man prompts match


def test_every_pa100k_attribute_has_prompts_on_both_sides():
    from backbones.pretrain.clasp import attribute_prompts
    from bench.data.synth.people import PA100K_ATTRIBUTES

    p = attribute_prompts()
    assert set(p) == set(PA100K_ATTRIBUTES)
    for pos, neg in p.values():
        assert pos and neg and not set(pos) & set(neg)
    # ensembled over contexts: the "Hat" pair differs only by the hat, in each context
    for with_hat, without in zip(*p["Hat"]):
        assert with_hat.startswith(without[:-1]) and ", with a " in with_hat[len(without) - 1:]


def test_clasp_crops_are_dinos_crops_plus_the_unjittered_global_views():
    from PIL import Image

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (128, 64, 3), dtype=np.uint8))
    mc = MultiCrop((64, 32), (32, 16), 2)(img, torch.Generator().manual_seed(3))
    cc = CLASPCrops((64, 32), (32, 16), 2)(img, torch.Generator().manual_seed(3))
    assert len(cc) == len(mc) + 2
    for a, b in zip(mc, cc):
        torch.testing.assert_close(a, b)
    assert cc[-1].shape == cc[0].shape and not torch.equal(cc[-2], cc[0])


def test_band_prior():
    b = band_prior((6, 2))
    assert b[:, 0].tolist() == [1, 1, 2, 2, 3, 3] and (b > 0).all()


def tiny_clasp(teacher, **kw):
    base = dict(arch="test", epochs=2, batch_size=4, max_images=16, global_size=(64, 32),
                local_size=(32, 16), n_local=2, out_dim=64, head_hidden=32, head_bottleneck=16,
                drop_path=0.0, save_every=100, teacher=str(teacher[0]),
                teacher_model=str(teacher[1]))
    base.update(kw)
    return profile_config("clasp", "smoke", **base)


def test_clasp_trains_exports_picked_prompts_and_resumes_exactly(tmp_path, bench_cfg,
                                                                 teacher_file):
    cfg = tiny_clasp(teacher_file)
    full = train(cfg, tmp_path / "full", bench_cfg=bench_cfg, device="cpu")
    assert full.zoo_name == "test_clasp_swin" and full.steps == 8
    for k in ("dino", "part", "attr", "part_acc"):
        assert math.isfinite(full.last[k])
    model = create_backbone("test_clasp_swin", checkpoint=str(full.checkpoint))  # strict
    rows = dict(zip(model.tasks, model.task_prompts.detach()))
    for task, pre in PROMPT_OF.items():
        torch.testing.assert_close(rows[task], rows[PRETRAIN_PROMPT[pre]])
    assert not torch.equal(rows["reid"], rows["parsing"])
    rep = gate_report(model)
    assert rep["blocks"] == 3 and 0 < rep["entropy/part"] <= rep["uniform_entropy"] + 1e-6
    assert 0 < rep["overlap/distill-part"] < 1
    # the report beside the export: the teacher's label quality, the gates now and at init
    import json

    from backbones.pretrain.clasp import report_path

    saved = json.loads(report_path(full.checkpoint).read_text())
    assert saved["gates"] == pytest.approx(rep)
    assert 0 <= saved["pseudo_labels"]["part_mIoU"] <= 1
    from backbones.pretrain.probe import _backbone_at

    fresh = _backbone_at(cfg, tmp_path / "not-trained", bench_cfg)  # the run's initial weights
    assert saved["gates_at_init"] == pytest.approx(gate_report(fresh))
    assert saved["gates_at_init"] != pytest.approx(rep)  # training moved the gates

    part = train(cfg.replace(stop_after=3), tmp_path / "resumed", bench_cfg=bench_cfg, device="cpu")
    assert part.checkpoint is None
    resumed = train(cfg, tmp_path / "resumed", bench_cfg=bench_cfg, device="cpu")
    assert resumed.resumed_from == 3
    a = torch.load(full.out_dir / "train_state.pth", weights_only=True)
    b = torch.load(resumed.out_dir / "train_state.pth", weights_only=True)
    for key in ("student", "teacher", "heads"):
        for k in a[key]:
            torch.testing.assert_close(a[key][k], b[key][k], msg=f"{key}.{k}")
    # the prompts and gate projections: their own group, 10x the rate, no weight decay
    groups = a["optimizer"]["param_groups"]
    assert len(groups) == 3 and len(groups[2]["params"]) == 1 + 3 * 4  # prompts; 3 MoE blocks
    assert groups[2]["lr"] == pytest.approx(10 * groups[0]["lr"]) and groups[0]["lr"] > 0
    assert groups[2]["weight_decay"] == 0 < groups[0]["weight_decay"]


def test_pseudo_label_quality_reports_priors_in_range(teacher_file):
    from backbones.clip_teacher import load_teacher

    q = pseudo_label_quality(load_teacher(*teacher_file), n=8)
    for k in ("part_mIoU", "prior_bands_mIoU", "prior_layout_mIoU", "attr_mA", "prior_rates_mA"):
        assert 0 <= q[k] <= 1, k
    assert q["prior_rates_mA"] <= 0.5 + 1e-9  # a constant score per attribute: no better than 0.5
    assert q["prior_layout_mIoU"] > q["prior_bands_mIoU"]


def test_cli_clasp_missing_teacher_is_one_line(bench_cli, workdir):
    code, out, err = bench_cli("pretrain", "--method", "clasp", "--arch", "test", "--teacher",
                               str(workdir / "nope.pt"), "--set",
                               f'paths.cache_dir="{workdir / "cache"}"')
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert code == 2 and len(errors) == 1 and "nope.pt" in errors[0]
