"""The person search adapter: schedules, the SeqNet model on the Swin split, OIM, and a tiny
end-to-end run on the synthetic CUHK-SYSU (with CBGM) and PRW."""
import numpy as np
import pytest
import torch

from adapters import search
from bench.errors import BenchError
from conftest import tiny_run_config
from bench.data.synth.world import default_dir


def test_paper_schedule_is_solider_seqnet():
    s = search.SCHEDULES["paper"]
    assert (s.min_size, s.max_size, s.lr, s.momentum, s.weight_decay) == (900, 1500, 3e-4, 0.9, 5e-4)
    assert (s.epochs, s.prw_epochs, s.milestone, s.warmup_factor) == (20, 18, 16, 1e-3)
    assert (s.batch_size, dict(s.batch_by_arch)) == (4, {"swin_s": 3, "swin_b": 2})
    assert (s.cq_size, s.prw_cq_size, s.oim_scalar, s.oim_momentum) == (5000, 500, 30.0, 0.5)
    assert s.det_thresh == 0.5 and search.SPEC.semantic_weight == 0.6
    # defaults.py: LW_PROPOSAL_REG 10, CLIP_GRADIENTS 10; models/swin.py: drop_path_rate 0.1
    assert (s.proposal_reg_weight, s.clip_grad_norm, s.drop_path_rate) == (10.0, 10.0, 0.1)
    assert [m.name for m in search.SPEC.metrics] == ["mAP", "top-1", "top-5", "top-10",
                                                     "det AP", "det recall", "GT mAP",
                                                     "GT top-1"]
    assert not s.eval_use_gt  # defaults.py: EVAL_USE_GT = False
    assert search.SCHEDULES["smoke"].eval_use_gt  # smoke: the re-ID part's own rows too
    assert search.DET_THRESH == 0.01  # engine.py: eval_detection(..., det_thresh=0.01)
    assert search.SPEC.datasets == ("cuhk_sysu", "prw")


def test_oim_lookup_table_queue_and_gradient():
    torch.manual_seed(0)
    oim = search.OIMLoss(dim=4, num_pids=3, cq_size=2, momentum=0.5, scalar=30.0).train()
    oim.lut[1] = torch.tensor([1.0, 0, 0, 0])
    x = torch.nn.functional.normalize(torch.randn(5, 4), dim=1).requires_grad_(True)
    # labels: 0 background (dropped), 2 -> identity index 1, 4/4/4 unlabeled (>= num_pids + 1)
    labels = torch.tensor([0, 2, 4, 4, 4])
    loss = oim(x, labels)
    loss.backward()
    assert torch.isfinite(loss) and x.grad is not None
    assert x.grad[0].abs().sum() == 0 and x.grad[1].abs().sum() > 0  # background: no gradient
    expected = 0.5 * torch.tensor([1.0, 0, 0, 0]) + 0.5 * x[1].detach()
    assert torch.allclose(oim.lut[1], expected / expected.norm(), atol=1e-6)
    assert oim.lut[0].abs().sum() == 0 and oim.lut[2].abs().sum() == 0
    # the queue of 2 wrapped around: slot 0 holds the third unlabeled feature, slot 1 the second
    assert torch.allclose(oim.cq[0], x[4].detach()) and torch.allclose(oim.cq[1], x[3].detach())
    assert int(oim.header) == 1
    # logits of the loss were taken against the tables *before* the update
    before = torch.cat([torch.eye(4)[:1] * 0, torch.tensor([[1.0, 0, 0, 0]]), torch.zeros(1, 4)])
    logits = 30 * x[1].detach() @ torch.cat([before, torch.zeros(2, 4)]).t()
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(
        logits[None], torch.tensor([1])).item(), rel=1e-5)
    # eval: no update
    oim.eval()
    lut = oim.lut.clone()
    oim(x.detach(), labels)
    assert torch.equal(lut, oim.lut)


def _model(num_pids=3):
    from backbones import create_backbone

    import dataclasses

    s = dataclasses.replace(search.SCHEDULES["smoke"], min_size=128, max_size=160)
    bb = create_backbone("test_solider_swin", semantic_weight=0.6)
    return search.SeqNet(bb, 0.6, s, num_pids, 8)


