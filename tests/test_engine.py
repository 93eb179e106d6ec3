"""The training engine's shared pieces."""
import pytest
import torch

from adapters._engine import StepWarmup


@pytest.mark.parametrize("warmup, first", [("linear", 1e-3 * 0.001), ("constant", 1e-3 / 3)])
def test_step_warmup(warmup, first):
    ratio = 0.001 if warmup == "linear" else 1 / 3
    s = StepWarmup(1e-3, (2, 3), 0.1, warmup_iters=10, warmup_ratio=ratio, iters_per_epoch=10,
                   warmup=warmup)
    assert s.lr_at(0) == pytest.approx(first)
    assert s.lr_at(5) == pytest.approx(1e-3 * (0.5 + 0.5 * ratio) if warmup == "linear" else first)
    assert s.lr_at(10) == pytest.approx(1e-3)  # warm-up over
    assert s.lr_at(20) == pytest.approx(1e-4) and s.lr_at(30) == pytest.approx(1e-5)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    for _ in range(3):
        s.step(opt)
    assert opt.param_groups[0]["lr"] == pytest.approx(s.lr_at(2))
    t = StepWarmup(1e-3, (2, 3), 0.1, 10, ratio, 10, warmup)
    t.load_state_dict(s.state_dict())
    assert t.it == 3
    with pytest.raises(ValueError):
        StepWarmup(1e-3, (), 0.1, 1, 0.1, 1, warmup="cosine")


def test_nan_loss_stops_with_the_last_good_state(tmp_path):
    from types import SimpleNamespace

    from torch.utils.data import DataLoader, TensorDataset

    from adapters._engine import fit
    from bench.console import Output
    from bench.errors import BenchError

    ctx = SimpleNamespace(work_dir=tmp_path, out=Output(quiet=True), spec=SimpleNamespace(name="toy"),
                          device="cpu", precision="fp32", seed=0, log=lambda m: None)
    model = torch.nn.Linear(2, 1)
    loader = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    epoch = {"n": 0}

    def step(batch):
        loss = model(batch[0]).pow(2).mean()
        return loss * float("nan") if epoch["n"] >= 1 else loss

    with pytest.raises(BenchError, match=r"toy: loss became nan in epoch 2; the last good state is .*state.pt"):
        fit(ctx, model, loader, step, opt, epochs=3, state_name="state.pt",
            after_epoch=lambda e, loss: epoch.__setitem__("n", e + 1))
    state = torch.load(tmp_path / "state.pt", weights_only=False)
    assert state["epoch"] == 1  # the state of the last good epoch is kept
    assert all(torch.isfinite(v).all() for v in state["model"].values())


@pytest.mark.parametrize("clip", [None, 0.5])
def test_fit_clips_the_gradient_norm(tmp_path, clip):
    """One SGD step at lr 1 from zero weights: the update is minus the (clipped) gradient."""
    from types import SimpleNamespace

    from torch.utils.data import DataLoader, TensorDataset

    from adapters._engine import fit
    from bench.console import Output

    ctx = SimpleNamespace(work_dir=tmp_path, out=Output(quiet=True),
                          spec=SimpleNamespace(name="toy"), device="cpu", precision="fp32",
                          seed=0, log=lambda m: None)
    model = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    loader = DataLoader(TensorDataset(torch.tensor([[3.0, 4.0]])), batch_size=1)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    fit(ctx, model, loader, lambda b: -model(b[0]).sum(), opt, epochs=1, clip_grad_norm=clip)
    expected = [3.0, 4.0] if clip is None else [0.3, 0.4]  # gradient norm 5 -> 0.5
    assert model.weight.detach().flatten().tolist() == pytest.approx(expected)


@pytest.mark.parametrize("native, device, asked, expected", [
    (True, "cpu", "bf16", "bf16"),
    (False, "cpu", "bf16", "fp32"),  # emulated bf16 is slower than fp32: fall back
    (False, "cuda:0", "bf16", "bf16"),  # the GPU decides for itself
    (False, "cpu", "fp32", "fp32"),
])
def test_run_precision_falls_back_on_cpus_without_bf16(monkeypatch, native, device, asked,
                                                       expected):
    import bench.env

    monkeypatch.setattr(bench.env, "native_cpu_bf16", lambda: native)
    assert bench.env.run_precision(asked, device) == expected


def test_native_cpu_bf16_agrees_with_onednn():
    import bench.env

    assert bench.env.native_cpu_bf16() is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
