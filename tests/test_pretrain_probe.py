"""Probing a pretraining run (issue 5): rows before and during training, same weights as one run."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from backbones.pretrain import profile_config, train
from backbones.pretrain.evaluate import knn_reid
from backbones.pretrain.probe import PROBE_NAME, probe_run
from bench import config as config_mod


@pytest.fixture(scope="module")
def bench_cfg(tmp_path_factory):
    import os

    cache = os.environ.get("HCBENCH_TEST_CACHE") or str(tmp_path_factory.mktemp("cache"))
    return config_mod.load(None, [f'paths.cache_dir="{cache}"'])


def tiny(**kw):
    base = dict(arch="test", epochs=2, batch_size=4, max_images=8, global_size=(64, 32),
                local_size=(32, 16), n_local=2, out_dim=64, head_hidden=32, head_bottleneck=16,
                drop_path=0.0, save_every=100)
    base.update(kw)
    return profile_config("solider", "smoke", **base)


def test_probe_rows_and_final_weights_match_one_run(tmp_path, bench_cfg):
    cfg = tiny()  # 2 steps per epoch, 4 in all
    table = probe_run(cfg, tmp_path / "probed", every=3, bench_cfg=bench_cfg, device="cpu")
    assert table["step"].tolist() == [0, 3, 4]
    for col in ("knn_mAP", "knn_rank1", "part_ari", "part_chance_ari", "part_row_prior_ari",
                "teacher_entropy", "kl"):
        assert col in table
    assert table["teacher_entropy"].iloc[1:].notna().all()
    assert (tmp_path / "probed" / "probe.png").stat().st_size > 1000
    assert pd.read_csv(tmp_path / "probed" / PROBE_NAME)["step"].tolist() == [0, 3, 4]
    # step 0 is the freshly initialised backbone the run starts from
    from backbones.pretrain.probe import _backbone_at

    b0 = _backbone_at(cfg, tmp_path / "empty", bench_cfg)
    assert knn_reid(b0, bench_cfg, input_size=(64, 32))["mAP"] == pytest.approx(table["knn_mAP"][0])
    # probing changes nothing: the final checkpoint is that of an uninterrupted run
    plain = train(cfg, tmp_path / "plain", bench_cfg=bench_cfg, device="cpu")
    from safetensors.torch import load_file

    a = load_file(str(plain.checkpoint))
    b = load_file(str(next((tmp_path / "probed").glob("*.safetensors"))))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    # the last probe measured the exported weights
    final = _backbone_at(cfg, tmp_path / "probed", bench_cfg)
    assert knn_reid(final, bench_cfg, input_size=(64, 32))["mAP"] == pytest.approx(
        table["knn_mAP"].iloc[-1])


def test_probe_every_must_be_positive(tmp_path, bench_cfg):
    with pytest.raises(ValueError):
        probe_run(tiny(), tmp_path, every=0, bench_cfg=bench_cfg)


def test_part_probe_is_measured_on_a_grid_where_the_true_layout_exists(tmp_path, bench_cfg):
    """At the smoke size (128x64) the last stage is 4x2 tokens, each as wide as a synthetic
    person and a quarter of its height: the row-band prior does not agree with the true
    layout there (ARI at or below chance).  The probe measures parts at 256x128 or larger,
    where it does."""
    from backbones import create_backbone
    from backbones.pretrain.evaluate import part_agreement
    from backbones.pretrain.probe import part_probe_size

    assert part_probe_size((128, 64)) == (256, 128)
    assert part_probe_size((384, 192)) == (384, 192)
    torch.manual_seed(0)
    b = create_backbone("test_solider_swin")
    small = part_agreement(b, n=8, input_size=(128, 64))
    assert small["row_prior_ari"] <= 0.0  # the coarse grid the probe avoids
    probed = part_agreement(b, n=8, input_size=part_probe_size((128, 64)))
    assert probed["grid"] == [8, 4] and probed["row_prior_ari"] > 0


def test_clasp_probe_rows_report_the_gates_per_task_prompt(bench_cfg):
    from backbones import create_backbone
    from backbones.pretrain.clasp import gate_report
    from backbones.pretrain.probe import probe

    torch.manual_seed(0)
    b = create_backbone("test_clasp_swin")
    row = probe(b, bench_cfg, (64, 32), parts=False, gates=True)
    rep = gate_report(b)
    assert row["gate_entropy_part"] == pytest.approx(rep["entropy/part"])
    assert row["gate_overlap_distill-part"] == pytest.approx(rep["overlap/distill-part"])
    assert "part_ari" not in row and "knn_mAP" in row


def test_attribute_objectives_are_probed_for_attributes(bench_cfg):
    """VAL-PAT and CLASP rows carry the linear attribute probe; the number is the probe's."""
    from backbones import create_backbone
    from backbones.pretrain.probe import probe
    from backbones.pretrain.valpat import attribute_probe

    torch.manual_seed(0)
    b = create_backbone("test_sup_swin")
    row = probe(b, bench_cfg, (64, 32), parts=False, attributes=True)
    assert row["attr_probe_mA"] == pytest.approx(attribute_probe(b, input_size=(64, 32))["mA"])
    assert "attr_probe_mA" not in probe(b, bench_cfg, (64, 32), parts=False)
