"""Person search data: CUHK-SYSU and PRW readers, and the synthetic world that writes them.

The smoke world is written once per module; tests that damage files work on copies.  The
"SeqNet view" tests read the files with scipy.io alone, indexing them the way SeqNet's
``datasets/cuhk_sysu.py``, ``datasets/prw.py`` and ``eval_func.py`` do, so the synthetic
files keep the real nesting and the readers agree with SeqNet.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from bench.data.base import DataError, Problems
from bench.data.search import (MAT_HEADER, UNLABELED, _write_prw, read_cuhk_sysu, read_prw,
                               save_mat, write_synthetic)
from bench.data.synth.world import SynthWorld

TEST_DIR = "annotation/test/train_test"


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    t0 = time.perf_counter()
    counts = write_synthetic(SynthWorld(seed=0, size="smoke"), root)
    seconds = time.perf_counter() - t0
    return root, counts, seconds


@pytest.fixture
def cuhk(world_dir, tmp_path):
    dst = tmp_path / "CUHK-SYSU"
    shutil.copytree(world_dir[0] / "CUHK-SYSU", dst)
    return dst


@pytest.fixture
def prw(world_dir, tmp_path):
    dst = tmp_path / "PRW"
    shutil.copytree(world_dir[0] / "PRW", dst)
    return dst


def _sub(counts: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in counts.items() if k.startswith(prefix)}


# --------------------------------------------------------------------------------------
# Round trip
# --------------------------------------------------------------------------------------
def test_smoke_is_fast(world_dir):
    assert world_dir[2] < 10.0, f"smoke search world took {world_dir[2]:.1f}s"


def test_cuhk_round_trip(world_dir):
    root, counts, _ = world_dir
    ds = read_cuhk_sysu(root / "CUHK-SYSU", Problems(strict=True, check_images=True))
    c = _sub(counts, "cuhk_sysu_")
    assert ds.counts() == {k: c[k] for k in ds.counts()}
    assert len(ds.train) + len(ds.gallery) == c["images"]
    assert ds.gallery_size == c["max_gallery_size"] == 20  # largest TestG written for smoke
    assert len(ds.query_gallery) == len(ds.queries) == c["queries"]
    for im in ds.train + ds.gallery:
        assert im.boxes.dtype == np.float32 and im.boxes.shape == (len(im.pids), 4)
        assert im.pids.dtype == np.int64 and im.cam is None
        assert (im.boxes[:, 2:] > im.boxes[:, :2]).all()
    # train ids 1..N in Train.mat order, every one seen at least twice
    train_pids = np.concatenate([im.pids for im in ds.train])
    labelled = train_pids[train_pids != UNLABELED]
    assert sorted(set(labelled.tolist())) == list(range(1, c["train_ids"] + 1))
    assert np.bincount(labelled)[1:].min() >= 2
    assert (train_pids == UNLABELED).any()  # passers-by


def test_cuhk_smaller_protocol(world_dir):
    ds = read_cuhk_sysu(world_dir[0] / "CUHK-SYSU", gallery_size=10)
    assert ds.gallery_size == 10 and all(len(g) == 10 for g in ds.query_gallery)
    with pytest.raises(DataError, match="TestG100.mat: missing .mat file"):
        read_cuhk_sysu(world_dir[0] / "CUHK-SYSU", gallery_size=100)


def test_cuhk_queries_in_their_galleries(world_dir):
    ds = read_cuhk_sysu(world_dir[0] / "CUHK-SYSU")
    assert [q.pid for q in ds.queries] == list(range(1, len(ds.queries) + 1))
    names = [im.name for im in ds.gallery]
    for q, gal in zip(ds.queries, ds.query_gallery):
        assert q.name in names and q.name not in [names[i] for i in gal]
        qimg = ds.gallery[names.index(q.name)]
        assert any((b == q.box).all() and p == q.pid for b, p in zip(qimg.boxes, qimg.pids))
        assert len(set(gal)) == ds.gallery_size
        assert any(q.pid in ds.gallery[i].pids for i in gal)
        # every image holding the person is in the query's gallery (positives come first)
        holders = {i for i, im in enumerate(ds.gallery) if q.pid in im.pids and im.name != q.name}
        assert holders <= set(gal)


def test_prw_round_trip(world_dir):
    root, counts, _ = world_dir
    ds = read_prw(root / "PRW", Problems(strict=True, check_images=True))
    c = _sub(counts, "prw_")
    assert ds.counts() == {k: c[k] for k in ds.counts()}
    assert ds.query_gallery is None and ds.gallery_size is None
    assert {im.cam for im in ds.train + ds.gallery} == set(range(1, c["cameras"] + 1))
    train_ids = {int(p) for im in ds.train for p in im.pids} - {UNLABELED}
    test_ids = {int(p) for im in ds.gallery for p in im.pids} - {UNLABELED}
    assert train_ids and test_ids and not train_ids & test_ids
    assert {q.pid for q in ds.queries} == test_ids


def test_prw_queries_have_cross_camera_positives(world_dir):
    ds = read_prw(world_dir[0] / "PRW")
    for q in ds.queries:
        assert q.cam == int(q.name[1])
        qimg = next(im for im in ds.gallery if im.name == q.name)
        assert any((b == q.box).all() and p == q.pid for b, p in zip(qimg.boxes, qimg.pids))
        assert any(q.pid in im.pids for im in ds.gallery if im.cam != q.cam)


# --------------------------------------------------------------------------------------
# The files as SeqNet indexes them (scipy.io only)
# --------------------------------------------------------------------------------------
def test_cuhk_files_in_seqnet_nesting(world_dir):
    root = world_dir[0] / "CUHK-SYSU"
    ds = read_cuhk_sysu(root)
    all_imgs = scipy.io.loadmat(str(root / "annotation/Images.mat"))["Img"].squeeze()
    name_to_boxes = {}
    for img_name, _, boxes in all_imgs:
        b = np.asarray([b[0] for b in boxes[0]])
        name_to_boxes[str(img_name[0])] = b.reshape(b.shape[0], 4).astype(np.int32)
    assert [str(a[0][0]) for a in all_imgs] == list(name_to_boxes)
    pool = scipy.io.loadmat(str(root / "annotation/pool.mat"))["pool"].squeeze()
    pool = [str(a[0]) for a in pool]
    assert pool == [im.name for im in ds.gallery]
    assert sorted(set(name_to_boxes) - set(pool)) == [im.name for im in ds.train]
    for im in ds.train + ds.gallery:  # (x1, y1, w, h) -> (x1, y1, x2, y2)
        xywh = name_to_boxes[im.name].copy()
        xywh[:, 2:] += xywh[:, :2]
        np.testing.assert_array_equal(xywh, im.boxes)
    train = scipy.io.loadmat(str(root / TEST_DIR / "Train.mat"))["Train"].squeeze()
    train_names = set()
    by_name = {im.name: im for im in ds.train}
    for index, item in enumerate(train):
        train_names.add(str(item[0, 0][0][0]))
        scenes = item[0, 0][2].squeeze()
        assert scenes.size >= 2
        for img_name, box, _ in scenes:
            box = box.squeeze().astype(np.int32)
            im = by_name[str(img_name[0])]
            hit = np.nonzero((name_to_boxes[im.name] == box).all(1))[0][0]
            assert im.pids[hit] == index + 1
    for n in (10, 20):
        protoc = scipy.io.loadmat(str(root / TEST_DIR / f"TestG{n}.mat"))[f"TestG{n}"].squeeze()
        test_names = set()
        for i, q in enumerate(ds.queries):
            query_imname = str(protoc["Query"][i]["imname"][0, 0][0])
            query_roi = protoc["Query"][i]["idlocate"][0, 0][0].astype(np.int32)
            query_roi[2:] += query_roi[:2]
            assert query_imname == q.name and (query_roi == q.box).all()
            test_names.add(str(protoc[i]["Query"][0, 0][3][0]))
            gallery = protoc["Gallery"][i].squeeze()
            assert len(gallery) == n
            positives = 0
            for item in gallery:
                gt = item[1][0].astype(np.int32)
                positives += gt.size > 0
            assert positives >= 1
            assert str(gallery[0][0][0]) != query_imname
            for im_name, box, _ in protoc[i]["Gallery"].squeeze():  # SeqNet's labelling loop
                if box.size == 0:
                    break
                assert str(im_name[0]) in pool
        assert not train_names & test_names  # test identities are not training identities
    person = scipy.io.loadmat(str(root / "annotation/Person.mat"))["Person"].squeeze()
    assert len(person) == len(train_names) + len(ds.queries)


def test_prw_files_in_seqnet_nesting(world_dir):
    root = world_dir[0] / "PRW"
    ds = read_prw(root)
    for split, records in (("train", ds.train), ("test", ds.gallery)):
        imgs = scipy.io.loadmat(str(root / f"frame_{split}.mat"))[f"img_index_{split}"]
        names = [img[0][0] + ".jpg" for img in imgs]
        assert names == [im.name for im in records]
        for name, im in zip(names, records):
            anno = scipy.io.loadmat(str(root / "annotations" / name))
            rois, ids = anno["box_new"][:, 1:], anno["box_new"][:, 0]
            rois = np.clip(rois, 0, None)
            rois[:, 2:] += rois[:, :2]
            ids[ids == -2] = 5555
            np.testing.assert_array_equal(rois.astype(np.int32), im.boxes)
            np.testing.assert_array_equal(ids.astype(np.int32), im.pids)
    raw = (root / "query_info.txt").read_bytes()
    assert raw.endswith(b"\r\n")
    with open(root / "query_info.txt", "rb") as f:
        lines = f.readlines()
    assert len(lines) == len(ds.queries)
    for line, q in zip(lines, ds.queries):
        fields = str(line, "utf-8").split(" ")
        x, y, w, h = (float(v) for v in fields[1:5])
        assert int(fields[0]) == q.pid and fields[5][:-2] + ".jpg" == q.name
        assert (np.array([x, y, x + w, y + h]).astype(np.int32) == q.box).all()


# --------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------
def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(world_dir, tmp_path):
    again = tmp_path / "again"
    write_synthetic(SynthWorld(seed=0, size="smoke"), again)
    first = _files(world_dir[0])
    assert first == _files(again)  # annotation files and images, byte for byte
    for name, data in first.items():
        if name.endswith(".mat"):
            assert data[:116] == MAT_HEADER.ljust(116, b" "), name  # no creation time
    # another seed, another world (PRW only, to keep the test quick: both writers draw
    # every random number from the same world.rng)
    other = tmp_path / "other" / "PRW"
    _write_prw(SynthWorld(seed=1, size="smoke"), other)
    second = _files(other)
    for name in ("query_info.txt", "frame_test.mat", "frame_train.mat"):
        assert first["PRW/" + name] != second[name], name


def test_save_mat_header_is_fixed(tmp_path, monkeypatch):
    import time as _time

    save_mat(tmp_path / "a.mat", {"x": np.eye(2)})
    monkeypatch.setattr(_time, "asctime", lambda *a: "Thu Jan  1 00:00:00 1970")
    save_mat(tmp_path / "b.mat", {"x": np.eye(2)})
    assert (tmp_path / "a.mat").read_bytes() == (tmp_path / "b.mat").read_bytes()
    assert (scipy.io.loadmat(str(tmp_path / "a.mat"))["x"] == np.eye(2)).all()


# --------------------------------------------------------------------------------------
# Damaged inputs: each raises a DataError naming the file
# --------------------------------------------------------------------------------------
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_truncated_image(cuhk, prw):
    img = sorted((cuhk / "Image" / "SSM").iterdir())[0]
    _truncate(img)
    read_cuhk_sysu(cuhk)  # without decoding, a truncated image still has its header
    with pytest.raises(DataError, match=f"{img.name}: unreadable image"):
        read_cuhk_sysu(cuhk, Problems(strict=True, check_images=True))
    frame = sorted((prw / "frames").iterdir())[-1]
    _truncate(frame)
    with pytest.raises(DataError, match=f"{frame.name}: unreadable image"):
        read_prw(prw, Problems(strict=True, check_images=True))


def test_missing_files(cuhk, prw):
    (cuhk / "annotation" / "pool.mat").unlink()
    with pytest.raises(DataError, match=r"pool\.mat: missing \.mat file"):
        read_cuhk_sysu(cuhk)
    (prw / "query_info.txt").unlink()
    with pytest.raises(DataError, match=r"query_info\.txt: missing query list"):
        read_prw(prw)
    shutil.rmtree(prw / "frames")
    with pytest.raises(DataError, match=r"frames: missing frames/ folder"):
        read_prw(prw)


def test_missing_image(cuhk):
    img = sorted((cuhk / "Image" / "SSM").iterdir())[3]
    img.unlink()
    with pytest.raises(DataError, match=f"{img.name}: missing image"):
        read_cuhk_sysu(cuhk)


def _rename_field(arr: np.ndarray, old: str, new: str) -> np.ndarray:
    names = [new if n == old else n for n in arr.dtype.names]
    out = np.zeros(arr.shape, dtype=[(n, object) for n in names])
    for o, n in zip(arr.dtype.names, names):
        out[n] = arr[o]
    return out


def test_wrong_field_names(cuhk, prw):
    path = cuhk / "annotation" / "Images.mat"
    img = scipy.io.loadmat(str(path))["Img"]
    save_mat(path, {"Img": _rename_field(img, "imname", "name")})
    with pytest.raises(DataError, match=r"Images\.mat: Img has no field 'imname'"):
        read_cuhk_sysu(cuhk)
    save_mat(path, {"Images": img})
    with pytest.raises(DataError, match=r"Images\.mat: missing variable 'Img'"):
        read_cuhk_sysu(cuhk)
    save_mat(path, {"Img": img})
    read_cuhk_sysu(cuhk)  # restored
    test = cuhk / TEST_DIR / "TestG20.mat"
    protoc = scipy.io.loadmat(str(test))["TestG20"]
    save_mat(test, {"TestG20": _rename_field(protoc, "Gallery", "gallery")})
    with pytest.raises(DataError, match=r"TestG20\.mat: TestG20 has no field 'Gallery'"):
        read_cuhk_sysu(cuhk)
    anno = sorted((prw / "annotations").iterdir())[0]
    save_mat(anno, {"boxes": scipy.io.loadmat(str(anno))["box_new"]})
    with pytest.raises(DataError, match=f"{anno.name}: missing variable 'box_new'"):
        read_prw(prw)


def test_malformed_nesting(cuhk):
    path = cuhk / TEST_DIR / "Train.mat"
    save_mat(path, {"Train": np.arange(6.0)})  # numbers where structs belong
    with pytest.raises(DataError, match=r"Train\.mat: Train\{1\} has no field 'idname'"):
        read_cuhk_sysu(cuhk)


def test_box_outside_image(cuhk, prw):
    anno = sorted((prw / "annotations").iterdir())[0]
    boxes = scipy.io.loadmat(str(anno))["box_new"]
    boxes[0, 1] = 1000.0  # x beyond the 360-pixel-wide frame
    save_mat(anno, {"box_new": boxes})
    with pytest.raises(DataError, match=f"{anno.name}: box .* lies outside the 360x240 image"):
        read_prw(prw)
    # CUHK-SYSU: widen an unlabeled box of a training image in Images.mat
    ds = read_cuhk_sysu(cuhk)
    im = next(im for im in ds.train if (im.pids == UNLABELED).any())
    k = int(np.nonzero(im.pids == UNLABELED)[0][0])
    path = cuhk / "annotation" / "Images.mat"
    img = scipy.io.loadmat(str(path))["Img"]
    j = [str(n[0]) for n in img["imname"][0]].index(im.name)
    img["box"][0, j]["idlocate"][0, k][0, 2] = 5000.0
    save_mat(path, {"Img": img})
    with pytest.raises(DataError, match=rf"Images\.mat \({im.name}\): box .* lies outside"):
        read_cuhk_sysu(cuhk)


def test_zero_size_boxes_dropped_as_seqnet_does(cuhk):
    ds = read_cuhk_sysu(cuhk)
    im = ds.train[0]
    path = cuhk / "annotation" / "Images.mat"
    img = scipy.io.loadmat(str(path))["Img"]
    j = [str(n[0]) for n in img["imname"][0]].index(im.name)
    boxes = img["box"][0, j]
    extra = np.zeros((1, boxes.shape[1] + 1), dtype=boxes.dtype)
    extra[0, :-1] = boxes[0]
    extra[0, -1] = (np.array([[5.0, 5.0, 0.0, 30.0]]), np.array([[0.0]]))
    img["box"][0, j] = extra
    save_mat(path, {"Img": img})
    again = read_cuhk_sysu(cuhk)
    np.testing.assert_array_equal(again.train[0].boxes, im.boxes)


def test_protocol_box_not_in_images(cuhk):
    test = cuhk / TEST_DIR / "TestG20.mat"
    protoc = scipy.io.loadmat(str(test))["TestG20"]
    protoc["Query"][0, 2]["idlocate"][0, 0][0, 0] += 3  # query 3's box moved by 3 pixels
    save_mat(test, {"TestG20": protoc})
    with pytest.raises(DataError, match=r"TestG20\.mat: query 3: box .* is not a box of"):
        read_cuhk_sysu(cuhk)


def test_query_info_problems(prw):
    qpath = prw / "query_info.txt"
    lines = qpath.read_bytes().split(b"\r\n")
    bad = lines[:2] + [b"12 10.0 oops 30 80 c1s1_000125"] + lines[2:]
    qpath.write_bytes(b"\r\n".join(bad))
    with pytest.raises(DataError, match=r"query_info\.txt:3: expected 'pid x y w h frame_name'"):
        read_prw(prw)
    moved = lines[:1] + [b"1 10 10 30 80 " + _a_train_frame(prw).encode()] + lines[1:]
    qpath.write_bytes(b"\r\n".join(moved))
    with pytest.raises(DataError, match=r"query_info\.txt:2: query frame .* is not in "
                                        r"frame_test\.mat"):
        read_prw(prw)


def _a_train_frame(prw: Path) -> str:
    imgs = scipy.io.loadmat(str(prw / "frame_train.mat"))["img_index_train"]
    return str(imgs[0][0][0])


def test_collect_mode_reports_everything(cuhk, prw):
    imgs = sorted((cuhk / "Image" / "SSM").iterdir())
    imgs[0].unlink()
    _truncate(imgs[1])
    (cuhk / "annotation" / "Person.mat").write_bytes(b"not a mat file")
    probs = Problems(strict=False, check_images=True)
    with pytest.raises(DataError, match=r"Person\.mat: unreadable \.mat file"):
        read_cuhk_sysu(cuhk, probs)  # a broken .mat stops the reader, after the others
    (cuhk / "annotation" / "Person.mat").unlink()
    probs = Problems(strict=False, check_images=True)
    ds = read_cuhk_sysu(cuhk, probs)
    reasons = {Path(p.path).name: p.reason for p in probs.items}
    assert reasons[imgs[0].name].startswith("missing image")
    assert reasons[imgs[1].name].startswith("unreadable image")
    assert len(probs.items) >= 2
    assert imgs[0].name not in {im.name for im in ds.train + ds.gallery}

    frames = sorted((prw / "frames").iterdir())
    frames[0].unlink()
    (prw / "annotations" / (frames[1].name + ".mat")).unlink()
    qpath = prw / "query_info.txt"
    qpath.write_bytes(qpath.read_bytes() + b"7 1 2 3\r\n")
    anno = prw / "annotations" / (frames[2].name + ".mat")
    boxes = scipy.io.loadmat(str(anno))["box_new"]
    boxes[0, 2] = 900.0
    save_mat(anno, {"box_new": boxes})
    probs = Problems(strict=False, check_images=False)
    ds = read_prw(prw, probs)
    text = "\n".join(str(p) for p in probs.items)
    assert len(probs.items) >= 4, text
    assert f"{frames[0].name}: missing image" in text
    assert f"{frames[1].name}.mat: missing annotation file" in text
    assert f"{anno.name}: box" in text and "outside" in text
    assert "query_info.txt:" in text and "expected 'pid x y w h frame_name'" in text
    assert ds.queries  # the good ones are still read
