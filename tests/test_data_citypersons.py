"""CityPersons: the synthetic writer produces the real format, the reader reads it back and
names the file and the problem for every kind of damage."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.data import citypersons as cp
from bench.data.base import DataError, Problems
from bench.data.synth.world import SynthWorld


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("cp")
    counts = cp.write_synthetic(SynthWorld(seed=0, size="smoke"), root)
    return root / "CityPersons", counts


@pytest.fixture
def copy(written, tmp_path):
    dst = tmp_path / "CityPersons"
    shutil.copytree(written[0], dst)
    return dst


def _ann(root: Path, split: str = "val") -> list[Path]:
    return sorted((root / "gtBboxCityPersons" / split).glob("*/*.json"))


def _edit(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_round_trip_counts(written):
    root, counts = written
    for split in cp.SPLITS:
        images = cp.read_citypersons(root, split)
        assert len(images) == counts[f"{split}_images"] > 0
        objects = [o for im in images for o in im.objects]
        assert len(objects) == counts[f"{split}_objects"]
        for label in cp.LABELS:
            n = sum(o.label == label for o in objects)
            assert n == counts.get(f"{split}_{cp.COUNTED.get(label)}", 0)
        for im in images:
            assert Path(im.image_path).is_absolute() and Path(im.image_path).is_file()
            expected = f"leftImg8bit/{split}/{im.city}/{im.name}_leftImg8bit.png"
            assert im.image_path.endswith(expected)
            for o in im.objects:
                assert o.bbox.dtype == np.float32 and o.bbox.shape == (4,)
                assert o.bbox_vis.dtype == np.float32
    # the smoke world at seed 0 has every label the writer produces
    assert all(counts[f"{s}_pedestrian"] and counts[f"{s}_rider"] for s in cp.SPLITS)
    assert sum(counts[f"{s}_group"] for s in cp.SPLITS) >= 2
    assert sum(counts[f"{s}_ignore"] for s in cp.SPLITS) >= 1
    assert sum(counts[f"{s}_sitting"] for s in cp.SPLITS) >= 1


def test_files_have_exactly_the_real_format(written):
    root, _ = written
    name_re = re.compile(r"^([a-z]+)_\d{6}_\d{6}_gtBboxCityPersons\.json$")
    for split in cp.SPLITS:
        for path in _ann(root, split):
            assert name_re.match(path.name).group(1) == path.parent.name
            data = json.loads(path.read_text())
            assert set(data) == {"imgHeight", "imgWidth", "objects"}
            image = root / "leftImg8bit" / split / path.parent.name / path.name.replace(
                "gtBboxCityPersons.json", "leftImg8bit.png")
            with Image.open(image) as im:
                assert im.format == "PNG" and im.mode == "RGB"
                assert im.size == (data["imgWidth"], data["imgHeight"]) == (512, 256)
            for o in data["objects"]:
                assert set(o) == {"bbox", "bboxVis", "instanceId", "label"}
                assert o["label"] in cp.LABELS
                assert all(isinstance(v, int) for v in o["bbox"] + o["bboxVis"])
                x, y, w, h = o["bbox"]
                vx, vy, vw, vh = o["bboxVis"]
                assert w > 0 and h > 0 and vw > 0 and vh > 0
                assert x <= vx and y <= vy and vx + vw <= x + w and vy + vh <= y + h
                iid = o["instanceId"]
                if o["label"] == "pedestrian" or o["label"] == "sitting person":
                    assert iid // 1000 == 24
                elif o["label"] == "rider":
                    assert iid // 1000 == 25
                elif o["label"] == "person group":
                    assert iid == 24
                else:
                    assert iid == 0
                if o["label"] not in ("pedestrian", "rider"):  # as the README says
                    assert o["bbox"] == o["bboxVis"]


def test_ignore_flags_follow_the_standard_evaluation(copy):
    path = _ann(copy)[0]
    def obj(label, iid, bbox, vis=None):
        return {"label": label, "instanceId": iid, "bbox": bbox, "bboxVis": vis or bbox}

    objs = [
        obj("pedestrian", 24000, [10, 10, 30, 100]),
        obj("pedestrian", 24001, [60, 10, 20, 40]),  # too small for Reasonable
        obj("pedestrian", 24002, [90, 10, 30, 100], [90, 10, 30, 50]),  # half hidden
        obj("rider", 25000, [130, 10, 30, 100]),
        obj("ignore", 0, [200, 10, 30, 60]),
        # an amodal box may reach past the border; the visible one may not
        obj("pedestrian", 24003, [490, 100, 30, 120], [490, 100, 22, 120]),
    ]
    _edit(path, lambda d: d.update(objects=objs))
    im = next(i for i in cp.read_citypersons(copy) if i.ann_path == str(path))
    assert [o.ignore for o in im.objects] == [False, False, False, True, True, False]
    reasonable = [o.ignored_in("Reasonable") for o in im.objects]
    assert reasonable == [False, True, True, True, True, False]
    assert [o.ignored_in("All") for o in im.objects] == [False, False, False, True, True, False]
    assert [o.ignored_in("Reasonable_occ=heavy") for o in im.objects][2] is False
    assert im.objects[2].vis_ratio == pytest.approx(0.5)
    boxes, ign = im.boxes("Reasonable")
    assert boxes.shape == (6, 4) and boxes.dtype == np.float32 and ign.tolist()[:2] == [False, True]


def test_same_seed_same_bytes_other_seed_differs(written, tmp_path, monkeypatch):
    root, _ = written
    cp.write_synthetic(SynthWorld(seed=0, size="smoke"), tmp_path / "a")
    same = tmp_path / "a" / "CityPersons"
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(same) for p in same.rglob("*") if p.is_file())
    assert all((root / f).read_bytes() == (same / f).read_bytes() for f in files)
    # another seed: one city is enough to see the difference
    monkeypatch.setattr(cp, "CITIES", {"train": (), "val": ("frankfurt",)})
    cp.write_synthetic(SynthWorld(seed=1, size="smoke"), tmp_path / "b")
    other = tmp_path / "b" / "CityPersons"
    anns = [f.relative_to(other) for f in _ann(other)]
    assert len(anns) == 3
    assert all((root / f).read_bytes() != (other / f).read_bytes() for f in anns)


def test_truncated_image_is_named_when_checking_images(copy):
    image = sorted((copy / "leftImg8bit" / "val").glob("*/*.png"))[1]
    image.write_bytes(image.read_bytes()[:500])
    cp.read_citypersons(copy)  # without decoding, the file only has to exist
    with pytest.raises(DataError, match=re.escape(str(image)) + ": unreadable image"):
        cp.read_citypersons(copy, problems=Problems(strict=True, check_images=True))
    image.unlink()
    with pytest.raises(DataError, match=re.escape(str(image)) + ": missing image"):
        cp.read_citypersons(copy)


def test_bad_json_is_named(copy):
    path = _ann(copy)[0]
    path.write_text('{"imgHeight": 256, "imgWidth": 512, "objects": [')
    with pytest.raises(DataError, match=re.escape(str(path)) + ": unreadable json"):
        cp.read_citypersons(copy)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["objects"][3].update(bbox=[1, 2, 3]), r"objects\[3\]\.bbox: expected 4 numbers"),
    (lambda d: d["objects"][0].update(bboxVis="x"), r"objects\[0\]\.bboxVis: expected 4 numbers"),
    (lambda d: d["objects"][1].update(label="car"), r"objects\[1\]\.label: unknown label 'car'"),
    (lambda d: d["objects"][0].pop("instanceId"), r"objects\[0\]: missing key\(s\) instanceId"),
    (lambda d: d["objects"][0].update(bbox=[5, 5, 0, 10]),
     r"objects\[0\]\.bbox: width and height must be positive"),
    (lambda d: d["objects"][0].update(bbox=[600, 5, 10, 10]),
     r"objects\[0\]\.bbox: .* outside the 512x256 image"),
    (lambda d: d["objects"][0].update(bboxVis=[500, 5, 40, 10]),
     r"objects\[0\]\.bboxVis: .* not a box inside"),
    (lambda d: d.pop("imgWidth"), r"missing key\(s\) imgWidth"),
    (lambda d: [d["objects"][k].update(label="pedestrian", instanceId=24500) for k in (0, 1)],
     r"objects\[1\]\.instanceId: 24500 repeats objects\[0\]"),
])
def test_malformed_annotations_raise_naming_file_and_field(copy, edit, message):
    path = _ann(copy)[2]
    _edit(path, edit)
    with pytest.raises(DataError, match=re.escape(str(path)) + ": " + message):
        cp.read_citypersons(copy)


def test_image_size_must_match_the_annotation(copy):
    path = _ann(copy)[0]
    _edit(path, lambda d: d.update(imgWidth=1024))
    cp.read_citypersons(copy)
    message = re.escape(str(path)) + r": imgWidth x imgHeight 1024x256 differs"
    with pytest.raises(DataError, match=message):
        cp.read_citypersons(copy, problems=Problems(strict=True, check_images=True))


def test_missing_folders_and_split(copy, tmp_path):
    with pytest.raises(DataError, match="unknown CityPersons split 'test'"):
        cp.read_citypersons(copy, "test")
    shutil.rmtree(copy / "leftImg8bit" / "train")
    folder = copy / "leftImg8bit" / "train"
    with pytest.raises(DataError, match=re.escape(str(folder)) + ": missing"):
        cp.read_citypersons(copy, "train")
    with pytest.raises(DataError, match="missing dataset root"):
        cp.read_citypersons(tmp_path / "nowhere")


def test_collect_mode_reports_every_problem(copy):
    anns = _ann(copy)
    _edit(anns[0], lambda d: d["objects"][0].update(bbox=[1, 2, 3]))
    _edit(anns[0], lambda d: d["objects"][1].update(label="dog"))
    anns[1].write_text("not json")
    image = sorted((copy / "leftImg8bit" / "val").glob("*/*.png"))[2]
    image.write_bytes(image.read_bytes()[:300])
    probs = Problems(strict=False, check_images=True)
    images = cp.read_citypersons(copy, problems=probs)
    reasons = [str(p) for p in probs.items]
    assert len(reasons) == 4, reasons
    assert any(r.startswith(f"{anns[0]}: objects[0].bbox") for r in reasons)
    assert any(r.startswith(f"{anns[0]}: objects[1].label") for r in reasons)
    assert any(r.startswith(f"{anns[1]}: unreadable json") for r in reasons)
    assert any(r.startswith(f"{image}: unreadable image") for r in reasons)
    assert len(images) == len(anns) - 3  # the three damaged images are left out
