"""COCO person keypoints: the synthetic writer produces the real format (pycocotools loads
and evaluates it), the reader reads it back and names the file and the problem for every
kind of damage."""
from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from bench.data import coco
from bench.data.base import DataError, Problems
from bench.data.synth.render import COCO_KEYPOINTS, COCO_SKELETON
from bench.data.synth.world import SynthWorld

# pycocotools' mask decoding trips a numpy 2 deprecation inside the library
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    counts = coco.write_synthetic(SynthWorld(seed=0, size="smoke"), root)
    return root / "coco", counts


@pytest.fixture
def copy(written, tmp_path):
    dst = tmp_path / "coco"
    shutil.copytree(written[0], dst)
    return dst


def checking() -> Problems:
    return Problems(strict=True, check_images=True)


def _ann_path(root: Path, split: str = "val") -> Path:
    return root / "annotations" / f"person_keypoints_{split}2017.json"


def _edit(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def _quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


def test_round_trip_counts(written):
    root, counts = written
    for split in coco.SPLITS:
        ds = coco.read_coco_keypoints(root, split, problems=checking())
        assert len(ds.images) == counts[f"{split}_images"] > 0
        assert len(ds.persons) == counts[f"{split}_persons"] > len(ds.images)
        with_kp = sum(p.num_keypoints > 0 for p in ds.persons)
        assert with_kp == counts[f"{split}_persons_with_keypoints"]
        assert ds.keypoint_names == COCO_KEYPOINTS and ds.skeleton == COCO_SKELETON
        for im in ds.images:
            assert Path(im.path).is_absolute()
            assert im.path == str(root / f"{split}2017" / im.file_name)
            assert re.fullmatch(r"\d{12}\.jpg", im.file_name)
        for p in ds.persons:
            assert p.bbox.dtype == np.float32 and p.keypoints.shape == (17, 3)
            assert p.num_keypoints == int((p.keypoints[:, 2] > 0).sum()) and not p.iscrowd
        assert ds.detections is None
    ds = coco.read_coco_keypoints(root, "val", detections=coco.DETECTIONS_FILE)
    assert len(ds.detections) == counts["val_detections"] > 0
    assert {d.image_id for d in ds.detections} <= {im.id for im in ds.images}


def test_pycocotools_loads_the_files_with_the_right_counts(written):
    root, counts = written
    for split in coco.SPLITS:
        gt = _quiet(COCO, str(_ann_path(root, split)))
        assert len(gt.getImgIds()) == counts[f"{split}_images"]
        assert len(gt.getAnnIds(catIds=[1])) == counts[f"{split}_persons"]
        (cat,) = gt.loadCats(gt.getCatIds())
        assert cat["name"] == "person" and cat["id"] == 1
        assert cat["keypoints"] == list(COCO_KEYPOINTS)
        assert cat["skeleton"] == [list(p) for p in COCO_SKELETON]
        assert min(k for pair in cat["skeleton"] for k in pair) == 1  # 1-based
        for ann in gt.loadAnns(gt.getAnnIds()):
            img = gt.imgs[ann["image_id"]]
            kp = np.array(ann["keypoints"]).reshape(17, 3)
            assert len(ann["keypoints"]) == 51 and ann["num_keypoints"] == int((kp[:, 2] > 0).sum())
            assert set(kp[:, 2].tolist()) <= {0, 1, 2} and (kp[kp[:, 2] == 0, :2] == 0).all()
            vis = kp[kp[:, 2] > 0]
            assert ((vis[:, 0] >= 0) & (vis[:, 0] < img["width"]) & (vis[:, 1] >= 0)
                    & (vis[:, 1] < img["height"])).all()
            x, y, w, h = ann["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= img["width"] and y + h <= img["height"]
            assert ann["iscrowd"] == 0 and ann["category_id"] == 1
            # area is the instance mask's pixel count; the mask lies inside the box
            m = gt.annToMask(ann)
            assert m.shape == (img["height"], img["width"])
            assert int(m.sum()) == ann["area"] == int(mask_utils.area(gt.annToRLE(ann)))
            ys, xs = np.nonzero(m)
            assert xs.min() >= x and xs.max() < x + w and ys.min() >= y and ys.max() < y + h
        for img in gt.dataset["images"]:
            with Image.open(root / f"{split}2017" / img["file_name"]) as im:
                assert im.format == "JPEG" and im.size == (img["width"], img["height"])


def test_ground_truth_fed_back_scores_keypoint_ap_one(written):
    root, _ = written
    ds = coco.read_coco_keypoints(root, "val")
    results = [{"image_id": p.image_id, "category_id": 1, "score": 1.0,
                "keypoints": p.keypoints.reshape(-1).tolist()} for p in ds.persons]
    ev = _quiet(lambda: _evaluate(ds.coco, results))
    assert ev.stats[0] == pytest.approx(1.0)  # AP @ OKS 0.50:0.95
    assert ev.stats[5] == pytest.approx(1.0)  # AR
    # a shifted copy does worse: the check has teeth
    shifted = [dict(r, keypoints=(np.array(r["keypoints"]) + np.tile([6.0, 6.0, 0.0], 17)).tolist())
               for r in results]
    assert _quiet(lambda: _evaluate(ds.coco, shifted)).stats[0] < 0.9


def _evaluate(gt, results):
    ev = COCOeval(gt, gt.loadRes(results), iouType="keypoints")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev


def test_detection_results_look_like_a_person_detector(written):
    root, _ = written
    path = root / coco.DETECTIONS_FILE
    dets = json.loads(path.read_text())
    assert isinstance(dets, list) and dets
    assert all(set(d) == {"image_id", "category_id", "bbox", "score"} and d["category_id"] == 1
               for d in dets)
    gt = _quiet(COCO, str(_ann_path(root)))
    ev = _quiet(lambda: _bbox_eval(gt, dets))
    assert 0.3 < ev.stats[1] < 1.0  # AP@0.5: mostly found, not perfect (misses, false positives)
    assert min(d["score"] for d in dets) < 0.5 < max(d["score"] for d in dets)


def _bbox_eval(gt, dets):
    ev = COCOeval(gt, gt.loadRes(dets), iouType="bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev


def test_same_seed_same_bytes_other_seed_differs(written, tmp_path):
    root, _ = written
    coco.write_synthetic(SynthWorld(seed=0, size="smoke"), tmp_path / "a")
    coco.write_synthetic(SynthWorld(seed=1, size="smoke"), tmp_path / "b")
    same, other = tmp_path / "a" / "coco", tmp_path / "b" / "coco"
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(same) for p in same.rglob("*") if p.is_file())
    assert all((root / f).read_bytes() == (same / f).read_bytes() for f in files)
    for f in (_ann_path(Path()), Path(coco.DETECTIONS_FILE)):
        assert (root / f).read_bytes() != (other / f).read_bytes()


def test_bad_json_is_named(copy):
    path = _ann_path(copy)
    path.write_text('{"images": [')
    with pytest.raises(DataError, match=re.escape(str(path)) + ": unreadable json"):
        coco.read_coco_keypoints(copy)
    path.write_text("[]")
    with pytest.raises(DataError, match=re.escape(str(path)) + ": expected a json object"):
        coco.read_coco_keypoints(copy)
    _edit(_ann_path(copy, "train"), lambda d: d["annotations"][0].pop("image_id"))
    with pytest.raises(DataError, match=re.escape(str(_ann_path(copy, "train")))
                       + r": not a COCO annotation file \(pycocotools: KeyError"):
        coco.read_coco_keypoints(copy, "train")


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["annotations"][2].update(keypoints=[0] * 48),
     r"annotations\[2\] \(id \d+\)\.keypoints: expected 51 numbers \(17 x \(x, y, v\)\), got 48"),
    (lambda d: d["annotations"][1].update(bbox=[1, 2, 3]),
     r"annotations\[1\] \(id \d+\)\.bbox: expected 4 numbers \[x, y, w, h\], got 3"),
    (lambda d: d["annotations"][0].update(bbox=[10, 10, -4, 20]),
     r"annotations\[0\] .*negative width"),
    (lambda d: d["annotations"][0].update(bbox=[300, 10, 100, 20]),
     r"annotations\[0\] .*\.bbox: .* outside the 320x240 image"),
    (lambda d: d["annotations"][0].update(image_id=7),
     r"annotations\[0\] .*\.image_id: 7 names no"),
    (lambda d: d["annotations"][0].update(num_keypoints=99),
     r"annotations\[0\] .*\.num_keypoints: 99"),
    (lambda d: d["annotations"][0]["keypoints"].__setitem__(2, 3),
     r"annotations\[0\] .*\.keypoints: visibility flags must be 0, 1 or 2"),
    (lambda d: d["annotations"][0].update(segmentation={"counts": "x", "size": [1, 1]}),
     r"annotations\[0\] .*\.segmentation: expected polygons"),
    (lambda d: d["annotations"][1].update(id=d["annotations"][0]["id"]),
     r"annotations\[1\] \(id \d+\)\.id: not a unique integer"),
    (lambda d: d["images"][1].update(id=d["images"][0]["id"]),
     r"images\[1\]\.id: \d+ is not a unique"),
    (lambda d: d["categories"][0]["keypoints"].pop(),
     r"categories \(person\)\.keypoints: expected 17"),
    (lambda d: d["categories"][0].update(name="people"), r"categories: no 'person' category"),
])
def test_malformed_annotations_raise_naming_file_and_field(copy, edit, message):
    path = _ann_path(copy)
    _edit(path, edit)
    with pytest.raises(DataError, match=re.escape(str(path)) + ": " + message):
        coco.read_coco_keypoints(copy)


