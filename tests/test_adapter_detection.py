"""The detection adapter: CSP codec, model, losses, and a tiny end-to-end run on synthetic
CityPersons."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from adapters import detection
from bench.errors import BenchError
from conftest import tiny_run_config
from bench import results, runner
from bench.data.synth.world import default_dir


def test_paper_schedule_is_solider_csp_config():
    """configs/solider/cp/swin_small.py: Pedestron's CSP with predict_width, loss weights
    0.01 / 1 / 0.1, img_scale (2048, 1024), test_cfg score_thr 0.01; drop path 0.1."""
    s = detection.SCHEDULES["paper"]
    assert (s.lr, s.epochs, s.milestones, s.warmup_iters, s.ema_decay) == (1e-4, 240, (110, 160),
                                                                             500, 0.999)
    assert s.variant == "solider" and s.predict_width and s.train_size == (1024, 2048)
    assert (s.center_weight, s.scale_weight, s.offset_weight) == (0.01, 1.0, 0.1)
    assert s.mean_teacher and (s.score_thr, s.nms_iou, s.max_per_img) == (0.01, 0.5, 100)
    assert s.drop_path_rate == 0.1
    assert not detection.Schedule(variant="csp").predict_width
    with pytest.raises(BenchError, match="variant"):
        detection.Schedule(variant="fcos")
    assert detection.batch_size_for(s, "swin_t") == 24
    assert detection.batch_size_for(s, "swin_b") == 16
    assert detection.SPEC.semantic_weight == 1.0
    assert [(m.name, m.higher_is_better) for m in detection.SPEC.metrics] == [
        ("MR^-2 Reasonable", False), ("MR^-2 Heavy", False)]


def _iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_encode_decode_round_trip():
    H, W = 256, 512
    hs = [60.0, 101.0, 150.0, 83.0]
    xy = [(30.3, 20.7), (150.2, 90.1), (300.9, 40.4), (420.0, 160.5)]
    gts = np.array([[x, y, x + 0.41 * h, y + h] for (x, y), h in zip(xy, hs)])
    igs = np.array([[200.0, 200.0, 260.0, 250.0]])
    pos, scale, off = detection.encode(gts, igs, (H // 4, W // 4), radius=8)
    assert pos[2].sum() == len(gts) and off[2].sum() == len(gts)
    assert pos[1, 52, 55] == 0  # inside the ignore region: no centre loss
    assert scale[2].sum() == len(gts) * 25  # 5x5 cells of scale target each
    for maps in (scale[:2], scale[0]):  # log height and width; log height (CSP: w = 0.41 h)
        boxes, scores = detection.decode(torch.from_numpy(pos[2]), torch.from_numpy(maps),
                                         torch.from_numpy(off[:2]), (H, W))
        assert len(boxes) == len(gts) and (scores == 1).all()
        for g in gts:
            assert max(_iou(g, b) for b in boxes) > 0.9


def test_width_map_decodes_any_aspect_ratio():
    """SOLIDER's config regresses the width: a wide box comes back; the CSP variant's fixed
    aspect ratio cannot give it."""
    gts = np.array([[100.3, 60.2, 180.7, 140.9]])  # 80 x 80
    pos, scale, off = (torch.from_numpy(m) for m in
                       detection.encode(gts, np.zeros((0, 4)), (64, 128)))
    assert scale[1].max() == pytest.approx(math.log((180.7 - 100.3) / 4), abs=1e-6)
    (box,), _ = detection.decode(pos[2], scale[:2], off[:2], (256, 512))
    np.testing.assert_allclose(box, gts[0], atol=1e-3)
    (box,), _ = detection.decode(pos[2], scale[0], off[:2], (256, 512))
    assert box[2] - box[0] == pytest.approx(0.41 * (box[3] - box[1]))
    assert _iou(gts[0], box) < 0.5


def _image(tmp_path, h=256, w=512, boxes=()):
    """A CityPersons record over a random h x w image with pedestrians at ``boxes`` (xywh)."""
    from bench.data.base import write_image
    from bench.data.citypersons import CityPersonsImage, CityPersonsObject

    path = tmp_path / "frankfurt_000000_000019_leftImg8bit.png"
    write_image(path, np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8))
    objects = tuple(CityPersonsObject("pedestrian", np.array(b, np.float32),
                                      np.array(b, np.float32), i, False)
                    for i, b in enumerate(boxes))
    return CityPersonsImage("frankfurt_000000_000019", "frankfurt", str(path), "", w, h, objects)


def test_image_height_tests_the_resized_image_and_scales_boxes_back(tmp_path):
    """``image_height``: the network sees the image at that many rows; boxes come back in the
    dataset's pixels."""
    from types import SimpleNamespace

    from bench.console import Output

    gts = np.array([[40.0, 30.0, 40.0 + 0.41 * 180, 210.0], [300.0, 100.0, 341.0, 200.0]])
    seen = []

    class Maps(torch.nn.Module):  # a perfect detector at half the dataset's resolution
        def forward(self, x):
            seen.append(tuple(x.shape[-2:]))
            pos, scale, off = detection.encode(gts / 2, np.zeros((0, 4)), (32, 64))
            logit = torch.from_numpy(pos[2:3]).mul(40).sub(20)[None].expand(len(x), -1, -1, -1)
            return logit, torch.from_numpy(scale[None, :2]), torch.from_numpy(off[None, :2])

    ctx = SimpleNamespace(device="cpu", precision="fp32", out=Output(quiet=True),
                          spec=detection.SPEC)
    im = _image(tmp_path)
    s = detection.Schedule(image_height=128, eval_batch_size=1)
    boxes, scores = detection.predict(ctx, Maps(), [im], s)
    assert seen == [(128, 256)] and len(boxes[0]) == 2
    xyxy = boxes[0].copy()
    xyxy[:, 2:] += xyxy[:, :2]
    for g in gts:
        assert max(_iou(g, b) for b in xyxy) > 0.9
    # without image_height the network sees the image as it is
    seen.clear()
    detection.predict(ctx, Maps(), [im], detection.Schedule(eval_batch_size=1))
    assert seen == [(256, 512)]
    # boxes are scaled by the annotation's size: an image of another size is an error
    wrong = dataclasses.replace(im, height=512, width=1024, ann_path="frankfurt_gt.json")
    with pytest.raises(BenchError, match=r"is 512x256, its annotation frankfurt_gt.json says "
                                         r"1024x512"):
        detection.predict(ctx, Maps(), [wrong], s)


