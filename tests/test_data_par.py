"""Attribute datasets (PA100k, PETA, RAP, PETA_zs, RAP_zs): the synthetic world writes them as
they ship, the readers read them back, and broken files fail naming the file."""
import io
import os
import pickle
import re
import shutil

import numpy as np
import pytest
import scipy.io

from bench.data import par
from bench.data.base import DataError, Problems
from bench.data.catalog import dataset_spec
from bench.data.synth.people import PA100K_ATTRIBUTES
from bench.data.synth.world import SynthWorld

READERS = {"pa100k": ("PA100k", par.read_pa100k), "peta": ("PETA", par.read_peta),
           "peta_zs": ("PETA", par.read_peta_zs), "rap": ("RAP", par.read_rap),
           "rap_zs": ("RAP", par.read_rap_zs)}
ANNOTATIONS = ("PA100k/annotation.mat", "PETA/PETA.mat", "PETA/dataset_zs_run0.pkl",
               "RAP/RAP_annotation/RAP_annotation.mat", "RAP/dataset_zs_run0.pkl")
STRICT_DECODE = dict(strict=True, check_images=True)


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("par")
    counts = par.write_synthetic(SynthWorld(0, "smoke"), root)
    return root, counts


@pytest.fixture
def copy_of(world_dir, tmp_path):
    """A private copy of one written dataset folder, to break."""
    def copy(folder):
        dst = tmp_path / folder
        shutil.copytree(world_dir[0] / folder, dst)
        return dst
    return copy


def test_catalogue_points_at_these_readers():
    for key, (folder, reader) in READERS.items():
        spec = dataset_spec(key)
        assert spec.folder == folder and spec.load_reader() is reader


def test_round_trip_counts_and_protocols(world_dir):
    root, counts = world_dir
    got = {key: reader(root / folder, Problems(**STRICT_DECODE))
           for key, (folder, reader) in READERS.items()}
    pa = got["pa100k"]
    assert len(pa.images) == counts["pa100k"] == 160
    assert [len(pa.splits[s]) for s in ("train", "val", "test")] == [
        counts["pa100k_train"], counts["pa100k_val"], counts["pa100k_test"]]
    assert pa.attr_names == PA100K_ATTRIBUTES and len(pa.eval_attr_idx) == 26
    assert len(got["peta"].images) == counts["peta"] and len(got["peta"].partitions) == 5
    assert len(got["peta"].splits["test"]) == counts["peta_test"]
    assert got["peta"].eval_attr_names == par.PETA_ATTRIBUTES[:35]
    assert len(got["rap"].images) == counts["rap"]
    assert set(got["rap"].splits) == {"trainval", "test"}
    assert len(got["rap"].splits["test"]) == counts["rap_test"]
    assert got["rap"].labels.shape == (counts["rap"], 92) and len(got["rap"].eval_attr_idx) == 51
    for key, width, n_eval in (("peta_zs", 105, 35), ("rap_zs", 119, 53)):
        ds = got[key]
        assert ds.labels.shape == (counts[key.split("_")[0]], width)
        assert len(ds.eval_attr_idx) == n_eval
        for s in ("train", "val", "test"):
            assert len(ds.splits[s]) == counts[f"{key}_{s}"]
        assert sorted(np.concatenate([ds.splits["trainval"], ds.splits["test"]])) == list(
            range(len(ds.images)))
    assert "Age46-60" not in got["rap_zs"].eval_attr_names
    assert set(got["peta_zs"].eval_attr_names) == set(par.PETA_ATTRIBUTES[:35])
    for ds in got.values():
        assert ds.labels.dtype == np.uint8 and set(np.unique(ds.labels)) <= {0, 1}
        assert all(os.path.isfile(p) for p in ds.images)
        paths, y = ds.subset("test")
        assert y.shape == (len(paths), len(ds.eval_attr_idx))


