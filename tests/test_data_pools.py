import json

import numpy as np
import pytest

from bench.data import pools
from bench.data.base import DataError, Problems
from bench.data.synth.world import SynthWorld


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("pools")
    return root, pools.write_synthetic(SynthWorld(seed=0, size="smoke"), root)


def test_round_trip(written):
    root, c = written
    assert len(pools.read_luperson(root / "LUPerson").images) == c["luperson"]
    ta = pools.read_luperson_ta(root / "LUPerson-TA")
    assert len(ta.images) == len(ta.captions) == c["luperson_ta"]
    assert ta.attributes.shape == (c["luperson_ta"], 26)
    assert ta.attributes.sum(0).min() >= 0 and 0 < ta.attributes.mean() < 1
    inet = pools.read_imagenet(root / "imagenet")
    assert len(inet.classes) == c["imagenet_classes"] and len(inet.train) == c["imagenet_train"]
    assert sorted({y for _, y in inet.val}) == list(range(len(inet.classes)))


def test_captions_follow_attributes(written):
    ta = pools.read_luperson_ta(written[0] / "LUPerson-TA")
    col = {n: i for i, n in enumerate(ta.attribute_names)}
    for cap, a in zip(ta.captions, ta.attributes):
        assert ("backpack" in cap) == bool(a[col["Backpack"]])
        assert (" hat" in cap) == bool(a[col["Hat"]])
        assert ("shorts" in cap) == bool(a[col["Shorts"]])


def test_list_file_and_bad_inputs(written, tmp_path):
    root = written[0] / "LUPerson"
    first = sorted(p for p in root.rglob("*.jpg"))[:3]
    lst = tmp_path / "list.txt"
    d = tmp_path / "lup"
    import shutil
    shutil.copytree(root, d)
    (d / "list.txt").write_text("".join(str(p.relative_to(root)) + "\n" for p in first) + "gone.jpg\n")
    probs = Problems(strict=False, check_images=False)
    pool = pools.read_luperson(d, probs)
    assert len(pool.images) == 3
    assert [str(p) for p in probs.items] == [f"{d / 'gone.jpg'}: missing image (listed in list.txt line 4)"]
    del lst
    ta = tmp_path / "ta"
    shutil.copytree(written[0] / "LUPerson-TA", ta)
    (ta / "annotations.json").write_text("{not json")
    with pytest.raises(DataError, match=r"annotations.json: malformed json"):
        pools.read_luperson_ta(ta)
    (ta / "annotations.json").write_text(json.dumps({"attribute_names": ["a"], "items": [
        {"image": "images/000/000000.jpg", "caption": "x", "attributes": [2]}]}))
    with pytest.raises(DataError, match=r"items\[0\]: attributes must be 1 values of 0 or 1"):
        pools.read_luperson_ta(ta)
    with pytest.raises(DataError, match=r"missing dataset root"):
        pools.read_imagenet(tmp_path / "nope")


def test_shapes_are_distinct_classes():
    imgs = [pools._shape_image(k, np.random.default_rng(0), 64) for k in pools.SHAPES]
    assert len({im.tobytes() for im in imgs}) == len(pools.SHAPES)
