"""The corruption matrix of issue 15: every dataset reader x every corruption that applies to
its format, each asserting the one-line :class:`bench.errors.BenchError` that names the
offending file and what is wrong with it, never a raw traceback.

Kinds: a missing annotation file (or folder, for formats whose annotation is the folder
layout), a missing image that the annotations reference, a truncated image (the readers
only stat images, so it must fail where a task decodes it: the engine's ``ImageList`` and
``read_image``, LIP's ``load_mask`` for masks), malformed json / .mat / .pkl (garbage bytes
and a file cut in half), a malformed text list, an empty split, ids or labels out of
range, and a wrong shape.  The smoke world is written once per format and module; each
case hard-links a copy of the dataset folder and replaces (never edits in place) the files
it corrupts.  The per-format tests (``tests/test_data_*.py``) check field-level detail;
this matrix checks every kind on every reader the same way.

The module ends with a count in pytest's terminal summary: ``corruption matrix: cases
tried N, errors clear N, raw tracebacks 0``.
"""
from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import scipy.io

from bench.data import dataset_spec, read_dataset, writer_of
from bench.data.synth import world
from bench.errors import BenchError

# --------------------------------------------------------------------------------------
# File surgery: replace files (the copy shares inodes with the pristine world)
# --------------------------------------------------------------------------------------
GARBAGE = b"\x00\x9f this is not what the reader expects \xff\xfe" * 4


