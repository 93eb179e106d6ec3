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


def test_end_to_end_tiny_run(tmp_path, capsys):
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
    # and, against itself as the baseline, differ by nothing (`bench eval --baseline`)
    import json
    from bench import cli
    pred = run_dir / "attribute" / "pa100k_predictions.npz"
    capsys.readouterr()
    code = cli.main(["eval", "attribute", str(pred), "pa100k", str(root), "--baseline", str(pred),
                     "--resamples", "20", "--json", "--config", str(tmp_path / "bench.toml")])
    rows = json.loads(capsys.readouterr().out)["metrics"]
    assert code == 0 and rows["mA"]["a"] == pytest.approx(stored["mA"])
    assert rows["mA"]["diff"] == rows["mA"]["lo"] == rows["mA"]["hi"] == 0
    # two parameter groups, backbone (LR_FT) and classifier (LR_NEW), at the smoke rates
    state = torch.load(run_dir / "attribute" / "pa100k_state.pt", weights_only=False)
    smoke = attribute.SCHEDULES["smoke"]
    assert [g["lr"] for g in state["optimizer"]["param_groups"]] == [smoke.lr, smoke.head_lr]


def test_paired_bootstrap():
    import numpy as np

    rng = np.random.default_rng(0)
    gt = (rng.random((60, 8)) < 0.3).astype(np.uint8)
    good = np.where(gt == 1, 0.9, 0.1)
    good[:6] = 1 - good[:6]  # right on 90% of the images
    noise = rng.random(gt.shape)
    same = attribute.paired_bootstrap(gt, noise, noise, resamples=50)
    assert all(r["diff"] == r["lo"] == r["hi"] == 0 for r in same.values())
    vs = attribute.paired_bootstrap(gt, good, noise, resamples=200)
    full = attribute.evaluate(gt, good).mA - attribute.evaluate(gt, noise).mA
    assert vs["mA"]["diff"] == pytest.approx(100 * full)
    assert 0 < vs["mA"]["lo"] < vs["mA"]["diff"] < vs["mA"]["hi"]
    assert set(vs) == {"mA", "Accu", "Prec", "Recall", "F1"}
    back = attribute.paired_bootstrap(gt, noise, good, resamples=200)
    assert back["mA"]["hi"] < 0


def test_compare_files_matches_images(tmp_path):
    """`bench eval attribute A --baseline B`: rows matched by image, bad pairs refused."""
    import numpy as np
    from bench.data.par import AttrDataset

    names = (f"{i:06d}.jpg" for i in range(40))
    rng = np.random.default_rng(1)
    labels = (rng.random((40, 4)) < 0.4).astype(np.uint8)
    data = AttrDataset("pa100k", str(tmp_path), ("a", "b", "c", "d"), np.arange(4),
                       list(names), labels, {"trainval": np.arange(20), "test": np.arange(20, 40)})
    test = [data.images[i] for i in range(20, 40)]
    good = np.where(labels[20:] == 1, 0.8, 0.2)
    noise = rng.random((20, 4))
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    np.savez(a, probs=good, images=test, attributes=["a", "b", "c", "d"])
    perm = rng.permutation(20)  # the baseline lists the same images in another order
    np.savez(b, probs=noise[perm], images=[test[i] for i in perm], attributes=["a", "b", "c", "d"])
    rows = attribute.Attribute.compare_files(a, b, data, resamples=100)
    assert rows["mA"]["a"] == pytest.approx(100.0)
    assert rows["mA"]["b"] == pytest.approx(100 * attribute.evaluate(labels[20:], noise).mA)
    c = tmp_path / "c.npz"
    np.savez(c, probs=noise[:10], images=test[:10], attributes=["a", "b", "c", "d"])
    with pytest.raises(Exception, match="test images differ"):
        attribute.Attribute.compare_files(a, c, data)
