"""The pose adapter: schedule, codec (encode/decode, flip test), crop geometry, head, loss,
and a tiny end-to-end run on the synthetic COCO."""
import numpy as np
import pytest
import torch

from adapters import pose
from conftest import tiny_run_config
from bench import config, results, runner
from bench.data.coco import FLIP_PAIRS
from bench.data.synth.world import default_dir


def test_spec_and_paper_schedule_are_solider_humanpose():
    assert pose.SPEC.name == "pose" and pose.SPEC.semantic_weight == 0.8
    assert pose.SPEC.datasets == ("coco_keypoints",)
    assert [m.name for m in pose.SPEC.metrics] == ["AP", "AP50", "AP75", "APm", "APl", "AR"]
    assert all(m.higher_is_better for m in pose.SPEC.metrics)
    s = pose.SCHEDULES["paper"]
    assert (s.input_size, s.sigma, s.padding, s.warmup_iters, s.warmup_ratio) == (
        (384, 288), 2.0, 1.25, 11710, 0.001)
    assert (s.flip_test, s.shift_heatmap, s.post_process, s.oks_thr, s.vis_thr) == (
        True, True, "default", 0.9, 0.2)
    assert pose.resolve(s, "swin_t") == (7e-4, 0.0, 210, (170, 200), 128)
    assert pose.resolve(s, "swin_s") == (1e-3, 0.01, 210, (170, 200), 64)
    assert pose.resolve(s, "swin_b") == (1e-3, 0.01, 160, (120, 150), 96)
    assert "HRFormer" in pose.__doc__ and "no HRFormer backbone" in pose.__doc__


def test_warmup_and_steps():
    sch = pose.StepWarmup(1e-3, (2, 3), 0.1, warmup_iters=10, warmup_ratio=0.001,
                          iters_per_epoch=5)
    assert sch.lr_at(0) == pytest.approx(1e-6)
    assert sch.lr_at(5) == pytest.approx(1e-3 * (1 - 0.5 * 0.999))
    assert sch.lr_at(10) == pytest.approx(1e-4)  # epoch 2: first step, warm-up over
    assert sch.lr_at(15) == pytest.approx(1e-5)


def _random_joints(rng, n, input_wh, margin):
    return np.stack([rng.uniform(margin, input_wh[0] - margin, n),
                     rng.uniform(margin, input_wh[1] - margin, n)], -1)


def test_encode_decode_round_trip_dark_subpixel():
    rng = np.random.default_rng(0)
    input_wh, hm_wh = (288, 384), (72, 96)
    errs = []
    for _ in range(20):
        j = _random_joints(rng, 17, input_wh, margin=16)
        hm, w = pose.encode(j, np.ones(17), input_wh, hm_wh, sigma=2.0, unbiased=True)
        assert (w == 1).all()
        coords, maxvals = pose.decode(hm[None], "unbiased", kernel=11)
        errs.append(np.linalg.norm(coords[0] * 4 - j, axis=-1))  # crop pixels
    errs = np.concatenate(errs)
    assert errs.mean() < 0.25 and errs.max() < 0.5


def test_msra_target_and_default_decoding():
    rng = np.random.default_rng(1)
    input_wh, hm_wh = (96, 128), (24, 32)
    j = _random_joints(rng, 17, input_wh, margin=12)
    vis = np.ones(17)
    vis[3] = 0
    j[5] = (-100, 10)  # its 3σ window misses the heatmap
    hm, w = pose.encode(j, vis, input_wh, hm_wh, sigma=2.0)
    assert w[3] == 0 and w[5] == 0 and not hm[3].any() and not hm[5].any()
    ok = w > 0
    mu = np.trunc(j / 4 + 0.5)
    coords, maxvals = pose.decode(hm[None], None)
    np.testing.assert_array_equal(coords[0][ok], mu[ok])  # peak on the nearest pixel
    np.testing.assert_allclose(maxvals[0][ok, 0], 1.0)
    # cut at 3σ = 6 pixels
    k = int(np.flatnonzero(ok)[0])
    yy, xx = np.nonzero(hm[k])
    assert np.abs(xx - mu[k, 0]).max() == 6 and np.abs(yy - mu[k, 1]).max() == 6
    # quarter-pixel refinement moves towards the true position by at most 0.25
    refined, _ = pose.decode(hm[None], "default")
    d = refined[0][ok] - coords[0][ok]
    assert set(np.unique(np.abs(d))) <= {0.0, 0.25}
    # unlabelled / empty heatmaps decode to (-1, -1)
    assert (coords[0][3] == -1).all()


def test_flip_back_is_an_involution_and_swaps_pairs():
    h = np.random.default_rng(2).random((2, 17, 8, 6))
    back = pose.flip_back(h)
    np.testing.assert_array_equal(pose.flip_back(back), h)
    np.testing.assert_array_equal(back[:, 1], h[:, 2, :, ::-1])
    np.testing.assert_array_equal(back[:, 0], h[:, 0, :, ::-1])
    t = torch.from_numpy(h)
    np.testing.assert_array_equal(pose.flip_back(t).numpy(), back)