def test_seqnet_trains_and_detects():
    torch.manual_seed(0)
    m = _model()
    imgs = [torch.rand(3, 160, 200), torch.rand(3, 170, 190)]
    targets = [{"boxes": torch.tensor([[10., 20, 60, 140], [100, 30, 160, 150]]),
                "labels": torch.tensor([1, 4])},
               {"boxes": torch.tensor([[50., 40, 110, 160]]), "labels": torch.tensor([3])}]
    m.train()
    losses = m(imgs, targets)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_reg", "loss_proposal_cls",
                           "loss_proposal_reg", "loss_box_cls", "loss_box_reg", "loss_box_reid"}
    total = sum(losses.values())
    total.backward()
    g = m.roi_heads.reid_head.stage.blocks[0].attn.w_msa.qkv.weight.grad
    assert g is not None and g.abs().sum() > 0
    assert m.body.swin.patch_embed.projection.weight.grad.abs().sum() > 0
    assert m.roi_heads.reid_loss.lut[0].abs().sum() > 0  # identity 1 entered the table
    m.eval()
    out = m(imgs)
    assert len(out) == 2 and out[0]["embeddings"].shape[1] == 256
    assert out[0]["boxes"].shape[0] == out[0]["scores"].shape[0]
    q = m.embed_query(imgs[0], torch.tensor([10., 20, 60, 140]))
    assert q.shape == (256,) and q.norm().item() == pytest.approx(1.0, abs=1e-4)
    # EVAL_USE_GT: the ground-truth boxes' embeddings from the same pass equal the query's
    gt = [torch.tensor([[10., 20, 60, 140], [100, 30, 160, 150]]), torch.zeros(0, 4)]
    with_gt = m(imgs, gt_boxes=gt)
    assert torch.allclose(with_gt[0]["gt_embeddings"][0], q, atol=1e-5)
    assert with_gt[1]["gt_embeddings"].shape == (0, 256)
    assert torch.equal(with_gt[0]["boxes"], out[0]["boxes"])  # detections unchanged
    # CBGM's query image as gallery: per query box, the other people, by score, no CWS
    from torchvision.ops import box_iou

    m.roi_heads.score_thresh = 0.0
    qboxes = torch.tensor([[10., 20, 60, 140], [100, 30, 160, 150]])
    found = m.detect_context(imgs[0], qboxes, limit=3)
    assert len(found) == 2
    for qb, (b, s, e) in zip(qboxes, found):
        assert 0 < len(b) <= 3 and b.shape == (len(s), 4) and e.shape == (len(s), 256)
        assert (s[:-1] >= s[1:]).all() and (s < 1).all()
        assert torch.allclose(e.norm(dim=1), torch.ones(len(e)), atol=1e-4)  # not CWS-scaled
        assert (box_iou(b, qb[None]) <= 0.5).all()  # suppressed by the query box at score 1
        assert (b[:, 2] <= 200).all() and (b[:, 3] <= 160).all()  # in image pixels
    assert m.detect_context(imgs[0], qboxes[:1], limit=0)[0][0].shape == (0, 4)


def test_regression_losses_are_seqnets_detection_losses():
    """Smooth L1 with beta 1 over the positives' class-1 deltas, / all samples; the first
    head's term enters the total 10 times."""
    regs = torch.tensor([[9., 9, 9, 9, 0.5, 2.0, 0, 0], [9., 9, 9, 9, 9, 9, 9, 9]])
    targets = torch.zeros(2, 4)
    labels = torch.tensor([1, 0])
    # positive row: 0.5 * 0.5^2 + (2 - 0.5) = 1.625, over 2 samples
    assert search._reg_loss(regs, labels, targets).item() == pytest.approx(1.625 / 2)
    torch.manual_seed(0)
    m = _model()
    imgs = [torch.rand(3, 160, 200)]
    targets = [{"boxes": torch.tensor([[10., 20, 60, 140]]), "labels": torch.tensor([1])}]
    m.train()
    torch.manual_seed(1)
    weighted = m(imgs, targets)["loss_proposal_reg"]
    m.proposal_reg_weight = 1.0
    torch.manual_seed(1)
    plain = m(imgs, targets)["loss_proposal_reg"]
    assert weighted.item() == pytest.approx(10 * plain.item()) and plain.item() > 0


def test_res5_head_uses_lambda():
    torch.manual_seed(0)
    m = _model().eval()
    head = m.roi_heads.reid_head
    x = torch.randn(2, head.in_channels, 14, 14)
    a = head(x)["feat_res5"]
    head.semantic_weight = 0.0
    b = head(x)["feat_res5"]
    assert a.shape == (2, head.out_channels, 1, 1) and not torch.allclose(a, b)


def test_paper_and_smoke_schedules_leave_cbgm_off_with_seqnet_ks():
    for s in search.SCHEDULES.values():
        assert s.cbgm is False  # SOLIDER-PersonSearch: EVAL_USE_CBGM = False
        assert search.cbgm_ks(s, "cuhk_sysu") == (10, 3) and search.cbgm_ks(s, "prw") == (30, 4)