def test_smoke_training_sees_whole_pedestrians(tmp_path):
    """The smoke schedule trains on the whole image resized to 128 rows: a pedestrian as
    tall as most of the image keeps its full height as the scale target (a 128x256 crop of
    the 256x512 image, version 2's smoke schedule, cut it)."""
    im = _image(tmp_path, boxes=[(100.0, 20.0, 82.0, 200.0), (400.0, 150.0, 30.0, 60.0)])
    s = dataclasses.replace(detection.SCHEDULES["smoke"], scale_range=(1.0, 1.0))
    assert s.train_size == (128, 256) and s.image_height == 128
    np.random.seed(0)
    for _ in range(4):  # random flips and brightness
        x, pos, scale, off = detection.TrainImages([im], s)[0]
        assert x.shape == (3, 128, 256) and pos[2].sum() == 2
        heights = sorted({round(math.exp(v) * 4, 3) for v in scale[0][scale[2] > 0].tolist()})
        assert heights == pytest.approx([30.0, 100.0], abs=0.01)


def test_losses_prefer_the_targets():
    gts = np.array([[40.0, 20.0, 40 + 0.41 * 80, 100.0]])
    pos, scale, off = (torch.from_numpy(m)[None] for m in
                       detection.encode(gts, np.zeros((0, 4)), (32, 32)))
    s = detection.SCHEDULES["paper"]
    good = (torch.logit(pos[:, 2:3].clamp(0.01, 0.99)), scale[:, :2], off[:, :2])
    bad = (torch.zeros(1, 1, 32, 32), torch.zeros(1, 2, 32, 32), torch.ones(1, 2, 32, 32))
    loss = lambda out: detection.csp_loss(out, pos, scale, off, s)  # noqa: E731
    assert loss(good) < loss(bad)
    assert detection.scale_loss(scale[:, :2], scale) == 0
    assert detection.scale_loss(scale[:, :1], scale) == 0