class MirrorEquivariant(torch.nn.Module):
    """A toy "pose model" with M(mirror(x)) = flip_back(M(x)) exactly: the pooled image times
    a peaked weight map per keypoint (a Gaussian bump on noise), the maps of each left/right
    pair mirror images of each other, the nose's map symmetric."""

    def __init__(self, hm_hw=(16, 12), stride=4):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        H, W = hm_hw
        ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64),
                                torch.arange(W, dtype=torch.float64), indexing="ij")
        w = 0.1 * torch.rand(17, H, W, generator=g, dtype=torch.float64)
        centres = torch.rand(17, 2, generator=g, dtype=torch.float64) * torch.tensor(
            [W - 6.0, H - 6.0]) + 3
        for k in range(17):
            w[k] += torch.exp(-((xs - centres[k, 0]) ** 2 + (ys - centres[k, 1]) ** 2) / 4.5)
        w[0] = w[0] + w[0].flip(-1)
        for a, b in FLIP_PAIRS:
            w[b] = w[a].flip(-1)
        self.w, self.stride = w, stride

    def forward(self, x):
        return torch.nn.functional.avg_pool2d(x.sum(1, keepdim=True), self.stride) * self.w


def test_flip_test_with_shift_is_exactly_symmetric_on_a_mirrored_input():
    model = MirrorEquivariant()
    # integer pixel values: every pooled sum is exact, so equalities hold bit for bit
    x = torch.randint(0, 256, (3, 3, 64, 48), generator=torch.Generator().manual_seed(1))
    x = x.double()
    xm = x.flip(-1)
    np.testing.assert_array_equal(model(xm).numpy(), pose.flip_back(model(x)).numpy())
    a = pose.predict_heatmaps(model, x, flip_test=True, shift=True)
    b = pose.predict_heatmaps(model, xm, flip_test=True, shift=True)
    # the mirrored input's flip-test heatmaps are the original's mirrored back and moved one
    # column right (the shift puts the mirror axis at W/2), exactly, away from the borders
    expect = pose.flip_back(a)
    np.testing.assert_array_equal(b[..., 1:-1].numpy(), expect[..., :-2].numpy())
    # and so the decoded keypoints mirror as x -> W - x (default decoding is symmetric)
    W = a.shape[-1]
    ca, _ = pose.decode(a.numpy(), "default")
    cb, _ = pose.decode(b.numpy(), "default")
    perm = list(range(17))
    for p, q in FLIP_PAIRS:
        perm[p], perm[q] = q, p
    mirrored = ca[:, perm]
    ok = ((mirrored[..., 0] > 1) & (mirrored[..., 0] < W - 2)
          & (cb[..., 0] > 1) & (cb[..., 0] < W - 2))
    ok[:, 0] = False  # the nose's symmetric map may tie between two columns
    assert ok.sum() > 20
    np.testing.assert_array_equal(cb[..., 0][ok], W - mirrored[..., 0][ok])
    np.testing.assert_array_equal(cb[..., 1][ok], mirrored[..., 1][ok])


def test_crop_geometry_round_trip():
    center, size = pose.box_to_center_size(np.array([100, 50, 60, 200.0]), 0.75, 1.25)
    np.testing.assert_allclose(center, [130, 150])
    np.testing.assert_allclose(size, [150 * 1.25, 200 * 1.25])  # widened to 3:4, padded
    M = pose.crop_matrix(center, size, 0.0, (96, 128))
    np.testing.assert_allclose(pose.apply_affine(center[None], M)[0], [48, 64])
    pts = np.random.default_rng(3).uniform(0, 300, (17, 2))
    hm = pose.apply_affine(pts, M) / 4  # crop pixels -> heatmap pixels (stride 4)
    back = pose.heatmap_to_image(hm[None], center[None], size[None], (24, 32))[0]
    np.testing.assert_allclose(back, pts, atol=1e-9)
    # rotation turns about the centre and keeps distances scaled by crop width / box width
    R = pose.crop_matrix(center, size, 30.0, (96, 128))
    d = pose.apply_affine(pts, R) - [48, 64]
    np.testing.assert_allclose(np.linalg.norm(d, axis=1),
                               np.linalg.norm(pts - center, axis=1) * 96 / size[0])
    np.testing.assert_allclose(pose.clean_box(np.array([-5, 10, 3, 20.0]), 100, 100),
                               [0, 10, 2, 19])  # mmpose: clip x1, keep w - 1 from there
    assert pose.clean_box(np.array([5, 10, 0.5, 20.0]), 100, 100) is None