def put(path: Path, data: bytes | str) -> None:
    path.unlink(missing_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    put(path, data[: len(data) // 2])


def put_json(path: Path, obj) -> None:
    put(path, json.dumps(obj))


def load_json(path: Path):
    return json.loads(path.read_text())


def edit_json(path: Path, fn: Callable) -> None:
    obj = load_json(path)
    fn(obj)
    put_json(path, obj)


def edit_mat(path: Path, fn: Callable[[dict], None]) -> None:
    mat = {k: v for k, v in scipy.io.loadmat(str(path)).items() if not k.startswith("__")}
    fn(mat)
    path.unlink()
    scipy.io.savemat(str(path), mat, do_compression=False)


def edit_pickle(path: Path, fn: Callable[[dict], None]) -> None:
    from bench.data.base import safe_load_pickle
    from bench.data.par import write_rethinkpar_pickle

    info = safe_load_pickle(path)
    fn(info)
    path.unlink()
    write_rethinkpar_pickle(path, info)


def first(folder: Path, pattern: str = "*") -> Path:
    return sorted(p for p in folder.rglob(pattern) if p.is_file())[0]


def cell(strings) -> np.ndarray:
    """A MATLAB cell column of strings."""
    out = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        out[i, 0] = np.array([s])
    return out


# --------------------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    key: str  # dataset key
    kind: str
    variant: str
    corrupt: Callable[[Path], tuple[Path, tuple[str, ...]]]  # root -> (file named, substrings)
    stage: str = "read"  # "read": reading raises; "decode": reading works, loading the file raises

    @property
    def id(self) -> str:
        return f"{self.key}-{self.kind}-{self.variant}"


CASES: list[Case] = []


def case(key: str, kind: str, variant: str = "", stage: str = "read"):
    def add(fn):
        CASES.append(Case(key, kind, variant or fn.__name__.strip("_"), fn, stage))
        return fn
    return add


def truncated_image(key: str, pick: Callable[[Path], Path]) -> None:
    def corrupt(root: Path):
        img = pick(root)
        truncate(img)
        return img, ("unreadable image",)
    CASES.append(Case(key, "truncated_image", "half", corrupt, "decode"))


def malformed_file(key: str, kind: str, pick: Callable[[Path], Path], reason: str,
                   name: str = "") -> None:
    """Garbage bytes, and the file cut in half."""
    def garbage(root: Path):
        p = pick(root)
        put(p, GARBAGE)
        return p, (reason,)

    def half(root: Path):
        p = pick(root)
        truncate(p)
        return p, (reason,)
    CASES.append(Case(key, kind, name + "garbage", garbage))
    CASES.append(Case(key, kind, name + "cut_in_half", half))


# ---- Market-1501: the annotation is the folder layout and the file names -------------
@case("market1501", "missing_annotation", "gallery_folder")
def _(root):
    shutil.rmtree(root / "bounding_box_test")
    return root / "bounding_box_test", ("missing bounding_box_test/ folder",)


truncated_image("market1501", lambda r: first(r / "query", "*.jpg"))


@case("market1501", "empty_split", "query")
def _(root):
    for p in (root / "query").iterdir():
        p.unlink()
    return root / "query", ("no images",)


@case("market1501", "ids_out_of_range", "pid_1600")
def _(root):
    src = first(root / "bounding_box_train", "*.jpg")
    dst = src.with_name("1600" + src.name[4:])
    src.rename(dst)
    return dst, ("identity 1600 out of range",)


@case("market1501", "wrong_shape", "file_name")
def _(root):
    src = first(root / "bounding_box_train", "*.jpg")
    dst = src.with_name("0001_c1_0001.jpg")
    src.rename(dst)
    return dst, ("file name does not match PPPP_cCsS_FFFFFF_NN.jpg",)


# ---- MSMT17: list files -----------------------------------------------------------------
@case("msmt17", "missing_annotation", "list_gallery")
def _(root):
    (root / "list_gallery.txt").unlink()
    return root / "list_gallery.txt", ("missing list file",)


@case("msmt17", "missing_image", "train")
def _(root):
    rel = (root / "list_train.txt").read_text().splitlines()[0].split()[0]
    (root / "train" / rel).unlink()
    return root / "train" / rel, ("missing image", "listed in list_train.txt line 1")


truncated_image("msmt17", lambda r: first(r / "test", "*.jpg"))


@case("msmt17", "malformed_text", "binary_list")
def _(root):
    put(root / "list_val.txt", GARBAGE)
    return root / "list_val.txt", ("unreadable list file",)


@case("msmt17", "empty_split", "query")
def _(root):
    put(root / "list_query.txt", "")
    return root / "list_query.txt", ("lists no images",)


@case("msmt17", "ids_out_of_range", "negative_pid")
def _(root):
    lines = (root / "list_train.txt").read_text().splitlines()
    lines[2] = lines[2].split()[0] + " -3"
    put(root / "list_train.txt", "\n".join(lines) + "\n")
    return Path(f"{root / 'list_train.txt'}:3"), ("negative identity -3",)


@case("msmt17", "wrong_shape", "three_fields")
def _(root):
    lines = (root / "list_train.txt").read_text().splitlines()
    lines[1] += " 7"
    put(root / "list_train.txt", "\n".join(lines) + "\n")
    return Path(f"{root / 'list_train.txt'}:2"), ("expected '<folder>/<file>.jpg <pid>'",)


# ---- PA100k: annotation.mat ---------------------------------------------------------------
@case("pa100k", "missing_annotation", "annotation_mat")
def _(root):
    (root / "annotation.mat").unlink()
    return root / "annotation.mat", ("missing .mat file",)


@case("pa100k", "missing_image", "data")
def _(root):
    name = str(scipy.io.loadmat(str(root / "annotation.mat"))["val_images_name"][0, 0][0])
    (root / "data" / name).unlink()
    return root / "data" / name, ("missing image", "named in annotation.mat")


truncated_image("pa100k", lambda r: first(r / "data"))
malformed_file("pa100k", "malformed_mat", lambda r: r / "annotation.mat", "unreadable .mat file")


@case("pa100k", "empty_split", "test")
def _(root):
    def fn(m):
        m["test_images_name"] = np.empty((0, 1), dtype=object)
        m["test_label"] = np.zeros((0, m["train_label"].shape[1]), np.uint8)
    edit_mat(root / "annotation.mat", fn)
    return root / "annotation.mat", ("split 'test' is empty",)


@case("pa100k", "ids_out_of_range", "label_3")
def _(root):
    def fn(m):
        m["train_label"] = m["train_label"].copy()
        m["train_label"][0, 0] = 3
    edit_mat(root / "annotation.mat", fn)
    return root / "annotation.mat", ("train_label: labels must be 0 or 1",)


@case("pa100k", "wrong_shape", "attributes_numeric")
def _(root):
    edit_mat(root / "annotation.mat", lambda m: m.update(attributes=np.arange(26.0)[:, None]))
    return root / "annotation.mat", ("field 'attributes' must be a cell array of strings",)


# ---- PETA / RAP: one struct in a .mat --------------------------------------------------
PAR_MAT = {"peta": ("PETA.mat", "peta", "partion_attribute", ("train", "val", "test"), "images"),
           "rap": ("RAP_annotation/RAP_annotation.mat", "RAP_annotation", "partion",
                   ("train_index", "test_index"), "RAP_dataset")}


def _edit_struct(path: Path, var: str, fn: Callable[[np.void], None]) -> None:
    def outer(m):
        s = m[var].copy()
        fn(s[0, 0])
        m[var] = s
    edit_mat(path, outer)


def _par_mat_cases(key: str) -> None:
    rel, var, part, split_fields, img_dir = PAR_MAT[key]
    test_field = split_fields[-1]

    @case(key, "missing_annotation", Path(rel).stem)
    def _(root):
        (root / rel).unlink()
        return root / rel, ("missing .mat file",)

    @case(key, "missing_image", img_dir)
    def _(root):
        img = first(root / img_dir)
        img.unlink()
        return img, ("missing image",)

    truncated_image(key, lambda r: first(r / img_dir))
    malformed_file(key, "malformed_mat", lambda r: r / rel, "unreadable .mat file")

    @case(key, "empty_split", "test")
    def _(root):
        def fn(s):
            s[part][0, 0][0, 0][test_field] = np.zeros((1, 0), np.float64)
        _edit_struct(root / rel, var, fn)
        return root / rel, (f"{var}.{part}{{1}}", "split 'test' is empty")

    @case(key, "ids_out_of_range", "partition_index")
    def _(root):
        def fn(s):
            idx = np.array(s[part][0, 0][0, 0][test_field], dtype=np.float64)
            idx.flat[0] = 10 ** 6
            s[part][0, 0][0, 0][test_field] = idx
        _edit_struct(root / rel, var, fn)
        return root / rel, (f"{var}.{part}{{1}}.{test_field}", "indices outside 1..")

    @case(key, "wrong_shape", "label_vector")
    def _(root):
        field = "data" if key == "peta" else "label"

        def fn(s):
            s[field] = np.zeros((1, 3), np.float64)
        _edit_struct(root / rel, var, fn)
        return root / rel, (f"{var}.{field}" if key == "peta" else "RAP_annotation.label",)


for _k in PAR_MAT:
    _par_mat_cases(_k)


# ---- PETA_zs / RAP_zs: RethinkPAR's pickle ---------------------------------------------
def _zs_cases(key: str, img_dir: str) -> None:
    pkl = "dataset_zs_run0.pkl"

    @case(key, "missing_annotation", "pickle")
    def _(root):
        (root / pkl).unlink()
        return root / pkl, ("missing pickle file",)

    @case(key, "missing_image", img_dir)
    def _(root):
        from bench.data.base import safe_load_pickle

        name = safe_load_pickle(root / pkl)["image_name"][0]
        (root / img_dir / name).unlink()
        return root / img_dir / name, ("missing image", f"named in {pkl}")

    truncated_image(key, lambda r: first(r / img_dir))
    malformed_file(key, "malformed_pkl", lambda r: r / pkl, "malformed pickle")

    @case(key, "empty_split", "test")
    def _(root):
        edit_pickle(root / pkl, lambda i: i["partition"].update(test=np.zeros(0, np.int64)))
        return root / pkl, ("partition", "split 'test' is empty")

    @case(key, "ids_out_of_range", "label_7")
    def _(root):
        def fn(i):
            i["label"] = np.array(i["label"]).copy()
            i["label"][0, 0] = 7
        edit_pickle(root / pkl, fn)
        return root / pkl, ("label: labels must be 0, 1 or 2",)

    @case(key, "wrong_shape", "label_columns")
    def _(root):
        edit_pickle(root / pkl, lambda i: i.update(label=np.array(i["label"])[:, :-1]))
        return root / pkl, ("label matrix has", "attribute columns, expected")


_zs_cases("peta_zs", "images")
_zs_cases("rap_zs", "RAP_dataset")


# ---- CUHK-SYSU: .mat structs ----------------------------------------------------------
CUHK_TEST = "annotation/test/train_test"


def _cuhk_image(root: Path) -> Path:
    return first(root / "Image" / "SSM", "*.jpg")


@case("cuhk_sysu", "missing_annotation", "images_mat")
def _(root):
    (root / "annotation" / "Images.mat").unlink()
    return root / "annotation" / "Images.mat", ("missing .mat file",)


@case("cuhk_sysu", "missing_image", "ssm")
def _(root):
    img = _cuhk_image(root)
    img.unlink()
    return img, ("missing image", "listed in annotation/Images.mat")


truncated_image("cuhk_sysu", _cuhk_image)
malformed_file("cuhk_sysu", "malformed_mat", lambda r: r / CUHK_TEST / "Train.mat",
               "unreadable .mat file")
malformed_file("cuhk_sysu", "malformed_mat", lambda r: r / CUHK_TEST / "TestG20.mat",
               "unreadable .mat file", "testg_")


@case("cuhk_sysu", "empty_split", "no_queries")
def _(root):
    for n in (10, 20):
        edit_mat(root / CUHK_TEST / f"TestG{n}.mat",
                 lambda m, n=n: m.update({f"TestG{n}": m[f"TestG{n}"][:, :0]}))
    return root / CUHK_TEST / "TestG20.mat", ("lists no queries",)


@case("cuhk_sysu", "ids_out_of_range", "gallery_image_not_in_pool")
def _(root):
    def fn(m):
        t = m["TestG20"].copy()
        g = t[0, 0]["Gallery"].copy()
        g[0, 0]["imname"] = np.array(["s999999.jpg"])
        t[0, 0]["Gallery"] = g
        m["TestG20"] = t
    edit_mat(root / CUHK_TEST / "TestG20.mat", fn)
    return root / CUHK_TEST / "TestG20.mat", (
        "query 1: gallery image s999999.jpg is not in pool.mat",)


@case("cuhk_sysu", "wrong_shape", "idlocate_3_numbers")
def _(root):
    def fn(m):
        img = m["Img"].copy()
        box = img[0, 0]["box"].copy()
        box[0, 0]["idlocate"] = np.array([[1.0, 2.0, 3.0]])
        img[0, 0]["box"] = box
        m["Img"] = img
    edit_mat(root / "annotation" / "Images.mat", fn)
    return root / "annotation" / "Images.mat", ("malformed Img struct",
                                               "expected a box of 4 numbers, got 3")


# ---- PRW: per-frame .mat, frame lists, query_info.txt -----------------------------------
def _prw_frame(root: Path) -> str:
    return str(scipy.io.loadmat(str(root / "frame_test.mat"))["img_index_test"][0, 0][0]) + ".jpg"


@case("prw", "missing_annotation", "frame_annotation")
def _(root):
    p = root / "annotations" / (_prw_frame(root) + ".mat")
    p.unlink()
    return p, ("missing annotation file",)


@case("prw", "missing_image", "frame")
def _(root):
    p = root / "frames" / _prw_frame(root)
    p.unlink()
    return p, ("missing image", "listed in frame list")


truncated_image("prw", lambda r: r / "frames" / _prw_frame(r))
malformed_file("prw", "malformed_mat", lambda r: r / "annotations" / (_prw_frame(r) + ".mat"),
               "unreadable .mat file")
malformed_file("prw", "malformed_mat", lambda r: r / "frame_test.mat", "unreadable .mat file",
               "frame_list_")


@case("prw", "malformed_text", "binary_query_info")
def _(root):
    put(root / "query_info.txt", GARBAGE)
    return Path(f"{root / 'query_info.txt'}:1"), ("expected 'pid x y w h frame_name'",)


@case("prw", "empty_split", "test_frames")
def _(root):
    edit_mat(root / "frame_test.mat", lambda m: m.update(img_index_test=np.empty((0, 1), object)))
    return root / "frame_test.mat", ("lists no frames",)


@case("prw", "ids_out_of_range", "identity_minus_5")
def _(root):
    p = root / "annotations" / (_prw_frame(root) + ".mat")

    def fn(m):
        b = m["box_new"].astype(np.float64)
        b[0, 0] = -5
        m["box_new"] = b
    edit_mat(p, fn)
    return p, ("identity -5 is neither positive nor -2",)


@case("prw", "wrong_shape", "box_new_n_by_4")
def _(root):
    p = root / "annotations" / (_prw_frame(root) + ".mat")
    edit_mat(p, lambda m: m.update(box_new=m["box_new"][:, :4]))
    return p, ("box_new must be an N x 5 numeric array",)


# ---- CityPersons: per-image json --------------------------------------------------------
def _cp_ann(root: Path) -> Path:
    return first(root / "gtBboxCityPersons" / "val", "*.json")


@case("citypersons", "missing_annotation", "val_folder")
def _(root):
    shutil.rmtree(root / "gtBboxCityPersons" / "val")
    return root / "gtBboxCityPersons" / "val", ("missing gtBboxCityPersons/val/ folder",)


@case("citypersons", "missing_image", "left_img8bit")
def _(root):
    img = first(root / "leftImg8bit" / "val", "*.png")
    img.unlink()
    return img, ("missing image", "annotated by")


truncated_image("citypersons", lambda r: first(r / "leftImg8bit" / "val", "*.png"))
malformed_file("citypersons", "malformed_json", _cp_ann, "unreadable json")


@case("citypersons", "empty_split", "val")
def _(root):
    for p in (root / "gtBboxCityPersons" / "val").rglob("*.json"):
        p.unlink()
    return root / "gtBboxCityPersons" / "val", ("no <city>/*", "annotation files")


@case("citypersons", "ids_out_of_range", "unknown_label")
def _(root):
    p = _cp_ann(root)
    edit_json(p, lambda d: d["objects"][0].update(label="alien"))
    return p, ("objects[0].label: unknown label 'alien'",)


@case("citypersons", "wrong_shape", "bbox_3_numbers")
def _(root):
    p = _cp_ann(root)
    edit_json(p, lambda d: d["objects"][0].update(bbox=[1, 2, 3]))
    return p, ("objects[0].bbox: expected 4 numbers",)


# ---- LIP: id lists and masks ------------------------------------------------------------
LIP_IDS = "TrainVal_images/val_id.txt"


def _lip_id(root: Path) -> str:
    return (root / LIP_IDS).read_text().split()[0]


def _lip_mask(root: Path) -> Path:
    return root / "TrainVal_parsing_annotations" / "val_segmentations" / f"{_lip_id(root)}.png"


@case("lip", "missing_annotation", "id_list")
def _(root):
    (root / LIP_IDS).unlink()
    return root / LIP_IDS, ("missing id list",)


@case("lip", "missing_annotation", "mask")
def _(root):
    m = _lip_mask(root)
    m.unlink()
    return m, ("missing mask", "listed in val_id.txt line 1")


@case("lip", "missing_image", "val_images")
def _(root):
    p = root / "TrainVal_images" / "val_images" / f"{_lip_id(root)}.jpg"
    p.unlink()
    return p, ("missing image", "listed in val_id.txt line 1")


truncated_image("lip", lambda r: r / "TrainVal_images" / "val_images" / f"{_lip_id(r)}.jpg")


@case("lip", "truncated_image", "mask", stage="decode")
def _(root):
    m = _lip_mask(root)
    truncate(m)
    return m, ("unreadable mask",)


@case("lip", "malformed_text", "binary_id_list")
def _(root):
    put(root / LIP_IDS, GARBAGE)
    return root / LIP_IDS, ("unreadable id list",)


@case("lip", "empty_split", "val")
def _(root):
    put(root / LIP_IDS, "\n")
    return root / LIP_IDS, ("lists no ids",)


@case("lip", "ids_out_of_range", "mask_label_25", stage="decode")
def _(root):
    from bench.data.base import write_image

    m = _lip_mask(root)
    from PIL import Image

    with Image.open(m) as im:
        arr = np.asarray(im).copy()
    arr[0, 0] = 25
    m.unlink()
    write_image(m, arr)
    return m, ("label 25 out of range 0..19",)


@case("lip", "wrong_shape", "mask_size", stage="decode")
def _(root):
    from bench.data.base import write_image

    m = _lip_mask(root)
    m.unlink()
    write_image(m, np.zeros((5, 7), np.uint8))
    return m, ("mask is 7x5, its image",)


# ---- COCO keypoints: one json ----------------------------------------------------------
COCO_ANN = "annotations/person_keypoints_val2017.json"


@case("coco_keypoints", "missing_annotation", "val_json")
def _(root):
    (root / COCO_ANN).unlink()
    return root / COCO_ANN, ("missing annotation file",)


@case("coco_keypoints", "missing_image", "val2017")
def _(root):
    name = load_json(root / COCO_ANN)["images"][0]["file_name"]
    (root / "val2017" / name).unlink()
    return root / "val2017" / name, ("missing image", "images[0] of person_keypoints_val2017.json")


truncated_image("coco_keypoints", lambda r: first(r / "val2017", "*.jpg"))
malformed_file("coco_keypoints", "malformed_json", lambda r: r / COCO_ANN, "unreadable json")


@case("coco_keypoints", "empty_split", "val")
def _(root):
    edit_json(root / COCO_ANN, lambda d: d.update(images=[], annotations=[]))
    return root / COCO_ANN, ("lists no images",)


@case("coco_keypoints", "ids_out_of_range", "image_id")
def _(root):
    edit_json(root / COCO_ANN, lambda d: d["annotations"][0].update(image_id=987654321))
    return root / COCO_ANN, ("annotations[0] (id ", ".image_id: 987654321 names no image")


@case("coco_keypoints", "wrong_shape", "keypoints_50")
def _(root):
    edit_json(root / COCO_ANN, lambda d: d["annotations"][0].update(keypoints=[0] * 50))
    return root / COCO_ANN, ("annotations[0] (id ", ".keypoints: expected 51 numbers")


# ---- LUPerson: a folder of images, or list.txt ------------------------------------------
@case("luperson", "missing_image", "list_txt")
def _(root):
    imgs = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))
    put(root / "list.txt", "\n".join(imgs) + "\n")
    (root / imgs[3]).unlink()
    return root / imgs[3], ("missing image", "listed in list.txt line 4")


truncated_image("luperson", lambda r: first(r, "*.jpg"))


@case("luperson", "malformed_text", "binary_list_txt")
def _(root):
    put(root / "list.txt", GARBAGE)
    return root / "list.txt", ("unreadable list file",)


@case("luperson", "empty_split", "no_images")
def _(root):
    shutil.rmtree(root / "images")
    return root, ("no images found",)


# ---- LUPerson-TA: annotations.json ------------------------------------------------------
@case("luperson_ta", "missing_annotation", "annotations_json")
def _(root):
    (root / "annotations.json").unlink()
    return root / "annotations.json", ("missing annotations.json",)


@case("luperson_ta", "missing_image", "images")
def _(root):
    rel = load_json(root / "annotations.json")["items"][0]["image"]
    (root / rel).unlink()
    return root / rel, ("missing image", "items[0]")


truncated_image("luperson_ta", lambda r: first(r / "images", "*.jpg"))
malformed_file("luperson_ta", "malformed_json", lambda r: r / "annotations.json", "malformed json")


@case("luperson_ta", "empty_split", "no_items")
def _(root):
    edit_json(root / "annotations.json", lambda d: d.update(items=[]))
    return root / "annotations.json", ("no usable items",)


@case("luperson_ta", "ids_out_of_range", "attribute_2")
def _(root):
    edit_json(root / "annotations.json", lambda d: d["items"][1]["attributes"].__setitem__(0, 2))
    return Path(f"{root / 'annotations.json'}: items[1]"), (
        "attributes must be 26 values of 0 or 1",)


@case("luperson_ta", "wrong_shape", "items_object")
def _(root):
    edit_json(root / "annotations.json", lambda d: d.update(items={"a": 1}))
    return root / "annotations.json", (
        "expected an object with 'attribute_names' and 'items' lists",)


# ---- CUHK-PEDES: reid_raw.json + imgs/ ------------------------------------------------------
@case("cuhk_pedes", "missing_annotation", "reid_raw_json")
def _(root):
    (root / "reid_raw.json").unlink()
    return root / "reid_raw.json", ("missing reid_raw.json",)


@case("cuhk_pedes", "missing_image", "imgs")
def _(root):
    rel = load_json(root / "reid_raw.json")[0]["file_path"]
    (root / "imgs" / rel).unlink()
    return root / "imgs" / rel, ("missing image", "reid_raw.json [0]")


truncated_image("cuhk_pedes", lambda r: first(r / "imgs", "*.jpg"))
malformed_file("cuhk_pedes", "malformed_json", lambda r: r / "reid_raw.json", "malformed json")


@case("cuhk_pedes", "empty_split", "no_test_items")
def _(root):
    edit_json(root / "reid_raw.json", lambda d: d.__setitem__(
        slice(None), [x for x in d if x["split"] != "test"]))
    return root / "reid_raw.json", ("no test items",)


@case("cuhk_pedes", "ids_out_of_range", "id_negative")
def _(root):
    edit_json(root / "reid_raw.json", lambda d: d[2].__setitem__("id", -1))
    return Path(f"{root / 'reid_raw.json'}: [2]"), ("id must be a non-negative integer",)


@case("cuhk_pedes", "wrong_shape", "object_not_list")
def _(root):
    put_json(root / "reid_raw.json", {"annotations": load_json(root / "reid_raw.json")})
    return root / "reid_raw.json", ("expected a list of objects",)


# ---- ImageNet: class folders --------------------------------------------------------------
@case("imagenet", "missing_annotation", "train_folder")
def _(root):
    shutil.rmtree(root / "train")
    return root / "train", ("missing train/ folder",)


truncated_image("imagenet", lambda r: first(r / "val", "*.JPEG"))


@case("imagenet", "empty_split", "no_classes")
def _(root):
    for d in (root / "train").iterdir():
        shutil.rmtree(d)
    return root / "train", ("no class folders",)


@case("imagenet", "ids_out_of_range", "val_class_not_in_train")
def _(root):
    src = sorted((root / "val").iterdir())[0]
    dst = src.with_name("n99999999")
    src.rename(dst)
    return dst, ("class folder not among train/'s 10 classes",)


# --------------------------------------------------------------------------------------
# Running a case
# --------------------------------------------------------------------------------------
def _image_paths(key: str, rec) -> set[str]:
    """Every file a task would load from the record."""
    if key in ("market1501", "msmt17"):
        return {im.path for part in (rec.train, rec.query, rec.gallery, rec.val) for im in part}
    if key in ("cuhk_sysu", "prw"):
        return {im.path for im in rec.train + rec.gallery} | {q.path for q in rec.queries}
    if key == "citypersons":
        return {im.image_path for im in rec}
    if key == "lip":
        return {s.image_path for s in rec} | {s.mask_path for s in rec}
    if key == "coco_keypoints":
        return {im.path for im in rec.images}
    if key == "imagenet":
        return {p for p, _ in rec.train + rec.val}
    return set(rec.images)


def _decode(key: str, rec, path: Path) -> None:
    """Load ``path`` the way the tasks do: LIP masks through load_mask (with the image's
    size), every image through the engine's ImageList (bench.data.base.read_image)."""
    import torch

    from adapters._engine import ImageList

    if key == "lip" and path.suffix == ".png":
        from bench.data.lip import load_mask

        from PIL import Image

        [smp] = [s for s in rec if s.mask_path == str(path)]
        with Image.open(smp.image_path) as im:
            load_mask(path, im.size)
        return
    ImageList([(str(path), 0)], lambda im: torch.zeros(1))[0]


TALLY: Counter = Counter()


class _Summary:
    def pytest_terminal_summary(self, terminalreporter):
        if TALLY["tried"]:
            terminalreporter.write_line(
                f"corruption matrix: cases tried {TALLY['tried']}, errors clear {TALLY['clear']}, "
                f"raw tracebacks {TALLY['raw']}, unclear messages {TALLY['unclear']}, "
                f"no error {TALLY['silent']}")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, request):
    """root(key): the dataset's folder in a smoke world written once per format."""
    pm = request.config.pluginmanager
    if not pm.has_plugin("corruption-matrix-summary"):  # prints at the end of the session
        pm.register(_Summary(), "corruption-matrix-summary")
    out = tmp_path_factory.mktemp("world")

    def root(key: str) -> Path:
        world.make(out, "smoke", 0, formats=[writer_of(key)])
        return out / dataset_spec(key).folder
    return root


