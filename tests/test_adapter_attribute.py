"""The attribute adapter: schedules, head, and a tiny end-to-end run on the synthetic PA100k."""
import pytest
import torch

from adapters import attribute
from conftest import tiny_run_config
from bench import results, runner
from bench.data.synth.world import default_dir


def test_paper_schedule_is_rethinkpar():
    s = attribute.SCHEDULES["paper"]
    assert (s.input_size, s.wide_input_size, s.epochs, s.batch_size, s.lr) == (
        (256, 128), (256, 192), 30, 64, 1e-5)
    assert (s.weight_decay, s.peta_weight_decay, s.milestones) == (0.0, 5e-4, (10, 15))
    assert s.head_lr is None  # LR_NEW = LR_FT in SOLIDER's configs
    smoke = attribute.SCHEDULES["smoke"]
    assert smoke.head_lr == pytest.approx(10 * smoke.lr)
    assert attribute.SPEC.semantic_weight == 0.8


def test_head():
    from backbones import create_backbone

    bb = create_backbone("test_solider_swin", semantic_weight=0.8)
    m = attribute.AttributeModel(bb, 26, 0.8)
    assert m(torch.randn(2, 3, 64, 32)).shape == (2, 26)


def test_end_to_end_tiny_run(tmp_path):
    cfg = tiny_run_config(tmp_path, "attribute", '[tasks.attribute]\ndatasets = ["pa100k", "peta_zs"]\n'
                                                 '[tasks.attribute.schedule.smoke]\nepochs = 1\ninput_size = [64, 32]\n'
                                                 'wide_input_size = [64, 48]\nbatch_size = 32\n')
    runner.run(cfg)
    df = results.load(tmp_path / "res")
    assert set(df["dataset"]) == {"pa100k", "peta_zs"}
    assert set(df["metric"]) == {"mA", "Accu", "Prec", "Recall", "F1"}
    assert set(df["semantic_weight"]) == {0.8}
    assert ((df["value"] >= 0) & (df["value"] <= 100)).all()
    # saved predictions re-evaluate to the stored numbers
    from bench.data import read_dataset
    [run_dir] = list((tmp_path / "res" / "runs").iterdir())
    root = default_dir(tmp_path / "cache", "smoke", 0) / "PA100k"
    again = attribute.Attribute.evaluate_file(run_dir / "attribute" / "pa100k_predictions.npz",
                                              read_dataset("pa100k", root))
    stored = df[df["dataset"] == "pa100k"].set_index("metric")["value"]
    for k, v in again.items():
        assert v == pytest.approx(stored[k])
    # two parameter groups, backbone (LR_FT) and classifier (LR_NEW), at the smoke rates
    state = torch.load(run_dir / "attribute" / "pa100k_state.pt", weights_only=False)
    smoke = attribute.SCHEDULES["smoke"]
    assert [g["lr"] for g in state["optimizer"]["param_groups"]] == [smoke.lr, smoke.head_lr]