def test_head_shapes_and_loss():
    from backbones import create_backbone

    bb = create_backbone("test_solider_swin", semantic_weight=0.8, strides=(4, 2, 1, 1))
    m = pose.PoseModel(bb, 0.8)
    assert m.stride == 4
    out = m(torch.randn(2, 3, 128, 96))
    assert out.shape == (2, 17, 32, 24)
    pred, tgt = torch.rand(2, 17, 8, 6), torch.rand(2, 17, 8, 6)
    w = torch.randint(0, 2, (2, 17)).float()
    ref = sum(torch.nn.functional.mse_loss(pred[:, k].reshape(2, -1) * w[:, k:k + 1],
                                           tgt[:, k].reshape(2, -1) * w[:, k:k + 1])
              for k in range(17)) / 17
    assert torch.allclose(pose.joints_mse(pred, tgt, w), ref)


def test_training_sample_targets_follow_the_warped_keypoints(tmp_path):
    """A crop's heatmap peaks sit where its keypoints were painted in the warped image."""
    from PIL import Image

    img = np.zeros((200, 160, 3), np.uint8)
    joints = np.zeros((17, 3))
    rng = np.random.default_rng(4)
    joints[:, 0], joints[:, 1], joints[:, 2] = rng.uniform(50, 110, 17), rng.uniform(40, 160, 17), 1
    joints[0] = (60, 60, 1)  # off the box centre, so a wrong flip shows
    img[58:63, 58:63] = 255  # a bright square on keypoint 0 (the nose)
    p = tmp_path / "im.png"
    Image.fromarray(img).save(p)
    c, s = pose.box_to_center_size(np.array([50, 40, 60, 120.0]), 0.75, 1.25)
    crop = pose.Crop(str(p), 1, (160, 200), c, s, 1.0, joints)
    sch = pose.SCHEDULES["smoke"]
    ds = pose.TopDownCrops([crop], sch, (24, 32), train=True)
    np.random.seed(0)
    checked = 0
    for _ in range(12):
        x, target, weight = ds[0]
        if weight[0] == 0 or target[0].max() < 1:  # the nose is outside this crop
            continue
        checked += 1
        mean_img = x.mean(0).numpy()
        bright = np.unravel_index(mean_img.argmax(), mean_img.shape)  # (y, x) in the crop
        peak = np.unravel_index(target[0].numpy().argmax(), target[0].shape)
        assert abs(bright[0] / 4 - peak[0]) <= 1.5 and abs(bright[1] / 4 - peak[1]) <= 1.5
    assert checked >= 3


def test_end_to_end_tiny_run(tmp_path):
    cfg = tiny_run_config(tmp_path, "pose", '[tasks.pose.schedule.smoke]\nepochs = 1\ninput_size = [64, 48]\n'
                                            'batch_size = 16\n')
    run_dir = runner.run(cfg)
    df = results.load(tmp_path / "res")
    assert set(df["dataset"]) == {"coco_keypoints"}
    assert set(df["split"]) == {"val"}
    assert set(df["metric"]) <= {"AP", "AP50", "AP75", "APm", "APl", "AR"}
    assert {"AP", "AP50", "AP75", "AR"} <= set(df["metric"])
    assert set(df["semantic_weight"]) == {0.8}
    assert ((df["value"] >= 0) & (df["value"] <= 100)).all()
    # the saved COCO results file re-evaluates to the stored numbers (`bench eval pose`)
    from bench.data.coco import read_coco_keypoints
    root = default_dir(tmp_path / "cache", "smoke", 0) / "coco"
    again = pose.Pose.evaluate_file(run_dir / "pose" / "coco_keypoints_predictions.json",
                                    read_coco_keypoints(root, "val"))
    stored = df.set_index("metric")["value"]
    assert {k: round(v, 6) for k, v in again.items()} == {k: round(stored[k], 6) for k in again}


def test_oracle_heatmaps_through_the_whole_test_path_score_near_perfect(tmp_path):
    """Ground-truth heatmaps of the synthetic COCO val crops, decoded, projected back to the
    image, rescored, NMS-ed and evaluated: geometry, codec and metric agree end to end."""
    from bench.data import dataset_root
    from bench.data.coco import read_coco_keypoints

    p = tmp_path / "bench.toml"
    p.write_text("")
    cfg = config.load(p, [f"paths.cache_dir={tmp_path / 'cache'}"])
    root, _ = dataset_root(cfg, "coco_keypoints", profile="smoke")
    val = read_coco_keypoints(root, "val")
    input_wh, hm_wh = (192, 256), (48, 64)
    crops = pose.test_crops(val, 0.75, 1.25, use_gt_bbox=True)
    assert crops
    heatmaps = []
    for c in crops:
        M = pose.crop_matrix(c.center, c.size, 0.0, input_wh)
        hm, _ = pose.encode(pose.apply_affine(c.joints, M), c.joints[:, 2], input_wh, hm_wh)
        heatmaps.append(hm)
    coords, maxvals = pose.decode(np.stack(heatmaps), "default")
    kps = np.concatenate([pose.heatmap_to_image(coords, np.stack([c.center for c in crops]),
                                                np.stack([c.size for c in crops]), hm_wh),
                          maxvals], -1)
    m = pose.evaluate(val.coco, [c.image_id for c in crops], kps, [c.score for c in crops],
                      [float(np.prod(c.size)) for c in crops])
    assert m.AP > 0.9 and m.AR > 0.9
