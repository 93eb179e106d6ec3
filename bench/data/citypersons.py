"""CityPersons pedestrian detection (Zhang et al., CVPR 2017), as it ships on top of Cityscapes::

    CityPersons/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
                gtBboxCityPersons/{train,val}/<city>/<city>_<seq>_<frame>_gtBboxCityPersons.json

Each annotation file is cityscapesScripts' bounding-box annotation (``CsBbox``)::

    {"imgHeight": 1024, "imgWidth": 2048,
     "objects": [{"label": "pedestrian", "instanceId": 24001,
                  "bbox": [x, y, w, h], "bboxVis": [x, y, w, h]}, ...]}

``label`` is one of ``pedestrian``, ``rider``, ``sitting person``, ``person (other)``,
``person group`` or ``ignore`` (fake humans: posters, reflections).  For pedestrians and
riders ``bbox`` is the full body, occluded parts included; for the other labels it equals
the visible box ``bboxVis``.  ``instanceId`` is the Cityscapes instance id
(class id x 1000 + n: 24xxx persons, 25xxx riders), the bare class id 24 for a person
group and 0 for an ignore region.

The standard evaluation (``eval_MR_multisetup.py`` over the COCO-style ``val_gt.json``;
Pedestron's converter builds the same) keeps only ``pedestrian`` boxes as regular ground
truth; every other box is an ignore region (``ignore=1``, matched with
intersection-over-detection-area).  On top of that each setup (``SETUPS``) ignores
pedestrians outside its height and visibility ranges, where height is the full box's and
visibility is ``area(bboxVis) / area(bbox)``.  Records carry ``ignore`` (the label rule);
:meth:`CityPersonsObject.ignored_in` adds a setup's ranges.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.data.base import Problems, image_ok, problems_or_strict, require_dir, write_image
from bench.io import atomic_write_text

LABELS = ("pedestrian", "rider", "sitting person", "person (other)", "person group", "ignore")
SPLITS = ("train", "val")
# eval_MR_multisetup.py's setups: (height range px, visibility range), bounds inclusive.
SETUPS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "Reasonable": ((50.0, math.inf), (0.65, math.inf)),
    "Reasonable_small": ((50.0, 75.0), (0.65, math.inf)),
    "Reasonable_occ=heavy": ((50.0, math.inf), (0.2, 0.65)),
    "All": ((20.0, math.inf), (0.2, math.inf)),
}
NAME_RE = re.compile(r"^([a-z_]+)_(\d{6})_(\d{6})_gtBboxCityPersons\.json$")
IMAGE_SUFFIX = "_leftImg8bit.png"
ANN_SUFFIX = "_gtBboxCityPersons.json"
BOX_TOLERANCE = 1.0  # pixels a visible box may poke past the image border


@dataclass(frozen=True, eq=False)
class CityPersonsObject:
    label: str
    bbox: np.ndarray  # (4,) float32 x, y, w, h: full body for pedestrians and riders
    bbox_vis: np.ndarray  # (4,) float32 x, y, w, h: visible pixels' extent
    instance_id: int
    ignore: bool  # not a pedestrian: an ignore region under the standard evaluation

    @property
    def height(self) -> float:
        return float(self.bbox[3])

    @property
    def vis_ratio(self) -> float:
        """Visible box area over full box area, as the evaluation's ``vis_ratio``."""
        full = float(self.bbox[2]) * float(self.bbox[3])
        return float(self.bbox_vis[2]) * float(self.bbox_vis[3]) / full if full > 0 else 0.0

    def ignored_in(self, setup: str = "Reasonable") -> bool:
        """Whether the evaluation under ``setup`` treats this box as an ignore region."""
        (h0, h1), (v0, v1) = SETUPS[setup]
        return (self.ignore or not h0 <= self.height <= h1
                or not v0 <= self.vis_ratio <= v1)