def test_labels_come_from_the_rendered_identity(world_dir):
    root, _ = world_dir
    w = SynthWorld(0, "smoke")
    pa, peta, rap = (par.read_pa100k(root / "PA100k"), par.read_peta(root / "PETA"),
                     par.read_rap(root / "RAP"))
    for key, ds, vector in (
            ("pa100k", pa, lambda ident, view: ident.attribute_vector(view)),
            ("peta", peta, lambda i, v: par._vector(par.PETA_ATTRIBUTES, par.peta_positives(i, v))),
            ("rap", rap, lambda i, v: par._vector(par.RAP_ATTRIBUTES, par.rap_positives(i, v)))):
        for i, shot in enumerate(par.plan(w, key)[:6]):
            crop = w.crop(shot.pid, shot.cam, shot.h, shot.w, key, shot.k)
            assert (ds.labels[i] == vector(w.identity(shot.pid), crop.view)).all()
    col = {n: j for j, n in enumerate(peta.attr_names)}
    assert (peta.labels[:, col["personalMale"]] + peta.labels[:, col["personalFemale"]] == 1).all()
    hair = ("hairLong", "hairShort", "hairBald")
    assert (peta.labels[:, [col[h] for h in hair]].sum(1) == 1).all()
    ages = ("personalLess15", "personalLess30", "personalLess45", "personalLess60",
            "personalLarger60")
    assert (peta.labels[:, [col[a] for a in ages]].sum(1) == 1).all()
    evaluated = peta.labels[:, peta.eval_attr_idx]
    assert (evaluated.min(0) == 0).all() and (evaluated.max(0) == 1).all()  # none constant
    colours = [col[f"upperBody{c}"] for c in par._PETA_COLOURS]
    assert (peta.labels[:, colours].sum(1) >= 1).all()  # every top has a colour
    faces = [rap.attr_names.index(f) for f in ("faceFront", "faceBack", "faceLeft", "faceRight")]
    assert (rap.labels[:, faces].sum(1) == 1).all()


def test_mat_files_read_by_scipy_as_rethinkpar_does(world_dir):
    root, counts = world_dir
    pa = scipy.io.loadmat(root / "PA100k" / "annotation.mat")
    assert [pa["attributes"][i][0][0] for i in range(26)] == list(PA100K_ATTRIBUTES)
    assert pa["train_images_name"].shape == (counts["pa100k_train"], 1)
    assert pa["train_images_name"][0][0][0].endswith(".jpg")
    assert pa["test_label"].shape == (counts["pa100k_test"], 26)
    # PETA.mat by position, as format_peta.py indexes it
    peta = scipy.io.loadmat(root / "PETA" / "PETA.mat")["peta"][0][0]
    assert peta.dtype.names == ("data", "attribute", "selected_attribute", "partion_attribute")
    assert peta[0][:, 4:].shape == (counts["peta"], 105)
    assert [a[0][0] for a in peta[1]] == list(par.PETA_ATTRIBUTES)
    assert peta[2].ravel().tolist() == list(range(1, 36))
    assert len(peta[3]) == 5
    train, val, test = (peta[3][2][0][0][0][k][:, 0] - 1 for k in range(3))
    assert len(test) == counts["peta_test"]
    assert sorted(np.concatenate([train, val, test])) == list(range(counts["peta"]))
    # RAP_annotation.mat by position, as format_rap.py indexes it
    rap = scipy.io.loadmat(root / "RAP" / "RAP_annotation" / "RAP_annotation.mat")["RAP_annotation"]
    assert rap[0][0].dtype.names == ("partion", "label", "attribute_chinese", "attribute_eng",
                                     "position", "imagesname", "attribute_exp")
    assert rap[0][0][1].shape == (counts["rap"], 92)
    assert [rap[0][0][3][i][0][0] for i in range(92)] == list(par.RAP_ATTRIBUTES)
    names = [rap[0][0][5][i][0][0] for i in range(counts["rap"])]
    assert all((root / "RAP" / "RAP_dataset" / n).is_file() for n in names)
    trainval = rap[0][0][0][1][0][0][0][0][0, :] - 1
    test = rap[0][0][0][1][0][0][0][1][0, :] - 1
    assert len(test) == counts["rap_test"] and not set(trainval) & set(test)
    assert rap[0][0][4].shape == (counts["rap"], 16)
    for rel in ANNOTATIONS:
        if rel.endswith(".mat"):
            assert (root / rel).read_bytes().startswith(par.MAT_HEADER)


