"""COCO person keypoints (Lin et al., ECCV 2014), as it ships::

    coco/annotations/person_keypoints_{train,val}2017.json
         {train,val}2017/000000397133.jpg
         person_detection_results/COCO_val2017_detections_AP_H_56_person.json   (optional)

The annotation file is COCO's instance format restricted to the person category: every
image of the split, one annotation per person with ``bbox`` [x, y, w, h], ``keypoints``
(17 x (x, y, v) flattened; v 0 unlabelled, 1 labelled but hidden, 2 visible),
``num_keypoints`` (how many have v > 0), ``area`` (of the segmentation mask),
``iscrowd`` and ``segmentation`` (polygons, or RLE for crowds); the person category lists
the keypoint names and the 1-based ``skeleton``.  It is read with pycocotools' ``COCO``,
the object ``COCOeval(..., iouType="keypoints")`` evaluates against, which the record keeps.

Top-down pose testing crops people at boxes from a person detector: a result file in
COCO's detection-result format, a list of ``{"image_id", "category_id": 1,
"bbox": [x, y, w, h], "score"}`` (mmpose reads ``COCO_val2017_detections_AP_H_56_person.json``
and keeps category 1).  ``read_coco_keypoints(..., detections=path)`` reads one.

Box checks accept zero-width or zero-height boxes (a few real annotations have them and
the evaluators drop them); negative sizes and boxes outside the image are errors.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.data.base import Problems, image_ok, problems_or_strict, require_dir, write_image
from bench.data.synth.render import COCO_KEYPOINTS, COCO_SKELETON
from bench.io import atomic_write_text

SPLITS = ("train", "val")
NUM_KEYPOINTS = len(COCO_KEYPOINTS)  # 17
# COCO's left/right keypoint pairs (0-based), for flip testing.
FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
DETECTIONS_FILE = "person_detection_results/COCO_val2017_detections_AP_H_56_person.json"
BOX_TOLERANCE = 1.0  # pixels a box may poke past the image border (rounding)
IMAGE_KEYS = ("id", "file_name", "width", "height")
DETECTION_KEYS = ("image_id", "category_id", "bbox", "score")


@dataclass(frozen=True)
class CocoImage:
    id: int
    file_name: str
    path: str  # absolute
    width: int
    height: int


@dataclass(frozen=True, eq=False)
class CocoPerson:
    id: int
    image_id: int
    bbox: np.ndarray  # (4,) float32 x, y, w, h
    keypoints: np.ndarray  # (17, 3) float32 x, y, v
    area: float
    iscrowd: bool
    num_keypoints: int


@dataclass(frozen=True, eq=False)
class CocoDetection:
    image_id: int
    bbox: np.ndarray  # (4,) float32 x, y, w, h
    score: float


@dataclass(frozen=True, eq=False)
class CocoKeypoints:
    root: str
    split: str
    ann_path: str
    images: tuple[CocoImage, ...]
    persons: tuple[CocoPerson, ...]
    keypoint_names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]  # 1-based pairs, as in the file
    detections: tuple[CocoDetection, ...] | None = None
    detections_path: str | None = None
    coco: Any = field(default=None, repr=False)  # pycocotools.coco.COCO of the annotation file

    def persons_in(self, image_id: int) -> list[CocoPerson]:
        return [p for p in self.persons if p.image_id == image_id]


def read_coco_keypoints(root: str | Path, split: str = "val", detections: str | Path | None = None,
                        problems: Problems | None = None) -> CocoKeypoints:
    """Read one split of a COCO root (the folder holding annotations/ and {split}2017/).

    ``detections`` is a person detection-result file (a relative path is taken from the
    root); its boxes come back in ``detections``, category 1 only.
    """
    root = Path(root).absolute()
    probs = problems_or_strict(problems)
    if split not in SPLITS:
        raise probs.fatal(root, f"unknown COCO split {split!r} (one of {', '.join(SPLITS)})")
    require_dir(root, probs, "dataset root")
    img_dir = root / f"{split}2017"
    ann_path = root / "annotations" / f"person_keypoints_{split}2017.json"
    require_dir(img_dir, probs, f"{split}2017/ image folder")
    if not ann_path.is_file():
        raise probs.fatal(ann_path, "missing annotation file")
    coco = _load_coco(ann_path, probs)
    data = coco.dataset
    cat_id, names, skeleton = _person_category(data, ann_path, probs)
    declared, readable = _read_images(data, img_dir, ann_path, probs)
    images = [im for im in declared.values() if im.id in readable]
    if not declared:
        probs.add(ann_path, "lists no images")
    persons = _read_persons(data, cat_id, declared, readable, ann_path, probs)
    dets, det_path = None, None
    if detections is not None:
        det_path = Path(detections)
        if not det_path.is_absolute():
            det_path = root / det_path
        dets = tuple(_read_detections(det_path, {im.id for im in images}, probs))
    return CocoKeypoints(str(root), split, str(ann_path), tuple(images), tuple(persons), names,
                         skeleton, dets, str(det_path) if det_path else None, coco)


def _load_coco(path: Path, probs: Problems):
    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # COCO prints its progress
            return COCO(str(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise probs.fatal(path, f"unreadable json ({e})") from None
    except OSError as e:
        raise probs.fatal(path, f"unreadable file ({e})") from None
    except AssertionError:
        raise probs.fatal(path, "expected a json object with images, annotations, "
                                "categories") from None
    except (KeyError, TypeError, AttributeError) as e:
        raise probs.fatal(path, f"not a COCO annotation file (pycocotools: "
                                f"{type(e).__name__} {e})") from None


def _person_category(data: dict, path: Path, probs: Problems):
    cats = data.get("categories")
    if not isinstance(cats, list):
        raise probs.fatal(path, "categories: expected a list")
    person = [c for c in cats if isinstance(c, dict) and c.get("name") == "person"]
    if not person:
        raise probs.fatal(path, "categories: no 'person' category")
    cat = person[0]
    names = cat.get("keypoints")
    if not (isinstance(names, list) and len(names) == NUM_KEYPOINTS
            and all(isinstance(n, str) for n in names)):
        n = len(names) if isinstance(names, list) else names
        probs.add(path, f"categories (person).keypoints: expected {NUM_KEYPOINTS} names, got {n}")
        names = list(COCO_KEYPOINTS)
    skel = cat.get("skeleton", [])
    if not (isinstance(skel, list) and all(
            isinstance(p, list) and len(p) == 2 and all(_is_int(k) and 1 <= k <= NUM_KEYPOINTS
                                                         for k in p) for p in skel)):
        probs.add(path, "categories (person).skeleton: expected pairs of 1-based keypoint indices")
        skel = [list(p) for p in COCO_SKELETON]
    return cat.get("id"), tuple(names), tuple(tuple(p) for p in skel)


def _read_images(data: dict, img_dir: Path, path: Path,
                 probs: Problems) -> tuple[dict[int, CocoImage], set[int]]:
    """Every well-formed image entry by id, and the ids whose files are there (and decode)."""
    raw = data.get("images")
    if not isinstance(raw, list):
        raise probs.fatal(path, "images: expected a list")
    images: dict[int, CocoImage] = {}
    readable, seen = set(), set()
    for i, im in enumerate(raw):
        where = f"images[{i}]"
        if not isinstance(im, dict) or any(k not in im for k in IMAGE_KEYS):
            probs.add(path, f"{where}: expected an object with id, file_name, width, height")
            continue
        iid, W, H = im["id"], im["width"], im["height"]
        if not _is_int(iid) or iid in seen:
            probs.add(path, f"{where}.id: {iid!r} is not a unique integer")
            continue
        seen.add(iid)
        if not (_is_int(W) and _is_int(H) and W > 0 and H > 0):
            probs.add(path, f"{where} (id {iid}): width/height must be positive integers")
            continue
        img_path = img_dir / str(im["file_name"])
        images[iid] = CocoImage(iid, str(im["file_name"]), str(img_path), W, H)
        if not image_ok(img_path, probs, f"images[{i}] of {path.name}"):
            continue
        if probs.check_images:
            with Image.open(img_path) as pil:
                if pil.size != (W, H):
                    probs.add(path, f"{where} (id {iid}): width x height {W}x{H} differs from "
                                    f"{im['file_name']} ({pil.size[0]}x{pil.size[1]})")
                    continue
        readable.add(iid)
    return images, readable


def _read_persons(data: dict, cat_id, images: dict[int, CocoImage], readable: set[int],
                  path: Path, probs: Problems) -> list[CocoPerson]:
    """The person annotations, checked; those of unreadable images (already reported) are
    left out."""
    raw = data.get("annotations")
    if not isinstance(raw, list):
        raise probs.fatal(path, "annotations: expected a list")
    persons, seen = [], set()
    for i, a in enumerate(raw):
        where = f"annotations[{i}]"
        if not isinstance(a, dict):
            probs.add(path, f"{where}: expected an object")
            continue
        if a.get("category_id") != cat_id:
            continue
        where = f"annotations[{i}] (id {a.get('id')!r})"
        missing = [k for k in ("id", "image_id", "bbox", "keypoints", "num_keypoints", "area",
                               "iscrowd") if k not in a]
        if missing:
            probs.add(path, f"{where}: missing key(s) {', '.join(missing)}")
            continue
        if not _is_int(a["id"]) or a["id"] in seen:
            probs.add(path, f"{where}.id: not a unique integer")
            continue
        seen.add(a["id"])
        im = images.get(a["image_id"])
        if im is None:
            probs.add(path, f"{where}.image_id: {a['image_id']!r} names no image")
            continue
        box = _box(a["bbox"], f"{where}.bbox", path, probs, im.width, im.height)
        kp = a["keypoints"]
        if not (isinstance(kp, list) and len(kp) == 3 * NUM_KEYPOINTS
                and all(_is_num(v) for v in kp)):
            n = len(kp) if isinstance(kp, list) else type(kp).__name__
            probs.add(path, f"{where}.keypoints: expected {3 * NUM_KEYPOINTS} numbers "
                            f"({NUM_KEYPOINTS} x (x, y, v)), got {n}")
            continue
        kps = np.asarray(kp, np.float32).reshape(NUM_KEYPOINTS, 3)
        if not np.isin(kps[:, 2], (0, 1, 2)).all():
            probs.add(path, f"{where}.keypoints: visibility flags must be 0, 1 or 2")
            continue
        nk = int((kps[:, 2] > 0).sum())
        if a["num_keypoints"] != nk:
            probs.add(path, f"{where}.num_keypoints: {a['num_keypoints']!r}, but {nk} keypoints "
                            f"have v > 0")
            continue
        if not _is_num(a["area"]) or a["area"] < 0:
            probs.add(path, f"{where}.area: expected a non-negative number, got {a['area']!r}")
            continue
        if a["iscrowd"] not in (0, 1):
            probs.add(path, f"{where}.iscrowd: expected 0 or 1, got {a['iscrowd']!r}")
            continue
        if "segmentation" in a and not _segmentation_ok(a["segmentation"], im):
            probs.add(path, f"{where}.segmentation: expected polygons [[x, y, ...], ...] or an "
                            f"RLE {{'counts', 'size': [{im.height}, {im.width}]}}")
            continue
        if box is None or im.id not in readable:
            continue
        persons.append(CocoPerson(a["id"], im.id, box, kps, float(a["area"]),
                                  bool(a["iscrowd"]), nk))
    return persons


def _read_detections(path: Path, image_ids: set[int], probs: Problems) -> list[CocoDetection]:
    if not path.is_file():
        raise probs.fatal(path, "missing detection-result file")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise probs.fatal(path, f"unreadable json ({e})") from None
    if not isinstance(raw, list):
        raise probs.fatal(path, "expected a json list of {image_id, category_id, bbox, score}")
    dets = []
    for i, d in enumerate(raw):
        where = f"[{i}]"
        if not isinstance(d, dict) or any(k not in d for k in DETECTION_KEYS):
            probs.add(path, f"{where}: expected an object with image_id, category_id, bbox, score")
            continue
        if d["category_id"] != 1:
            continue  # not a person (mmpose keeps category 1 only)
        if d["image_id"] not in image_ids:
            probs.add(path, f"{where}.image_id: {d['image_id']!r} is not an image of the split")
            continue
        if not _is_num(d["score"]):
            probs.add(path, f"{where}.score: expected a number, got {d['score']!r}")
            continue
        box = _box(d["bbox"], f"{where}.bbox", path, probs)
        if box is not None:
            dets.append(CocoDetection(d["image_id"], box, float(d["score"])))
    return dets


def _box(b, where: str, path: Path, probs: Problems, W: int | None = None,
         H: int | None = None) -> np.ndarray | None:
    if not (isinstance(b, list) and len(b) == 4 and all(_is_num(v) for v in b)):
        n = len(b) if isinstance(b, list) else type(b).__name__
        probs.add(path, f"{where}: expected 4 numbers [x, y, w, h], got {n}")
        return None
    box = np.asarray(b, np.float32)
    if box[2] < 0 or box[3] < 0:
        probs.add(path, f"{where}: negative width or height {box.tolist()}")
        return None
    t = BOX_TOLERANCE
    if W is not None and (box[0] < -t or box[1] < -t or box[0] + box[2] > W + t
                          or box[1] + box[3] > H + t):
        probs.add(path, f"{where}: {box.tolist()} lies outside the {W}x{H} image")
        return None
    return box


def _segmentation_ok(seg, im: CocoImage) -> bool:
    if isinstance(seg, list):
        return all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0
                   and all(_is_num(v) for v in p) for p in seg)
    if isinstance(seg, dict):
        return ("counts" in seg and isinstance(seg.get("size"), list)
                and list(seg["size"]) == [im.height, im.width])
    return False


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# --------------------------------------------------------------------------------------
# Synthetic writer
# --------------------------------------------------------------------------------------
PID_BASE, CAM_BASE = 3_400_000, 800  # COCO people and cameras: nobody else's
NUM_CAMS = 10
MIN_VISIBILITY, MIN_AREA = 0.1, 40  # fainter people are left unannotated
IMAGE_ID_BASE = {"train": 100_000, "val": 500_000}
CATEGORY = {"supercategory": "person", "id": 1, "name": "person",
            "keypoints": list(COCO_KEYPOINTS), "skeleton": [list(p) for p in COCO_SKELETON]}


def write_synthetic(world, root: Path) -> dict[str, int]:
    """Write ``coco/`` as it ships (person keypoints only) plus a person detection-result
    file for val: every annotated person's box jittered and scored, a few missed, and a
    few low-scoring false positives."""
    from pycocotools import mask as mask_utils

    out = Path(root) / "coco"
    n_images = {"train": world.pick(8, 120, 1500), "val": world.pick(8, 60, 500)}
    h, w = world.pick((240, 320), (360, 480), (480, 640))
    counts: dict[str, int] = {}
    detections = []
    ann_id = 0
    for split in SPLITS:
        images, anns = [], []
        for i in range(n_images[split]):
            rng = world.rng("coco", split, i)
            iid = IMAGE_ID_BASE[split] + i + 1
            n = int(rng.integers(1, 6))
            first = PID_BASE + int(rng.integers(0, 50_000))
            kinds = rng.choice(["pedestrian", "sitting", "rider"], size=n, p=[0.8, 0.12, 0.08])
            scene = world.scene(range(first, first + n), CAM_BASE + int(rng.integers(NUM_CAMS)),
                                h, w, "coco", split, i, kinds=kinds.tolist(),
                                min_height=0.3, max_height=0.95)
            file_name = f"{iid:012d}.jpg"
            write_image(out / f"{split}2017" / file_name, scene.image)
            images.append({"id": iid, "file_name": file_name, "width": w, "height": h,
                           "license": 1, "date_captured": "2017-01-01 00:00:00"})
            for k, inst in enumerate(scene.instances):
                if inst.visibility < MIN_VISIBILITY or inst.area < MIN_AREA:
                    continue
                ann_id += 1
                mask = np.asfortranarray((scene.instances_map == k + 1).astype(np.uint8))
                rle = mask_utils.encode(mask)
                kp = inst.keypoints.copy()
                kp[kp[:, 2] == 0, :2] = 0  # COCO stores unlabelled keypoints as (0, 0, 0)
                x, y, bw, bh = (float(v) for v in inst.box)
                x1, y1 = min(x + bw, w), min(y + bh, h)
                x, y = max(x, 0.0), max(y, 0.0)
                anns.append({
                    "id": ann_id, "image_id": iid, "category_id": 1, "iscrowd": 0,
                    "bbox": [_r(x), _r(y), _r(x1 - x), _r(y1 - y)],
                    "area": int(inst.area),
                    "keypoints": [v for row in kp for v in (_r(row[0]), _r(row[1]), int(row[2]))],
                    "num_keypoints": int((kp[:, 2] > 0).sum()),
                    "segmentation": {"size": [int(rle["size"][0]), int(rle["size"][1])],
                                     "counts": rle["counts"].decode("ascii")},
                })
            if split == "val":
                mine = [a for a in anns if a["image_id"] == iid]
                detections += _detections(world, iid, mine, w, h)
        doc = {"info": {"description": "hcbench synthetic COCO person keypoints", "version": "1.0",
                        "year": 2017},
               "licenses": [{"id": 1, "name": "synthetic", "url": ""}],
               "images": images, "annotations": anns, "categories": [CATEGORY]}
        atomic_write_text(out / "annotations" / f"person_keypoints_{split}2017.json",
                          json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n")
        counts[f"{split}_images"] = len(images)
        counts[f"{split}_persons"] = len(anns)
        counts[f"{split}_persons_with_keypoints"] = sum(a["num_keypoints"] > 0 for a in anns)
    atomic_write_text(out / DETECTIONS_FILE, json.dumps(detections, sort_keys=True) + "\n")
    counts["val_detections"] = len(detections)
    return counts


def _detections(world, iid: int, anns: list[dict], w: int, h: int) -> list[dict]:
    rng = world.rng("coco", "detections", iid)
    dets = []
    for a in anns:
        if rng.uniform() < 0.08:  # missed
            continue
        x, y, bw, bh = a["bbox"]
        jx, jy = rng.normal(0, 0.04, 2) * (bw, bh)
        sw, sh = np.exp(rng.normal(0, 0.05, 2))
        dets.append(_det(iid, x + jx, y + jy, bw * sw, bh * sh, rng.uniform(0.55, 1.0), w, h))
    for _ in range(int(rng.integers(0, 3))):  # false positives
        bh = rng.uniform(0.15, 0.5) * h
        bw = bh * rng.uniform(0.3, 0.6)
        dets.append(_det(iid, rng.uniform(0, w - bw), rng.uniform(0, h - bh), bw, bh,
                         rng.uniform(0.05, 0.5), w, h))
    return dets


def _det(iid: int, x: float, y: float, bw: float, bh: float, score: float, w: int, h: int) -> dict:
    x0, y0 = max(0.0, float(x)), max(0.0, float(y))
    x1, y1 = min(float(w), float(x + bw)), min(float(h), float(y + bh))
    return {"image_id": iid, "category_id": 1, "bbox": [_r(x0), _r(y0), _r(x1 - x0), _r(y1 - y0)],
            "score": round(float(score), 5)}


def _r(v) -> float:
    return round(float(v), 2)
