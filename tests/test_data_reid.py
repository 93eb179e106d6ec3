"""Market-1501 and MSMT17: synthetic round trip, torchreid's readers, determinism, bad input."""
import hashlib
import os
import shutil

import pytest

from bench.data import reid
from bench.data.base import DataError, Problems
from bench.data.synth.world import SynthWorld


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("reid")
    world = SynthWorld(seed=0, size="smoke")
    counts = {"market1501": reid.write_market1501(world, root),
              "msmt17": reid.write_msmt17(world, root)}
    return root, counts


def copy(written, tmp_path, folder):
    dst = tmp_path / folder
    shutil.copytree(written[0] / folder, dst)
    return dst


def test_market_round_trip(written):
    root, counts = written
    c = counts["market1501"]
    ds = reid.read_market1501(root / "Market-1501-v15.09.15")
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (c["train"], c["query"], c["gallery"])
    assert ds.num_train_pids == c["train_ids"] and ds.num_cams == 6
    assert sum(im.pid == reid.JUNK for im in ds.gallery) == c["junk"]
    assert sum(im.pid == reid.DISTRACTOR for im in ds.gallery) == c["distractors"]
    assert {im.pid for im in ds.train}.isdisjoint({im.pid for im in ds.query})
    # every query has a gallery image of its identity from another camera
    gal = {(im.pid, im.camid) for im in ds.gallery}
    for q in ds.query:
        assert any(p == q.pid and cam != q.camid for p, cam in gal)


def test_msmt_round_trip(written):
    root, counts = written
    c = counts["msmt17"]
    ds = reid.read_msmt17(root / "MSMT17_V1")
    assert (len(ds.train), len(ds.val), len(ds.query), len(ds.gallery)) == (
        c["train"], c["val"], c["query"], c["gallery"])
    assert len({im.pid for im in ds.train + ds.val}) == c["train_ids"]
    assert len({im.pid for im in ds.query}) == c["test_ids"]
    assert all(0 <= im.camid < 15 for im in ds.train + ds.query + ds.gallery)


def test_torchreid_reads_the_same(written, tmp_path):
    pytest.importorskip("torchreid")
    from torchreid.reid.data.datasets.image.market1501 import Market1501
    from torchreid.reid.data.datasets.image.msmt17 import MSMT17

    root, counts = written
    (tmp_path / "market1501").mkdir()
    os.symlink(root / "Market-1501-v15.09.15", tmp_path / "market1501" / "Market-1501-v15.09.15")
    (tmp_path / "msmt17").mkdir()
    os.symlink(root / "MSMT17_V1", tmp_path / "msmt17" / "MSMT17_V1")
    m = Market1501(root=str(tmp_path), verbose=False)
    c = counts["market1501"]
    ours = reid.read_market1501(root / "Market-1501-v15.09.15")
    assert len(m.train) == c["train"] and len(m.query) == c["query"]
    assert len(m.gallery) == c["gallery"] - c["junk"]  # torchreid drops junk while reading
    assert m.num_train_pids == ours.num_train_pids
    assert sorted((p, cam) for _, p, cam, *_ in m.query) == sorted((q.pid, q.camid) for q in ours.query)
    s = MSMT17(root=str(tmp_path), verbose=False)
    c = counts["msmt17"]
    assert (len(s.train), len(s.query), len(s.gallery)) == (c["train"], c["query"], c["gallery"])
    ours = reid.read_msmt17(root / "MSMT17_V1")
    assert sorted((p, cam) for _, p, cam, *_ in s.gallery) == sorted((g.pid, g.camid) for g in ours.gallery)


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_determinism(written, tmp_path):
    root, _ = written
    reid.write_msmt17(SynthWorld(seed=0, size="smoke"), tmp_path / "a")
    assert _digest(tmp_path / "a" / "MSMT17_V1") == _digest(root / "MSMT17_V1")
    reid.write_msmt17(SynthWorld(seed=1, size="smoke"), tmp_path / "b")
    assert (tmp_path / "a" / "MSMT17_V1" / "list_train.txt").read_bytes() != \
        (tmp_path / "b" / "MSMT17_V1" / "list_train.txt").read_bytes()


def test_market_bad_inputs(written, tmp_path):
    d = copy(written, tmp_path, "Market-1501-v15.09.15")
    img = sorted((d / "query").iterdir())[0]
    img.write_bytes(img.read_bytes()[:200])  # truncated JPEG
    (d / "bounding_box_train" / "0001_c9s1_000001_00.jpg").write_bytes(b"")
    (d / "bounding_box_test" / "garbage.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"0001_c9s1_000001_00.jpg: camera c9 out of range"):
        reid.read_market1501(d)
    probs = Problems(strict=False, check_images=True)
    reid.read_market1501(d, probs)
    reasons = {os.path.basename(p.path): p.reason for p in probs.items}
    assert reasons["garbage.jpg"].startswith("file name does not match")
    assert reasons[img.name].startswith("unreadable image")
    assert "camera c9" in reasons["0001_c9s1_000001_00.jpg"]
    (d / "bounding_box_train" / "0001_c9s1_000001_00.jpg").unlink()
    shutil.rmtree(d / "query")
    with pytest.raises(DataError, match=r"query: missing query/ folder"):
        reid.read_market1501(d)


def test_msmt_bad_inputs(written, tmp_path):
    d = copy(written, tmp_path, "MSMT17_V1")
    lines = (d / "list_gallery.txt").read_text().splitlines()
    (d / "list_gallery.txt").write_text("\n".join(lines[:-1] + ["not-a-line"]) + "\n")
    with pytest.raises(DataError, match=r"list_gallery.txt:\d+: expected '<folder>/<file>.jpg <pid>'"):
        reid.read_msmt17(d)
    os.unlink(d / lines[0].split()[0].join(["test/", ""]))
    probs = Problems(strict=False, check_images=False)
    reid.read_msmt17(d, probs)
    assert len(probs.items) == 2
    assert any("missing image (listed in list_gallery.txt line 1)" in str(p) for p in probs.items)
    (d / "list_query.txt").unlink()
    with pytest.raises(DataError, match=r"list_query.txt: missing list file"):
        reid.read_msmt17(d)