class _AttrDict(dict):
    """What easydict.EasyDict is to RethinkPAR: a dict with attribute access."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class _RethinkPARUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == ("easydict", "EasyDict"):
            return _AttrDict
        return super().find_class(module, name)


@pytest.mark.parametrize("folder,n_attr,n_eval", [("PETA", 105, 35), ("RAP", 119, 53)])
def test_pickle_has_rethinkpar_structure(world_dir, folder, n_attr, n_eval):
    root, _ = world_dir
    raw = (root / folder / "dataset_zs_run0.pkl").read_bytes()
    assert b"easydict\nEasyDict" in raw  # pickled as EasyDicts, as RethinkPAR's scripts do
    info = _RethinkPARUnpickler(io.BytesIO(raw)).load()
    # what dataset/pedes_attr/pedes.py reads
    assert len(info.attr_name) == n_attr and info.label.shape == (len(info.image_name), n_attr)
    assert len(info.label_idx.eval) == n_eval
    assert set(info.partition.keys()) == {"train", "val", "trainval", "test"}
    assert (np.sort(info.partition.trainval) == np.sort(np.concatenate(
        [info.partition.train, info.partition.val]))).all()
    np.testing.assert_allclose(info.weight_trainval[0],
                               info.label[info.partition.trainval].mean(0), rtol=1e-6)
    assert info.weight_train[0].dtype == np.float32
    assert all((root / folder / info.root.split("/")[-1] / n).is_file() for n in info.image_name)


def test_rap_zs_layout_matches_rethinkpar():
    cols, evaluated = par.rap_zs_layout()
    names = [par.RAP2_ATTRIBUTES[c] for c in cols]
    assert len(cols) == len(set(cols)) == 119 and len(evaluated) == 53
    assert names[:5] == ["hs-BaldHead", "hs-LongHair", "hs-BlackHair", "hs-Hat", "hs-Glasses"]
    assert names[35:40] == ["AgeLess16", "Age17-30", "Age31-45", "Age46-60", "Femal"]
    assert 38 not in evaluated and names[53] == "action-Other"
    assert names[54] == "ub-ColorBlack" and names[57] == "up-ColorRed"
    assert (names[96], names[102], names[103]) == ("AgeBiger60", "lb-Shorts", "lb-LongSkirt")
    assert [par.PETA_ATTRIBUTES[i] for i in par.PETA_GROUP_ORDER[:5]] == [
        "accessoryHat", "accessoryMuffler", "accessoryNothing", "accessorySunglasses", "hairLong"]
    assert len(par.PETA_ATTRIBUTES) == 105 and len(par.RAP_ATTRIBUTES) == 92


def test_zero_shot_splits_are_identity_disjoint(world_dir):
    root, _ = world_dir
    w = SynthWorld(0, "smoke")
    for key, folder in (("peta", "PETA"), ("rap", "RAP")):
        pids = np.array([s.pid for s in par.plan(w, key)])
        zs = READERS[f"{key}_zs"][1](root / folder)
        people = {s: set(pids[zs.splits[s]]) for s in ("train", "val", "test")}
        assert people["train"] and people["val"] and people["test"]
        assert not people["train"] & people["test"] and not people["val"] & people["test"]
        assert not people["train"] & people["val"]
        # the shipped random partition shares people between trainval and test: the
        # problem the zero-shot protocol fixes
        shipped = READERS[key][1](root / folder)
        assert set(pids[shipped.splits["trainval"]]) & set(pids[shipped.splits["test"]])


@pytest.fixture
def few_images(monkeypatch):
    """Write only the first 15 planned images per dataset (the annotations' code is the same)."""
    full = par.plan
    monkeypatch.setattr(par, "plan", lambda world, key: full(world, key)[:15])


def test_same_seed_same_bytes_different_seed_differs(tmp_path, few_images):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        par.write_synthetic(SynthWorld(seed, "smoke"), tmp_path / name)
    for rel in ANNOTATIONS:
        a, b, c = ((tmp_path / n / rel).read_bytes() for n in "abc")
        assert a == b, rel
        assert a != c, rel
    assert par.read_rap_zs(tmp_path / "b" / "RAP").labels.shape == (15, 119)


# --------------------------------------------------------------------------------------
# Broken inputs
# --------------------------------------------------------------------------------------
def starts(path, reason):
    """A regex for an error message that starts with ``path: reason`` (taken literally)."""
    return "^" + re.escape(f"{path}: {reason}")


def _rewrite_mat(path, edit):
    mat = {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
    edit(mat)
    scipy.io.savemat(path, mat)


def test_truncated_image_found_when_decoding(copy_of):
    root = copy_of("PA100k")
    bad = root / "data" / "000003.jpg"
    bad.write_bytes(bad.read_bytes()[:200])
    par.read_pa100k(root)  # by default images are only required to exist
    with pytest.raises(DataError, match=starts(bad, "unreadable image")):
        par.read_pa100k(root, Problems(**STRICT_DECODE))


def test_missing_annotation_file(copy_of):
    root = copy_of("PA100k")
    (root / "annotation.mat").unlink()
    with pytest.raises(DataError, match=starts(root / "annotation.mat", "missing .mat file")):
        par.read_pa100k(root)


def test_mat_missing_field(copy_of):
    root = copy_of("PA100k")
    _rewrite_mat(root / "annotation.mat", lambda m: m.pop("train_label"))
    with pytest.raises(DataError, match=starts(root / "annotation.mat",
                                                  "missing field 'train_label'")):
        par.read_pa100k(root)


def test_wrong_label_width(copy_of):
    root = copy_of("PETA")

    def drop_column(m):
        m["peta"][0, 0]["data"] = m["peta"][0, 0]["data"][:, :-1]
    _rewrite_mat(root / "PETA.mat", drop_column)
    with pytest.raises(DataError, match=starts(
            root / "PETA.mat", "label matrix has 104 attribute columns, expected 105")):
        par.read_peta(root)


def test_non_binary_labels(copy_of):
    root = copy_of("PA100k")

    def three(m):
        m["val_label"][2, 5] = 3
    _rewrite_mat(root / "annotation.mat", three)
    with pytest.raises(DataError, match=r"annotation.mat: val_label: labels must be 0 or 1"):
        par.read_pa100k(root)


def test_split_index_out_of_range(copy_of):
    root = copy_of("RAP")
    ann = root / "RAP_annotation" / "RAP_annotation.mat"
    n = len(par.read_rap(root).images)

    def past_the_end(m):
        m["RAP_annotation"][0, 0]["partion"][0, 0][0, 0]["test_index"][0, 0] = n + 1
    _rewrite_mat(ann, past_the_end)
    reason = f"RAP_annotation.partion{{1}}.test_index: 1 indices outside 1..{n} (e.g. {n + 1})"
    with pytest.raises(DataError, match=starts(ann, reason)):
        par.read_rap(root)


def test_pickle_missing_key_and_bad_split(copy_of):
    root = copy_of("PETA")
    pkl = root / "dataset_zs_run0.pkl"
    info = par.safe_load_pickle(pkl)
    info["partition"]["test"] = np.append(info["partition"]["test"], 10_000)
    pkl.write_bytes(pickle.dumps(info, protocol=3))
    with pytest.raises(DataError, match=starts(pkl, "partition.test: 1 indices outside 0..119")):
        par.read_peta_zs(root)
    del info["partition"]
    pkl.write_bytes(pickle.dumps(info, protocol=3))
    with pytest.raises(DataError, match=starts(pkl, "missing key 'partition'")):
        par.read_peta_zs(root)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_and_never_runs(copy_of, tmp_path):
    root = copy_of("RAP")
    marker = tmp_path / "pwned"
    pkl = root / "dataset_zs_run0.pkl"
    pkl.write_bytes(pickle.dumps({"image_name": [], "label": _Payload(marker)}))
    with pytest.raises(DataError, match=starts(pkl, "refused: ") + ".*system"):
        par.read_rap_zs(root)
    assert not marker.exists()
    pickle.loads(pkl.read_bytes())  # the payload is real: plain pickle runs it
    assert marker.exists()


def test_collect_mode_reports_every_problem(copy_of):
    root = copy_of("RAP")
    ann = root / "RAP_annotation" / "RAP_annotation.mat"
    ds = par.read_rap(root)
    missing, truncated = ds.images[4], ds.images[7]
    os.unlink(missing)
    with open(truncated, "r+b") as fh:
        fh.truncate(100)

    def break_labels_and_split(m):
        m["RAP_annotation"][0, 0]["label"][0, 0] = 7
        m["RAP_annotation"][0, 0]["partion"][3, 0][0, 0]["train_index"][0, 0] = 0
    _rewrite_mat(ann, break_labels_and_split)
    probs = Problems(strict=False, check_images=True)
    ds = par.read_rap(root, probs)  # nothing fatal: a record comes back
    assert any(p.path == missing and p.reason.startswith("missing image") for p in probs.items)
    assert any(p.path == truncated and p.reason.startswith("unreadable image") for p in probs.items)
    assert any(p.path == str(ann) and "labels must be 0, 1 or 2" in p.reason for p in probs.items)
    assert any(p.path == str(ann) and p.reason.startswith("RAP_annotation.partion{4}.train_index")
               for p in probs.items)
    assert len(probs.items) == 4
    assert len(ds.partitions) == 4  # the broken partition is left out, the others are kept


def test_pickle_with_one_partition_per_run(copy_of):
    """dataset_all.pkl-style: every split a list of index arrays, one per run."""
    root = copy_of("RAP")
    pkl = root / "dataset_zs_run0.pkl"
    info = par.safe_load_pickle(pkl)
    part = info["partition"]
    info["partition"] = {"trainval": [part["trainval"], part["test"]],
                         "test": [part["test"], part["trainval"]]}
    pkl.write_bytes(pickle.dumps(info, protocol=3))
    ds = par.read_rap_zs(root)
    assert len(ds.partitions) == 2 and (ds.splits["test"] == part["test"]).all()
    assert set(ds.splits) == {"trainval", "test"}


def test_pickle_with_a_range_like_rethinkpar_writes(copy_of):
    """RethinkPAR's format_peta.py stores label_idx.extra as a range: it must load."""
    root = copy_of("PETA")
    pkl = root / "dataset_zs_run0.pkl"
    info = par.safe_load_pickle(pkl)
    info["label_idx"]["extra"] = range(79, 105)
    pkl.write_bytes(pickle.dumps(info, protocol=3))
    assert len(par.read_peta_zs(root).eval_attr_idx) == 35