def test_truncated_image_is_named_when_checking_images(copy):
    image = sorted((copy / "val2017").iterdir())[3]
    image.write_bytes(image.read_bytes()[:300])
    coco.read_coco_keypoints(copy)  # without decoding, the file only has to exist
    with pytest.raises(DataError, match=re.escape(str(image)) + ": unreadable image"):
        coco.read_coco_keypoints(copy, problems=checking())
    image.unlink()
    with pytest.raises(DataError, match=re.escape(str(image)) + ": missing image"):
        coco.read_coco_keypoints(copy)


def test_bad_detection_files_are_named(copy):
    path = copy / coco.DETECTIONS_FILE
    with pytest.raises(DataError, match=re.escape(str(copy / "nope.json")) + ": missing"):
        coco.read_coco_keypoints(copy, detections="nope.json")
    _edit(path, lambda d: d[4].update(bbox=[1, 2, 3]))
    message = re.escape(str(path)) + r": \[4\]\.bbox: expected 4 numbers"
    with pytest.raises(DataError, match=message):
        coco.read_coco_keypoints(copy, detections=path)
    _edit(path, lambda d: d[4].update(bbox=[1, 2, 3, 4], image_id=12345))
    with pytest.raises(DataError, match=re.escape(str(path)) + r": \[4\]\.image_id: 12345 is not"):
        coco.read_coco_keypoints(copy, detections=path)
    _edit(path, lambda d: d[4].update(image_id=d[0]["image_id"], category_id=3))
    assert len(coco.read_coco_keypoints(copy, detections=path).detections) == len(
        json.loads(path.read_text())) - 1  # other categories are not persons: skipped
    path.write_text("{}")
    with pytest.raises(DataError, match=re.escape(str(path)) + ": expected a json list"):
        coco.read_coco_keypoints(copy, detections=path)


