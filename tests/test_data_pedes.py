"""CUHK-PEDES (text-based person search, issue 6): the reader on the real on-disk format,
its errors, and the synthetic writer."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from bench.data import read_dataset
from bench.data.base import DataError, Problems
from bench.data.pedes import PID_BASE, read_cuhk_pedes, write_synthetic
from bench.data.synth.world import SynthWorld


def _img(path, size=(48, 96), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 128, np.uint8)).save(path, format=fmt)


def real_root(tmp_path):
    """A small CUHK-PEDES as it ships: reid_raw.json + imgs/ from its source datasets."""
    root = tmp_path / "CUHK-PEDES"
    rows = [
        {"split": "train", "captions": ["A woman in a white shirt.", "The lady wears white."],
         "file_path": "CUHK01/0363004.png", "processed_tokens": [["a", "woman"], ["the"]], "id": 1},
        {"split": "train", "captions": ["A woman in a white shirt and black pants."],
         "file_path": "CUHK03/1344_1.jpg", "processed_tokens": [["a"]], "id": 1},
        {"split": "val", "captions": ["A man with a backpack."],
         "file_path": "Market/1500_c6s3_086567_01.jpg", "processed_tokens": [["a"]], "id": 12},
        {"split": "test", "captions": ["A man in a red jacket.", "This man wears red."],
         "file_path": "test_query/p5846_s7727.jpg", "processed_tokens": [["a"], ["t"]], "id": 12004},
        {"split": "test", "captions": ["A girl in a skirt."],
         "file_path": "test_query/p5847_s7728.jpg", "processed_tokens": [["a"]], "id": 12005},
    ]
    for r in rows:
        _img(root / "imgs" / r["file_path"], fmt="PNG" if r["file_path"].endswith(".png") else "JPEG")
    (root / "reid_raw.json").write_text(json.dumps(rows))
    return root, rows


def test_reads_the_real_layout(tmp_path):
    root, rows = real_root(tmp_path)
    ds = read_cuhk_pedes(root)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (2, 1, 2)
    assert ds.train[0].path == str(root / "imgs" / "CUHK01" / "0363004.png")
    assert ds.train[0].captions == ("A woman in a white shirt.", "The lady wears white.")
    assert [im.pid for im in ds.test] == [12004, 12005]
    assert len(ds.images) == 5 and ds.split("val") == ds.val
    assert read_dataset("cuhk_pedes", root) == ds  # registered in the catalogue


def test_malformed_json_is_one_clear_line(tmp_path):
    root, _ = real_root(tmp_path)
    (root / "reid_raw.json").write_text('[{"split": "train", "id": 1,')
    with pytest.raises(DataError) as e:
        read_cuhk_pedes(root)
    msg = str(e.value)
    assert msg.startswith(str(root / "reid_raw.json")) and "malformed json" in msg
    assert "\n" not in msg


def test_structural_errors_name_the_file(tmp_path):
    root, rows = real_root(tmp_path)
    (root / "reid_raw.json").write_text(json.dumps({"images": rows}))
    with pytest.raises(DataError, match=r"reid_raw\.json: expected a list of objects"):
        read_cuhk_pedes(root)
    (root / "reid_raw.json").unlink()
    with pytest.raises(DataError, match=r"reid_raw\.json: missing reid_raw\.json"):
        read_cuhk_pedes(root)
    with pytest.raises(DataError, match="missing dataset root"):
        read_cuhk_pedes(tmp_path / "nowhere")


def test_check_collects_every_bad_item(tmp_path):
    root, rows = real_root(tmp_path)
    rows[0]["split"] = "trainval"
    rows[1]["id"] = True
    rows[2]["captions"] = []
    del rows[3]["file_path"]
    rows[4]["file_path"] = "test_query/missing.jpg"
    (root / "reid_raw.json").write_text(json.dumps(rows))
    probs = Problems(strict=False, check_images=True)
    ds = read_cuhk_pedes(root, probs)
    reasons = [p.reason for p in probs.items]
    assert any("split must be train, val or test, got 'trainval'" in r for r in reasons)
    assert any("id must be a non-negative integer, got True" in r for r in reasons)
    assert any("captions must be a non-empty list" in r for r in reasons)
    assert any("expected an object with file_path" in r for r in reasons)
    assert any(p.path.endswith("missing.jpg") and "missing image" in p.reason for p in probs.items)
    assert "no train items" in reasons and "no test items" in reasons
    assert ds.train == () and ds.test == ()


def test_synthetic_writer_round_trip(tmp_path):
    world = SynthWorld(seed=0, size="smoke")
    counts = write_synthetic(world, tmp_path / "a")
    ds = read_cuhk_pedes(tmp_path / "a" / "CUHK-PEDES", Problems(strict=False, check_images=True))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (counts["train"], counts["val"], counts["test"])
    ids = {s: {im.pid for im in ds.split(s)} for s in ("train", "val", "test")}
    assert len(ids["test"]) == counts["test_ids"] == 32
    assert not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    per_id = np.bincount([im.pid for im in ds.test])
    assert per_id[per_id > 0].min() >= 2  # every query caption has a positive beyond itself
    im = ds.test[0]
    assert im.captions == (world.identity(PID_BASE + im.pid).caption(),)
    write_synthetic(SynthWorld(seed=0, size="smoke"), tmp_path / "b")
    assert (tmp_path / "a" / "CUHK-PEDES" / "reid_raw.json").read_bytes() == \
        (tmp_path / "b" / "CUHK-PEDES" / "reid_raw.json").read_bytes()
