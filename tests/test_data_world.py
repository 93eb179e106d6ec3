"""The synthetic world: cached, atomic, deterministic; and the `bench data` commands."""
import hashlib
import json

import pytest

from bench.data.synth import world
from bench.data.synth.people import PA100K_ATTRIBUTES, make_identity
from bench.data.synth.render import LIP_CLASSES
from bench.errors import BenchError


def annotation_digest(folder):
    """Hash of every non-image file (annotations, lists, manifests minus timings)."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix.lower() not in (".jpg", ".jpeg", ".png") and p.name != "world.json":
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_make_is_cached_and_checks_identity(tmp_path, monkeypatch):
    m = world.make(tmp_path / "w", "smoke", 0, formats=["market1501"])
    assert m["formats"]["market1501"]["counts"]["train_ids"] == 24
    assert not list((tmp_path / "w").glob(".tmp-*"))
    calls = []
    monkeypatch.setattr(world, "_load", lambda ref: calls.append(ref))
    assert world.make(tmp_path / "w", "smoke", 0, formats=["market1501"]) == m
    assert calls == []
    with pytest.raises(BenchError, match="holds another world"):
        world.make(tmp_path / "w", "smoke", 1, formats=["market1501"])
    with pytest.raises(BenchError, match="unknown synthetic format"):
        world.make(tmp_path / "w", "smoke", 0, formats=["nope"])


def test_same_seed_same_annotations(tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 3)):
        world.make(tmp_path / name, "smoke", seed, formats=["msmt17", "pools"])
    assert annotation_digest(tmp_path / "a") == annotation_digest(tmp_path / "b")
    assert annotation_digest(tmp_path / "a") != annotation_digest(tmp_path / "c")


def test_identities_are_persistent_and_varied():
    assert make_identity(0, 5) == make_identity(0, 5)
    people = [make_identity(0, p) for p in range(300)]
    attrs = [p.attribute_vector("front") for p in people]
    rates = sum(attrs) / len(attrs)
    body = [i for i, n in enumerate(PA100K_ATTRIBUTES) if n not in ("Front", "Side", "Back")]
    assert all(0.02 < rates[i] < 0.98 for i in body)  # every attribute occurs, none always
    assert len({p.caption() for p in people}) > 250


def test_crops_have_parts_in_body_order():
    w = world.SynthWorld(0, "smoke")
    crop = w.crop(1, 0, 128, 64, "t", view="front")
    rows = {}
    for name in ("Face", "UpperClothes", "Coat", "Dress", "Pants", "Left-shoe", "Right-shoe"):
        ys = (crop.labels == LIP_CLASSES.index(name)).nonzero()[0]
        if len(ys):
            rows[name] = ys.mean()
    assert rows["Face"] < min(v for k, v in rows.items() if k != "Face")
    assert max(rows.get("Left-shoe", 0), rows.get("Right-shoe", 0)) > rows["Face"] + 60
    kp = crop.keypoints
    assert kp[0, 1] < kp[5, 1] < kp[11, 1] < kp[13, 1] < kp[15, 1]  # nose, shoulder, hip, knee, ankle
    assert (kp[:, 2] == 2).sum() >= 13


def test_polygons_are_filled():
    """Convex polygons (torso, skirts, backpacks) fill their inside, whichever order their
    corners come in (generator 2 wound them the wrong way and drew no torso at all)."""
    import numpy as np
    from bench.data.synth.render import Prim, _hull, rasterise

    corners = np.array([[2, 2], [12, 2], [12, 8], [2, 8]], float)
    for order in (corners, corners[::-1], corners[[0, 2, 1, 3]]):
        sl, inside = rasterise(Prim(0, 0, "upper", "poly", (_hull(order),)), (10, 16))
        assert inside.sum() == pytest.approx(10 * 6, abs=12)
    w = world.SynthWorld(0, "smoke")
    tops = [LIP_CLASSES.index(n) for n in ("UpperClothes", "Coat", "Dress", "Face", "Scarf")]
    for pid in [p for p in range(30) if not w.identity(p).holds_object][:20]:
        crop = w.crop(pid, 0, 256, 128, "torso", view="front")
        kp = crop.keypoints
        y0, y1 = kp[5:7, 1].mean(), kp[11:13, 1].mean()
        x0, x1 = sorted(kp[5:7, 0])
        torso = crop.labels[int(y0 + 0.2 * (y1 - y0)):int(y1), int(x0):int(x1)]
        assert np.isin(torso, tops).mean() > 0.7, pid  # the top covers the torso


def test_scene_occlusion_bookkeeping():
    w = world.SynthWorld(0, "smoke")
    sc = w.scene(range(8), 1, 240, 320, "t")
    assert len(sc.instances) == 8
    for i, ins in enumerate(sc.instances):
        assert 0 <= ins.visibility <= 1
        assert ins.area == int((sc.instances_map == i + 1).sum())
        if ins.area:
            x, y, bw, bh = ins.vis_box
            fx, fy, fw, fh = ins.box
            assert fx <= x + 1e-6 and fy <= y + 1e-6 and x + bw <= fx + fw + 1e-6


def test_cli_make_and_check(tmp_path, bench_cli):
    out = tmp_path / "w"
    code, text, err = bench_cli("data", "make", "--only", "market1501", "--out", str(out))
    assert code == 0, err
    assert "market1501" in text
    root = out / "Market-1501-v15.09.15"
    code, text, err = bench_cli("data", "check", "market1501", str(root))
    assert code == 0 and "is valid" in text
    bad = sorted((root / "query").iterdir())[0]
    bad.write_bytes(b"\xff\xd8 broken")
    code, text, _ = bench_cli("data", "check", "market1501", str(root), "--json")
    assert code == 1
    problems = json.loads(text)["problems"]
    assert [p["path"] for p in problems] == [str(bad)]
    assert problems[0]["problem"].startswith("unreadable image")
    code, _, err = bench_cli("data", "check", "market", str(root))
    assert code == 2 and "unknown dataset 'market'" in err