def test_missing_files_and_split(copy, tmp_path):
    with pytest.raises(DataError, match="unknown COCO split 'test'"):
        coco.read_coco_keypoints(copy, "test")
    _ann_path(copy, "train").unlink()
    message = re.escape(str(_ann_path(copy, "train"))) + ": missing annotation"
    with pytest.raises(DataError, match=message):
        coco.read_coco_keypoints(copy, "train")
    shutil.rmtree(copy / "val2017")
    with pytest.raises(DataError, match=re.escape(str(copy / "val2017")) + ": missing"):
        coco.read_coco_keypoints(copy)
    with pytest.raises(DataError, match="missing dataset root"):
        coco.read_coco_keypoints(tmp_path / "nowhere")


def test_collect_mode_reports_every_problem(copy):
    path = _ann_path(copy)

    def damage(d):
        d["annotations"][0]["keypoints"] = [0] * 50
        d["annotations"][1]["bbox"] = [1, 2, 3]
        d["annotations"][2]["image_id"] = -5

    _edit(path, damage)
    image = sorted((copy / "val2017").iterdir())[-1]
    image.write_bytes(image.read_bytes()[:300])
    probs = Problems(strict=False, check_images=True)
    ds = coco.read_coco_keypoints(copy, problems=probs)
    reasons = [str(p) for p in probs.items]

    def reported(where, text):
        return any(r.startswith(f"{where}") and text in r for r in reasons)

    assert reported(image, ": unreadable image")
    assert reported(f"{path}: annotations[0]", ".keypoints: expected 51")
    assert reported(f"{path}: annotations[1]", ".bbox: expected 4 numbers")
    assert reported(f"{path}: annotations[2]", ".image_id: -5")
    bad_image_id = int(image.stem)
    anns = json.loads(path.read_text())["annotations"]
    n_lost = sum(p["image_id"] == bad_image_id for p in anns[3:])
    assert len(reasons) == 4, reasons  # the unreadable image's persons are left out silently
    assert len(ds.images) == 7 and len(ds.persons) == len(anns) - 3 - n_lost