@dataclass(frozen=True, eq=False)
class CityPersonsImage:
    name: str  # <city>_<seq>_<frame>
    city: str
    image_path: str  # absolute
    ann_path: str  # absolute
    width: int
    height: int
    objects: tuple[CityPersonsObject, ...]

    def boxes(self, setup: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(N, 4) float32 full boxes and (N,) bool ignore flags, under ``setup`` if given."""
        boxes = np.array([o.bbox for o in self.objects], np.float32).reshape(-1, 4)
        ign = np.array([o.ignored_in(setup) if setup else o.ignore for o in self.objects], bool)
        return boxes, ign


def read_citypersons(root: str | Path, split: str = "val",
                     problems: Problems | None = None) -> list[CityPersonsImage]:
    """Read one split of a CityPersons root (the folder holding leftImg8bit/ and
    gtBboxCityPersons/): every annotated image, its objects, in file-name order."""
    root = Path(root).absolute()
    probs = problems_or_strict(problems)
    if split not in SPLITS:
        raise probs.fatal(root, f"unknown CityPersons split {split!r} (one of {', '.join(SPLITS)})")
    require_dir(root, probs, "dataset root")
    ann_dir, img_dir = root / "gtBboxCityPersons" / split, root / "leftImg8bit" / split
    require_dir(ann_dir, probs, f"gtBboxCityPersons/{split}/ folder")
    require_dir(img_dir, probs, f"leftImg8bit/{split}/ folder")
    images = []
    for ann_path in sorted(ann_dir.glob(f"*/*{ANN_SUFFIX}")):
        rec = _read_annotation(ann_path, img_dir, probs)
        if rec is not None:
            images.append(rec)
    if not images:
        probs.add(ann_dir, f"no <city>/*{ANN_SUFFIX} annotation files")
    return images


def _read_annotation(path: Path, img_dir: Path, probs: Problems) -> CityPersonsImage | None:
    city = path.parent.name
    m = NAME_RE.match(path.name)
    if not m:
        probs.add(path, f"file name does not match <city>_<seq>_<frame>{ANN_SUFFIX}")
        return None
    if m.group(1) != city:
        probs.add(path, f"file name names city {m.group(1)!r} but it lies in folder {city!r}")
        return None
    name = path.name[: -len(ANN_SUFFIX)]
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        probs.add(path, f"unreadable json ({e})")
        return None
    if not isinstance(data, dict):
        probs.add(path, f"expected a json object, got {type(data).__name__}")
        return None
    missing = [k for k in ("imgHeight", "imgWidth", "objects") if k not in data]
    if missing:
        probs.add(path, f"missing key(s) {', '.join(missing)}")
        return None
    W, H = data["imgWidth"], data["imgHeight"]
    if not (_is_int(W) and _is_int(H) and W > 0 and H > 0):
        probs.add(path, f"imgWidth/imgHeight must be positive integers, got {W!r}/{H!r}")
        return None
    if not isinstance(data["objects"], list):
        probs.add(path, "objects: expected a list")
        return None
    objects, ok, seen_ids = [], True, {}
    for i, obj in enumerate(data["objects"]):
        o = _read_object(obj, f"objects[{i}]", path, W, H, probs)
        if o is None:
            ok = False
            continue
        if o.instance_id >= 1000:  # per-instance ids (not group / ignore class ids)
            if o.instance_id in seen_ids:
                probs.add(path, f"objects[{i}].instanceId: {o.instance_id} repeats "
                                f"objects[{seen_ids[o.instance_id]}]")
                ok = False
                continue
            seen_ids[o.instance_id] = i
        objects.append(o)
    image_path = img_dir / city / f"{name}{IMAGE_SUFFIX}"
    if not image_ok(image_path, probs, f"annotated by {path.name}"):
        return None
    if probs.check_images and not _size_matches(image_path, W, H, path, probs):
        return None
    if not ok:
        return None
    return CityPersonsImage(name, city, str(image_path), str(path), int(W), int(H), tuple(objects))


def _read_object(obj, where: str, path: Path, W: int, H: int,
                 probs: Problems) -> CityPersonsObject | None:
    if not isinstance(obj, dict):
        probs.add(path, f"{where}: expected an object, got {type(obj).__name__}")
        return None
    missing = [k for k in ("label", "bbox", "bboxVis", "instanceId") if k not in obj]
    if missing:
        probs.add(path, f"{where}: missing key(s) {', '.join(missing)}")
        return None
    label = obj["label"]
    if label not in LABELS:
        probs.add(path, f"{where}.label: unknown label {label!r} (one of {', '.join(LABELS)})")
        return None
    if not _is_int(obj["instanceId"]) or obj["instanceId"] < 0:
        probs.add(path, f"{where}.instanceId: expected a non-negative integer, "
                        f"got {obj['instanceId']!r}")
        return None
    boxes = []
    for key in ("bbox", "bboxVis"):
        b = obj[key]
        if not (isinstance(b, list) and len(b) == 4 and all(_is_num(v) for v in b)):
            n = len(b) if isinstance(b, list) else type(b).__name__
            probs.add(path, f"{where}.{key}: expected 4 numbers [x, y, w, h], got {n}")
            return None
        boxes.append(np.asarray(b, np.float32))
    full, vis = boxes
    # The full (amodal) box of someone cut by the border may reach past it; it must have a
    # size and overlap the image.  The visible box comes from pixels: inside the image.
    if full[2] <= 0 or full[3] <= 0:
        probs.add(path, f"{where}.bbox: width and height must be positive, got {full.tolist()}")
        return None
    if full[0] >= W or full[1] >= H or full[0] + full[2] <= 0 or full[1] + full[3] <= 0:
        probs.add(path, f"{where}.bbox: {full.tolist()} lies outside the {W}x{H} image")
        return None
    t = BOX_TOLERANCE
    if (vis[2] < 0 or vis[3] < 0 or vis[0] < -t or vis[1] < -t
            or vis[0] + vis[2] > W + t or vis[1] + vis[3] > H + t):
        probs.add(path, f"{where}.bboxVis: {vis.tolist()} is not a box inside the {W}x{H} image")
        return None
    return CityPersonsObject(label, full, vis, int(obj["instanceId"]), label != "pedestrian")


def _size_matches(image_path: Path, W: int, H: int, ann_path: Path, probs: Problems) -> bool:
    from PIL import Image

    with Image.open(image_path) as im:
        size = im.size
    if size != (W, H):
        probs.add(ann_path, f"imgWidth x imgHeight {W}x{H} differs from the image "
                            f"{image_path.name} ({size[0]}x{size[1]})")
        return False
    return True


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# --------------------------------------------------------------------------------------
# Synthetic writer
# --------------------------------------------------------------------------------------
PID_BASE, CAM_BASE = 3_000_000, 600  # CityPersons people and street cameras: nobody else's
CITIES = {"train": ("aachen", "bochum"), "val": ("frankfurt", "lindau")}
KIND_LABEL = {"pedestrian": "pedestrian", "rider": "rider", "sitting": "sitting person"}
# count keys for the labels the writer produces (it has no unusual postures: no "person (other)")
COUNTED = {"pedestrian": "pedestrian", "rider": "rider", "sitting person": "sitting",
           "person group": "group", "ignore": "ignore"}
CLASS_ID = {"pedestrian": 24, "sitting person": 24, "person (other)": 24, "rider": 25}
TINY = 0.02  # full height below this fraction of the image: an "ignore" region (20 px at 1024)
GROUP_IOU, GROUP_MIN = 0.3, 3  # >= 3 pedestrians linked by box IoU >= 0.3: a "person group"


def write_synthetic(world, root: Path) -> dict[str, int]:
    """Write ``CityPersons/`` as it ships: street scenes in two cities per split.

    Each scene holds pedestrians, a few riders and sitting people at depths from far
    (small, near the horizon) to near.  People smaller than ``TINY`` of the image height
    become ``ignore`` regions; clusters of overlapping pedestrians become one
    ``person group`` box over their visible extents, as the annotators did.  People with
    no visible pixel are not annotated.
    """
    out = Path(root) / "CityPersons"
    h, w = world.pick((256, 512), (512, 1024), (1024, 2048))
    per_city = world.pick(3, 12, 60)
    counts: dict[str, int] = {}
    for split in SPLITS:
        counts[f"{split}_images"] = counts[f"{split}_objects"] = 0
        for slug in COUNTED.values():
            counts[f"{split}_{slug}"] = 0
        for c, city in enumerate(CITIES[split]):
            cam = CAM_BASE + 10 * SPLITS.index(split) + c
            for seq in range(per_city):
                name = f"{city}_{seq:06d}_{19:06d}"
                objects, image = _synthetic_scene(world, split, city, cam, seq, h, w)
                write_image(out / "leftImg8bit" / split / city / f"{name}{IMAGE_SUFFIX}", image)
                doc = {"imgHeight": h, "imgWidth": w, "objects": objects}
                atomic_write_text(out / "gtBboxCityPersons" / split / city / f"{name}{ANN_SUFFIX}",
                                  json.dumps(doc, indent=4, sort_keys=True) + "\n")
                counts[f"{split}_images"] += 1
                counts[f"{split}_objects"] += len(objects)
                for o in objects:
                    counts[f"{split}_{COUNTED[o['label']]}"] += 1
    return counts


def _synthetic_scene(world, split: str, city: str, cam: int, seq: int, h: int, w: int):
    rng = world.rng("citypersons", split, city, seq)
    crowded = seq % 3 == 2  # every third frame: a busy crossing
    n = int(rng.integers(18, 25)) if crowded else int(rng.integers(6, 11))
    kinds = rng.choice(["pedestrian", "rider", "sitting"], size=n, p=[0.8, 0.12, 0.08]).tolist()
    first = PID_BASE + int(rng.integers(0, 50_000))
    scene = world.scene(range(first, first + n), cam, h, w, "citypersons", split, city, seq,
                        kinds=kinds, min_height=0.01, max_height=0.75)
    people = [(i, inst) for i, inst in enumerate(scene.instances)
              if inst.area > 0 and inst.vis_box[2] > 0 and inst.vis_box[3] > 0]
    tiny = {i for i, inst in people if inst.box[3] < TINY * h}
    groups = _groups([(i, inst) for i, inst in people
                      if inst.kind == "pedestrian" and i not in tiny])
    grouped = {i for g in groups for i in g}
    objects, serial = [], {24: 0, 25: 0}
    for i, inst in people:
        if i in grouped:
            continue
        vis = _ints(inst.vis_box)
        if i in tiny:
            objects.append({"label": "ignore", "instanceId": 0, "bbox": vis, "bboxVis": vis})
            continue
        label = KIND_LABEL[inst.kind]
        cls = CLASS_ID[label]
        full = _ints(inst.box) if label in ("pedestrian", "rider") else vis
        objects.append({"label": label, "instanceId": cls * 1000 + serial[cls],
                        "bbox": full, "bboxVis": vis})
        serial[cls] += 1
    for g in groups:
        boxes = np.array([scene.instances[i].vis_box for i in g], np.float64)
        x0, y0 = boxes[:, 0].min(), boxes[:, 1].min()
        x1, y1 = (boxes[:, 0] + boxes[:, 2]).max(), (boxes[:, 1] + boxes[:, 3]).max()
        box = _ints((x0, y0, x1 - x0, y1 - y0))
        objects.append({"label": "person group", "instanceId": 24, "bbox": box, "bboxVis": box})
    return objects, scene.image


def _groups(people) -> list[list[int]]:
    """Connected components (size >= GROUP_MIN) of people linked by full-box IoU."""
    idx = [i for i, _ in people]
    boxes = np.array([inst.box for _, inst in people], np.float64).reshape(-1, 4)
    parent = list(range(len(idx)))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a in range(len(idx)):
        for b in range(a + 1, len(idx)):
            if _iou(boxes[a], boxes[b]) >= GROUP_IOU:
                parent[find(a)] = find(b)
    comps: dict[int, list[int]] = {}
    for a in range(len(idx)):
        comps.setdefault(find(a), []).append(idx[a])
    return [sorted(c) for c in comps.values() if len(c) >= GROUP_MIN]


def _iou(a, b) -> float:
    ix = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    iy = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _ints(box) -> list[int]:
    return [int(round(float(v))) for v in box]