def test_scale_loss_by_hand():
    """Smooth L1 (beta 1) of pred/target - 1 over the mask, divided by the mask's size times
    the channels: one masked cell, height off by 10% (0.005), width off by 300% (2.5)."""
    target = torch.zeros(1, 3, 2, 2)
    target[0, :, 0, 0] = torch.tensor([2.0, 1.0, 1.0])
    pred = torch.zeros(1, 2, 2, 2)
    pred[0, :, 0, 0] = torch.tensor([2.2, 4.0])
    assert detection.scale_loss(pred, target).item() == pytest.approx((0.005 + 2.5) / 2)
    assert detection.scale_loss(pred[:, :1], target).item() == pytest.approx(0.005)


def test_model_shapes():
    from backbones import create_backbone

    bb = create_backbone("test_solider_swin", semantic_weight=1.0, strides=(4, 2, 2, 1),
                         out_indices=(1, 2, 3))
    m = detection.CSPModel(bb, 1.0, channels=32)
    c, h, o = m(torch.randn(1, 3, 64, 128))
    assert c.shape == (1, 1, 16, 32) and h.shape == (1, 2, 16, 32) and o.shape == (1, 2, 16, 32)
    assert torch.sigmoid(c).mean().item() == pytest.approx(0.01, rel=0.2)
    # SOLIDER's: the concatenated 3 x 32 channels into 3x3 conv + GN branches
    assert m.neck.fuse is None and m.neck.out_channels == 96
    kinds = [type(x).__name__ for x in m.head.scale]
    assert kinds == ["Conv2d", "GroupNorm", "ReLU", "Conv2d"] and m.head.scale[0].in_channels == 96
    csp = detection.CSPModel(bb, 1.0, channels=32, variant="csp")
    c, h, o = csp(torch.randn(1, 3, 64, 128))
    assert h.shape == (1, 1, 16, 32) and csp.neck.out_channels == 32
    assert csp.head.center.kernel_size == (1, 1)
    assert torch.sigmoid(c).mean().item() == pytest.approx(0.01, rel=0.2)
    t = detection.MeanTeacher(m, 0.5)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    t.update(m)
    name, b = next(iter(m.named_parameters()))
    assert torch.allclose(t.shadow[name], b - 0.5)


def test_end_to_end_tiny_run(tmp_path):
    cfg = tiny_run_config(tmp_path, "detection",
                          "[tasks.detection.schedule.smoke]\nepochs = 1\ntrain_size = [128, 256]\n"
                          "batch_size = 3\nneck_channels = 32\n")
    runner.run(cfg)
    df = results.load(tmp_path / "res")
    assert set(df["dataset"]) == {"citypersons"}
    assert set(df["metric"]) == {"MR^-2 Reasonable", "MR^-2 Heavy"}
    assert not df["higher_is_better"].any()
    assert set(df["semantic_weight"]) == {1.0}
    assert ((df["value"] >= 0) & (df["value"] <= 100)).all()
    # saved predictions re-evaluate to the stored numbers
    from bench.data import read_dataset
    [run_dir] = list((tmp_path / "res" / "runs").iterdir())
    root = default_dir(tmp_path / "cache", "smoke", 0) / "CityPersons"
    again = detection.Detection.evaluate_file(run_dir / "detection" / "citypersons_predictions.npz",
                                              read_dataset("citypersons", root))
    stored = df.set_index("metric")["value"]
    for k in ("MR^-2 Reasonable", "MR^-2 Heavy"):
        assert again[k] == pytest.approx(stored[k])
    assert math.isfinite(again["MR^-2 All"])
    pred = np.load(run_dir / "detection" / "citypersons_predictions.npz")
    assert len(pred["counts"]) == 6 and pred["counts"].sum() == len(pred["scores"]) > 0
