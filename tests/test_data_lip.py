"""LIP: the synthetic writer produces the shipped layout, the reader reads it (and SCHP's
flattened copy) back and names the file and the problem for every kind of damage."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.data import lip
from bench.data.base import DataError, Problems
from bench.data.synth.world import SynthWorld


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("lip")
    counts = lip.write_synthetic(SynthWorld(seed=0, size="smoke"), root)
    return root / "LIP", counts


@pytest.fixture
def copy(written, tmp_path):
    dst = tmp_path / "LIP"
    shutil.copytree(written[0], dst)
    return dst


def checking() -> Problems:
    return Problems(strict=True, check_images=True)


def test_round_trip_counts(written):
    root, counts = written
    for split in lip.SPLITS:
        samples = lip.read_lip(root, split, problems=checking())
        assert len(samples) == counts[f"{split}_images"] > 0
        ids = (root / "TrainVal_images" / f"{split}_id.txt").read_text().split()
        assert [s.id for s in samples] == ids
        for s in samples:
            assert Path(s.image_path).is_absolute() and Path(s.mask_path).is_absolute()
            assert s.image_path == str(root / "TrainVal_images" / f"{split}_images" / f"{s.id}.jpg")
            assert s.mask_path == str(root / "TrainVal_parsing_annotations" /
                                      f"{split}_segmentations" / f"{s.id}.png")


def test_masks_and_id_lists_are_in_the_shipped_format(written):
    root, _ = written
    sizes, seen = set(), set()
    for split in lip.SPLITS:
        ids = (root / "TrainVal_images" / f"{split}_id.txt").read_text().splitlines()
        images = sorted(p.stem for p in (root / "TrainVal_images" / f"{split}_images").iterdir())
        masks = sorted(p.stem for p in
                       (root / "TrainVal_parsing_annotations" / f"{split}_segmentations").iterdir())
        assert sorted(ids) == images == masks and len(set(ids)) == len(ids)
        assert all(re.fullmatch(r"\d+_\d+", i) for i in ids)
        for i in ids:
            with Image.open(root / "TrainVal_images" / f"{split}_images" / f"{i}.jpg") as im:
                assert im.format == "JPEG" and im.mode == "RGB"
                size = im.size
            mask = root / "TrainVal_parsing_annotations" / f"{split}_segmentations" / f"{i}.png"
            with Image.open(mask) as m:
                assert m.format == "PNG" and m.mode == "L" and m.size == size
                values = np.unique(np.asarray(m))
            assert values.min() >= 0 and values.max() <= 19
            seen.update(values.tolist())
            sizes.add(size)
    assert len(sizes) > 10  # varied crop sizes and aspects
    assert {0, 2, 5, 13, 14, 15, 16, 17} <= seen  # background, hair, clothes, face, limbs
    assert len(seen) >= 12


def test_flattened_schp_layout(written, tmp_path):
    root, counts = written
    flat = tmp_path / "flat"
    for split in lip.SPLITS:
        shutil.copytree(root / "TrainVal_images" / f"{split}_images", flat / f"{split}_images")
        shutil.copytree(root / "TrainVal_parsing_annotations" / f"{split}_segmentations",
                        flat / f"{split}_segmentations")
        shutil.copy(root / "TrainVal_images" / f"{split}_id.txt", flat / f"{split}_id.txt")
    samples = lip.read_lip(flat, "train", problems=checking())
    assert len(samples) == counts["train_images"]
    assert samples[0].image_path == str(flat / "train_images" / f"{samples[0].id}.jpg")


def test_id_list_beside_the_shipped_folders(copy):
    (copy / "TrainVal_images" / "val_id.txt").rename(copy / "val_id.txt")
    assert len(lip.read_lip(copy)) == len((copy / "val_id.txt").read_text().split())


def test_flip_labels_swaps_left_and_right():
    m = np.array([[0, 14, 16, 18], [15, 17, 19, 5]], np.uint8)
    f = lip.flip_labels(m)
    assert f.tolist() == [[19, 17, 15, 0], [5, 18, 16, 14]]
    assert lip.flip_labels(f).tolist() == m.tolist()


def test_same_seed_same_bytes_other_seed_differs(written, tmp_path):
    root, _ = written
    lip.write_synthetic(SynthWorld(seed=0, size="smoke"), tmp_path / "a")
    lip.write_synthetic(SynthWorld(seed=1, size="smoke"), tmp_path / "b")
    same, other = tmp_path / "a" / "LIP", tmp_path / "b" / "LIP"
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(same) for p in same.rglob("*") if p.is_file())
    assert all((root / f).read_bytes() == (same / f).read_bytes() for f in files)
    ids = Path("TrainVal_images/val_id.txt")
    assert (root / ids).read_bytes() != (other / ids).read_bytes()


def _first(copy: Path, split: str = "val") -> tuple[str, Path, Path]:
    sid = (copy / "TrainVal_images" / f"{split}_id.txt").read_text().split()[0]
    return (sid, copy / "TrainVal_images" / f"{split}_images" / f"{sid}.jpg",
            copy / "TrainVal_parsing_annotations" / f"{split}_segmentations" / f"{sid}.png")


def test_missing_id_list_is_named(copy):
    path = copy / "TrainVal_images" / "val_id.txt"
    path.unlink()
    with pytest.raises(DataError, match=re.escape(str(path)) + ": missing id list"):
        lip.read_lip(copy)


def test_truncated_image_is_named_when_checking_images(copy):
    _, image, _ = _first(copy)
    image.write_bytes(image.read_bytes()[:200])
    lip.read_lip(copy)  # without decoding, the file only has to exist
    with pytest.raises(DataError, match=re.escape(str(image)) + ": unreadable image"):
        lip.read_lip(copy, problems=checking())


@pytest.mark.parametrize("damage, message", [
    (lambda m: Image.new("L", (7, 9)).save(m), r"mask is 7x9, its image \d+x\d+"),
    (lambda m: Image.open(m).convert("RGB").save(m),
     "mask must be a single-channel PNG, got mode RGB"),
    (lambda m: Image.fromarray(np.asarray(Image.open(m)) + 20).save(m),
     r"label \d+ out of range 0..19"),
    (lambda m: m.write_bytes(b"\x89PNG broken"), "unreadable mask"),
    (lambda m: m.unlink(), "missing mask"),
])
def test_bad_masks_are_named(copy, damage, message):
    _, _, mask = _first(copy)
    damage(mask)
    with pytest.raises(DataError, match=re.escape(str(mask)) + ": " + message):
        lip.read_lip(copy, problems=checking())


def test_load_mask_checks_when_reading_without_checks(copy):
    _, _, mask = _first(copy)
    Image.open(mask).convert("RGB").save(mask)
    sample = lip.read_lip(copy)[0]  # existence only
    with pytest.raises(DataError, match=re.escape(str(mask)) + ": mask must be a single-channel"):
        lip.load_mask(sample.mask_path)


def test_bad_id_lines_are_named(copy):
    path = copy / "TrainVal_images" / "val_id.txt"
    ids = path.read_text().split()
    path.write_text("\n".join([ids[0], ids[1], ids[0]]) + "\n")
    with pytest.raises(DataError, match=re.escape(f"{path}:3") + f": id '{ids[0]}' repeats line 1"):
        lip.read_lip(copy)
    path.write_text(f"{ids[0]} extra\n")
    message = re.escape(f"{path}:1") + ": expected one image id per line"
    with pytest.raises(DataError, match=message):
        lip.read_lip(copy)
    path.write_text("\n")
    with pytest.raises(DataError, match=re.escape(str(path)) + ": lists no ids"):
        lip.read_lip(copy)


def test_missing_folders_and_split(copy, tmp_path):
    with pytest.raises(DataError, match="unknown LIP split 'test'"):
        lip.read_lip(copy, "test")
    shutil.rmtree(copy / "TrainVal_parsing_annotations")
    with pytest.raises(DataError, match=re.escape(str(copy / "TrainVal_parsing_annotations"
                                                        / "val_segmentations")) + ": missing"):
        lip.read_lip(copy)
    with pytest.raises(DataError, match="missing dataset root"):
        lip.read_lip(tmp_path / "nowhere")


def test_collect_mode_reports_every_problem(copy):
    ids = (copy / "TrainVal_images" / "val_id.txt").read_text().split()
    images = copy / "TrainVal_images" / "val_images"
    masks = copy / "TrainVal_parsing_annotations" / "val_segmentations"
    img = lambda i: images / f"{ids[i]}.jpg"  # noqa: E731
    msk = lambda i: masks / f"{ids[i]}.png"  # noqa: E731
    img(0).write_bytes(img(0).read_bytes()[:100])
    Image.new("L", (5, 5)).save(msk(1))
    msk(2).unlink()
    img(3).unlink()
    probs = Problems(strict=False, check_images=True)
    samples = lip.read_lip(copy, problems=probs)
    reasons = [str(p) for p in probs.items]
    assert len(reasons) == 4, reasons
    assert reasons[0].startswith(f"{img(0)}: unreadable image")
    assert reasons[1].startswith(f"{msk(1)}: mask is 5x5")
    assert reasons[2].startswith(f"{msk(2)}: missing mask")
    assert reasons[3].startswith(f"{img(3)}: missing image")
    assert [s.id for s in samples] == ids[4:]
