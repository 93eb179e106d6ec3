"""The OpenMMLab bridge (adapters/openmmlab.py).

The wrapper and the CityPersons → COCO conversion need no OpenMMLab and always run.  The
rest needs the `openmmlab` extra (adapters/openmmlab_install.sh) and is skipped, with the
reason, where it is absent (the default CI): each zoo backbone built through mmdet's,
mmpose's and mmseg's MODELS gives our backbone's features for the same weights, and each
example config builds, trains one iteration and evaluates on the synthetic world.
"""
from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch

from adapters import openmmlab as om
from backbones import create_backbone
from bench.data.synth.world import default_dir

MM_MISSING = [p for p in ("mmengine", "mmcv", "mmdet", "mmpose", "mmseg")
              if importlib.util.find_spec(p) is None]
needs_mm = pytest.mark.skipif(
    bool(MM_MISSING), reason=f"OpenMMLab not installed ({', '.join(MM_MISSING)} missing): "
    "optional extra, install with adapters/openmmlab_install.sh")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The smoke synthetic world's COCO, LIP and CityPersons roots, made once here."""
    cache = tmp_path_factory.mktemp("cache")
    return cache, om.synthetic_roots(cache)


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("name", ["test_solider_swin", "test_clasp_swin", "test_sup_swin"])
def test_wrapper_gives_our_features(name, tmp_path):
    torch.manual_seed(0)
    ours = create_backbone(name, out_indices=(0, 2, 3)).eval()
    ckpt = tmp_path / "w.pth"
    torch.save(ours.state_dict(), ckpt)
    wrapped = om.HCBenchBackbone(name, checkpoint=str(ckpt), out_indices=(0, 2, 3)).eval()
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        feats = wrapped(x)
        assert isinstance(feats, tuple) and _same(feats, ours.forward_intermediates(x))
    assert [f.shape[1] for f in feats] == list(wrapped.feature_channels) == [32, 128, 256]
    assert [96 // f.shape[2] for f in feats] == list(wrapped.feature_strides) == [4, 16, 32]


def test_wrapper_semantic_weight_and_task():
    torch.manual_seed(0)
    ours = create_backbone("test_solider_swin", semantic_weight=0.2).eval()
    wrapped = om.HCBenchBackbone("test_solider_swin", semantic_weight=0.2).eval()
    wrapped.model.load_state_dict(ours.state_dict())
    x = torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        assert _same(wrapped(x), ours.forward_intermediates(x))
        assert not _same(wrapped(x), ours.forward_intermediates(x, semantic_weight=0.9))
    clasp = create_backbone("test_clasp_swin").eval()
    wc = om.HCBenchBackbone("test_clasp_swin", task="pose").eval()
    wc.model.load_state_dict(clasp.state_dict())
    with torch.no_grad():
        assert _same(wc(x), clasp.forward_intermediates(x, task="pose"))


def test_frozen_stages():
    m = om.HCBenchBackbone("test_solider_swin", frozen_stages=2)
    m.train()
    frozen = [m.model.patch_embed, m.model.stages[0], m.model.stages[1], m.model.norm0,
              m.model.norm1]
    assert all(not p.requires_grad for f in frozen for p in f.parameters())
    assert all(not f.training for f in frozen)
    assert all(p.requires_grad for p in m.model.stages[2].parameters())
    assert m.model.stages[2].training


def test_citypersons_to_coco(world):
    from bench.data.citypersons import read_citypersons
    cache, roots = world
    world = default_dir(cache, "smoke", 0) / "CityPersons"
    for split in ("train", "val"):
        coco = json.loads((roots["CityPersons"] / "coco_annotations" / f"{split}.json").read_text())
        imgs = read_citypersons(world, split)
        assert len(coco["images"]) == len(imgs)
        assert len(coco["annotations"]) == sum(len(i.objects) for i in imgs)
        assert coco["categories"] == [{"id": 1, "name": "pedestrian"}]
        first = coco["images"][0]
        assert (roots["CityPersons"] / "leftImg8bit" / split / first["file_name"]).is_file()
        ignored = sum(o.ignore for i in imgs for o in i.objects)
        assert sum(a["iscrowd"] for a in coco["annotations"]) == ignored


@pytest.mark.skipif(om.available(), reason="mmengine is installed")
def test_register_is_a_no_op_without_openmmlab():
    assert om.register() == [] and om.MODELS is None


# -- with OpenMMLab ---------------------------------------------------------------------
@needs_mm
@pytest.mark.parametrize("scope", ["mmdet", "mmpose", "mmseg"])
@pytest.mark.parametrize("name", ["test_solider_swin", "test_clasp_swin"])
def test_mm_registry_builds_our_backbone(scope, name, tmp_path):
    import importlib
    registry = importlib.import_module(f"{scope}.registry").MODELS
    assert set(om.register()) >= {"hcbench", "mmdet", "mmpose", "mmseg"}
    torch.manual_seed(0)
    ours = create_backbone(name, semantic_weight=0.5 if "solider" in name else None).eval()
    ckpt = tmp_path / "w.pth"
    torch.save(ours.state_dict(), ckpt)
    cfg = dict(type="hcbench.Backbone", name=name, checkpoint=str(ckpt),
               out_indices=(0, 1, 2, 3))
    if "solider" in name:
        cfg["semantic_weight"] = 0.5
    for c in (cfg, dict(cfg, type="HCBenchBackbone")):
        mm = registry.build(c).eval()
        assert isinstance(mm, om.HCBenchBackbone)
        x = torch.randn(2, 3, 128, 64)
        with torch.no_grad():
            assert _same(mm(x), ours.forward_intermediates(x))


TINY = {"model.backbone.name": "test_solider_swin", "model.backbone.semantic_weight": 0.5}
CONFIGS = {
    "td-hm_solider-swin-s_coco-256x192.py": (
        {"model.head.in_channels": 256, "model.head.deconv_out_channels": (32, 32, 32),
         "train_dataloader.batch_size": 4, "val_dataloader.batch_size": 4},
        "coco/AP"),
    "upernet_solider-swin-s_lip-473x473.py": (
        {"model.decode_head.in_channels": [32, 64, 128, 256], "model.decode_head.channels": 32,
         "train_dataloader.batch_size": 2,
         "train_dataloader.dataset.pipeline.2.scale": (128, 128),
         "train_dataloader.dataset.pipeline.3.crop_size": (128, 128),
         "val_dataloader.dataset.pipeline.1.scale": (128, 128),
         "model.data_preprocessor.size": (128, 128)},
        "mIoU"),
    "faster-rcnn_solider-swin-s_fpn_citypersons.py": (
        {"model.neck.in_channels": [32, 64, 128, 256], "model.neck.out_channels": 32,
         "model.rpn_head.in_channels": 32, "model.rpn_head.feat_channels": 32,
         "model.roi_head.bbox_roi_extractor.out_channels": 32,
         "model.roi_head.bbox_head.in_channels": 32,
         "model.roi_head.bbox_head.fc_out_channels": 64,
         "train_dataloader.dataset.pipeline.2.scale": (512, 256),
         "val_dataloader.dataset.pipeline.1.scale": (512, 256)},
        "coco/bbox_mAP"),
}


@needs_mm
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_example_config_trains_and_evaluates(config, world, tmp_path, monkeypatch):
    options, metric = CONFIGS[config]
    roots = world[1]
    cfg = om.load_config(config)
    assert cfg.model.backbone.type == "hcbench.Backbone"
    data_root = roots[cfg.hcbench_dataset]
    monkeypatch.chdir(tmp_path)
    out = om.run_config(config, tmp_path / "work", data_root=data_root,
                        options={**TINY, **options}, max_iters=1, val_samples=4)
    assert out["loss"] and all(math.isfinite(v) for v in out["loss"].values())
    assert metric in out["metrics"] and math.isfinite(out["metrics"][metric])