def _copy(src: Path, dst: Path) -> Path:
    """A hard-linked copy (cases replace files, never write into them)."""
    shutil.copytree(src, dst, copy_function=os.link)
    return dst


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_corruption_gives_a_clear_error(pristine, tmp_path, c: Case):
    root = _copy(pristine(c.key), tmp_path / dataset_spec(c.key).folder)
    offending, expected = c.corrupt(root)
    TALLY["tried"] += 1
    outcome = "silent"
    try:
        rec = read_dataset(c.key, root)
        if c.stage == "decode":
            assert str(offending) in _image_paths(c.key, rec), "damaged file not in the record"
            _decode(c.key, rec, offending)
    except BenchError as e:
        msg = str(e)
        ok = str(offending) in msg and all(s in msg for s in expected) and "\n" not in msg
        outcome = "clear" if ok else "unclear"
        TALLY[outcome] += 1
        assert ok, f"unclear message for {c.id}: {msg!r} (expected {offending} and {expected})"
        return
    except Exception as e:  # a raw traceback: what the matrix exists to catch
        TALLY["raw"] += 1
        raise AssertionError(f"{c.id}: raw {type(e).__name__}: {e}") from e
    TALLY[outcome] += 1
    pytest.fail(f"{c.id}: no error (expected one naming {offending}: {expected})")


def test_matrix_covers_every_reader_and_kind():
    from bench.data import DATASETS

    keys = {c.key for c in CASES}
    assert keys == set(DATASETS.names())
    kinds = Counter(c.kind for c in CASES)
    for kind in ("missing_annotation", "missing_image", "truncated_image", "malformed_json",
                 "malformed_mat", "malformed_pkl", "malformed_text", "empty_split",
                 "ids_out_of_range", "wrong_shape"):
        assert kinds[kind] > 0, kind
    for key in keys:  # every reader: an empty split and a truncated image at least
        mine = {c.kind for c in CASES if c.key == key}
        assert {"empty_split", "truncated_image"} <= mine, key
    assert len({c.id for c in CASES}) == len(CASES)