def _tiny_run(tmp_path, datasets, cbgm=False):
    from bench import results, runner
    from bench.data import read_dataset

    names = ", ".join(f'"{d}"' for d in datasets)
    cfg = tiny_run_config(tmp_path, "search",
                          f"[tasks.search]\ndatasets = [{names}]\n"
                          "[tasks.search.schedule.smoke]\nepochs = 1\nprw_epochs = 1\nmin_size = 96\n"
                          "max_size = 128\nbatch_size = 4\nroi_batch = 16\nrpn_post_nms_train = 64\n"
                          "rpn_post_nms_test = 20\ndetections_per_img = 20\n"
                          f"cbgm = {str(cbgm).lower()}\neval_use_gt = {str(cbgm).lower()}\n")
    runner.run(cfg)
    df = results.load(tmp_path / "res")
    assert set(df["dataset"]) == set(datasets)
    metrics = {"mAP", "top-1", "top-5", "top-10", "det AP", "det recall"}
    if cbgm:  # the CBGM run also searches with the ground-truth boxes (EVAL_USE_GT)
        metrics |= {"GT mAP", "GT top-1"}
    assert set(df["metric"]) == metrics and len(df) == len(metrics) * len(datasets)
    assert set(df["semantic_weight"]) == {0.6}
    assert ((df["value"] >= 0) & (df["value"] <= 100)).all()
    # saved predictions re-evaluate to the stored numbers
    [run_dir] = list((tmp_path / "res" / "runs").iterdir())
    base = default_dir(tmp_path / "cache", "smoke", 0)
    for key in datasets:
        folder = {"cuhk_sysu": "CUHK-SYSU", "prw": "PRW"}[key]
        again = search.Search.evaluate_file(run_dir / "search" / f"{key}_predictions.npz",
                                            read_dataset(key, base / folder))
        stored = df[df["dataset"] == key].set_index("metric")["value"]
        for k, v in again.items():
            assert v == pytest.approx(stored[k])
        pred = dict(np.load(run_dir / "search" / f"{key}_predictions.npz"))
        assert ("cbgm" in pred) == cbgm
        if cbgm:
            n_q = len(read_dataset(key, base / folder).queries)
            k2 = 4 if key == "prw" else 3  # SeqNet's eval_search_prw / eval_search_cuhk
            assert len(pred["context_offsets"]) == n_q + 1 and int(pred["cbgm_k2"]) == k2
            assert np.diff(pred["context_offsets"]).max() <= k2 - 1  # the context people
            # a file saved before CBGM existed (no cbgm keys) still loads, without CBGM
            old = tmp_path / f"{key}_old.npz"
            np.savez(old, **{k: v for k, v in pred.items()
                             if k != "cbgm" and not k.startswith(("context_", "cbgm_", "gt_"))})
            plain = search.Search.evaluate_file(old, read_dataset(key, base / folder))
            assert set(plain) == metrics - {"GT mAP", "GT top-1"}
            # one ground-truth embedding short: a clear error naming the file
            short = len(pred["gt_feats"]) - 1
            np.savez(old, **{**pred, "gt_feats": pred["gt_feats"][:-1],
                             "gt_offsets": np.minimum(pred["gt_offsets"], short)})
            with pytest.raises(BenchError, match=r"_old\.npz: the saved ground-truth embeddings"):
                search.Search.evaluate_file(old, read_dataset(key, base / folder))
            # cbgm on but the context lost: a clear error naming the file
            np.savez(old, **{k: v for k, v in pred.items() if not k.startswith("context_")})
            with pytest.raises(BenchError, match=r"_old\.npz: saved with cbgm on but has no "
                                                 r"context_offsets, context_feats"):
                search.Search.evaluate_file(old, read_dataset(key, base / folder))


def test_end_to_end_tiny_run_with_cbgm(tmp_path, bench_cli, capsys):
    _tiny_run(tmp_path, ["cuhk_sysu"], cbgm=True)
    capsys.readouterr()  # the run's own output
    # every gallery image's detections are saved: another TestG size evaluates from them
    [run_dir] = list((tmp_path / "res" / "runs").iterdir())
    pred = str(run_dir / "search" / "cuhk_sysu_predictions.npz")
    root = str(default_dir(tmp_path / "cache", "smoke", 0) / "CUHK-SYSU")
    rows = {}
    for size in (10, 20):  # the smoke world's TestG10.mat and TestG20.mat
        got = bench_cli.json("eval", "search", pred, "cuhk_sysu", root, "--gallery-size", str(size))
        assert got["gallery_size"] == size
        rows[size] = got["metrics"]
    assert rows[20]["det AP"] == rows[10]["det AP"]  # the detector does not depend on it
    code, _, err = bench_cli("eval", "search", pred, "prw", "--gallery-size", "50")
    assert code == 2 and "--gallery-size is for `bench eval search <predictions> cuhk_sysu`" in err


@pytest.mark.slow
def test_end_to_end_tiny_run_both_datasets(tmp_path):
    _tiny_run(tmp_path, ["cuhk_sysu", "prw"])
