"""Pretraining pools: LUPerson-style unlabeled crops, LUPerson-TA-style image + text +
attributes, and ImageNet-style class folders.

LUPerson (Fu et al., CVPR 2021) is used by SOLIDER through torchvision's ImageFolder, so
its root is any folder of images, read recursively; a ``list.txt`` of relative paths, when
present, selects and orders them instead (the way subsets such as LUP1M are shared).

LUPerson-TA (the text- and attribute-annotated LUPerson of VAL-PAT) has no public release
format; ours is ``images/`` plus ``annotations.json``::

    {"attribute_names": ["Female", ...],
     "items": [{"image": "images/000/000001.jpg", "caption": "A man ...", "attributes": [0, 1, ...]}]}

ImageNet: ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG``; classes are the sorted wnid
folders, as torchvision's ImageFolder numbers them.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.data.base import (DataError, Problems, check_image, image_ok, problems_or_strict,
                             require_dir, require_file, write_image)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
POOL_PID_BASE = 1_000_000  # pool identities are nobody in any downstream dataset


@dataclass(frozen=True)
class ImagePool:
    name: str
    root: str
    images: tuple[str, ...]


@dataclass(frozen=True)
class ImageTextPool:
    name: str
    root: str
    images: tuple[str, ...]
    captions: tuple[str, ...]
    attribute_names: tuple[str, ...]
    attributes: np.ndarray  # (N, A) uint8


@dataclass(frozen=True)
class ClassFolders:
    name: str
    root: str
    classes: tuple[str, ...]
    train: tuple[tuple[str, int], ...]
    val: tuple[tuple[str, int], ...]


def read_luperson(root: str | Path, problems: Problems | None = None) -> ImagePool:
    root = Path(root)
    probs = problems_or_strict(problems)
    require_dir(root, probs, "dataset root")
    list_file = root / "list.txt"
    if list_file.is_file():
        try:
            lines = list_file.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise probs.fatal(list_file, f"unreadable list file ({e})") from None
        images = []
        for n, line in enumerate(lines, 1):
            rel = line.strip()
            if not rel:
                continue
            p = root / rel
            if image_ok(p, probs, f"listed in list.txt line {n}"):
                images.append(str(p))
    else:
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        images = [str(p) for p in files if not probs.check_images or check_image(p, probs)]
    if not images:
        probs.add(root, "no images found")
    return ImagePool("luperson", str(root), tuple(images))


def read_luperson_ta(root: str | Path, problems: Problems | None = None) -> ImageTextPool:
    root = Path(root)
    probs = problems_or_strict(problems)
    require_dir(root, probs, "dataset root")
    ann = root / "annotations.json"
    if not require_file(ann, probs, "annotations.json"):
        raise DataError(f"{ann}: missing annotations.json")
    try:
        data = json.loads(ann.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise probs.fatal(ann, f"malformed json ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("attribute_names"), list) \
            or not isinstance(data.get("items"), list):
        raise probs.fatal(ann, "expected an object with 'attribute_names' and 'items' lists")
    names = tuple(str(a) for a in data["attribute_names"])
    images, captions, attrs = [], [], []
    for i, item in enumerate(data["items"]):
        where = f"{ann}: items[{i}]"
        if not isinstance(item, dict) or not {"image", "caption", "attributes"} <= set(item):
            probs.add(where, "expected image, caption and attributes")
            continue
        a = item["attributes"]
        if not isinstance(a, list) or len(a) != len(names) or any(v not in (0, 1) for v in a):
            probs.add(where, f"attributes must be {len(names)} values of 0 or 1")
            continue
        if not isinstance(item["caption"], str) or not item["caption"].strip():
            probs.add(where, "empty caption")
            continue
        p = root / item["image"]
        if not image_ok(p, probs, where):
            continue
        images.append(str(p))
        captions.append(item["caption"])
        attrs.append(a)
    if not images:
        probs.add(ann, "no usable items")
    return ImageTextPool("luperson_ta", str(root), tuple(images), tuple(captions), names,
                         np.array(attrs, dtype=np.uint8).reshape(len(attrs), len(names)))


def read_imagenet(root: str | Path, problems: Problems | None = None) -> ClassFolders:
    root = Path(root)
    probs = problems_or_strict(problems)
    require_dir(root, probs, "dataset root")
    require_dir(root / "train", probs, "train/ folder")
    classes = tuple(sorted(d.name for d in (root / "train").iterdir() if d.is_dir()))
    if not classes:
        raise probs.fatal(root / "train", "no class folders")
    index = {c: i for i, c in enumerate(classes)}
    splits: dict[str, list[tuple[str, int]]] = {}
    for split in ("train", "val"):
        d = root / split
        if split == "val" and not d.is_dir():
            splits[split] = []
            continue
        items = []
        for cdir in sorted(p for p in d.iterdir() if p.is_dir()):
            if cdir.name not in index:
                probs.add(cdir, f"class folder not among train/'s {len(classes)} classes")
                continue
            for f in sorted(cdir.iterdir()):
                if f.suffix.lower() in IMAGE_SUFFIXES and (
                        not probs.check_images or check_image(f, probs)):
                    items.append((str(f), index[cdir.name]))
        splits[split] = items
    return ClassFolders("imagenet", str(root), classes, tuple(splits["train"]),
                        tuple(splits["val"]))


# --------------------------------------------------------------------------------------
# Synthetic writers
# --------------------------------------------------------------------------------------
SHAPES = ("disc", "square", "triangle", "ring", "cross", "diamond", "star", "bars", "hexagon",
          "crescent")


def _shape_image(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """A non-human object: one coloured shape on a textured background."""
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    cx, cy = rng.uniform(0.35, 0.65, 2)
    r = rng.uniform(0.2, 0.33)
    ang = rng.uniform(0, 2 * math.pi)
    dx, dy = xx - cx, yy - cy
    u = dx * math.cos(ang) + dy * math.sin(ang)
    v = -dx * math.sin(ang) + dy * math.cos(ang)
    rho, theta = np.hypot(dx, dy), np.arctan2(v, u)
    mask = {
        "disc": rho < r,
        "square": (np.abs(u) < r * 0.8) & (np.abs(v) < r * 0.8),
        "triangle": (v > -r * 0.5) & (v < r - np.abs(u) * 1.7),
        "ring": (rho < r) & (rho > r * 0.6),
        "cross": ((np.abs(u) < r * 0.25) & (np.abs(v) < r)) | ((np.abs(v) < r * 0.25) & (np.abs(u) < r)),
        "diamond": np.abs(u) + np.abs(v) < r,
        "star": rho < r * (0.6 + 0.4 * np.cos(5 * theta)),
        "bars": (np.abs(v) < r) & (np.abs(u) < r) & ((np.floor((u + r) / (r / 2.5)) % 2) == 0),
        "hexagon": np.max(np.stack([np.abs(u * math.cos(a) + v * math.sin(a))
                                    for a in (0, math.pi / 3, 2 * math.pi / 3)]), 0) < r * 0.85,
        "crescent": (rho < r) & (np.hypot(u - r * 0.45, v) > r * 0.8),
    }[kind]
    bg = rng.uniform(30, 220, 3) * (0.8 + 0.2 * yy[..., None]) + rng.normal(0, 12, (size, size, 3))
    img = np.where(mask[..., None], rng.uniform(20, 235, 3), bg)
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


def write_synthetic(world, root: Path) -> dict[str, int]:
    """LUPerson/ (unlabeled crops), LUPerson-TA/ (crops, captions, attributes), imagenet/."""
    from bench.data.synth.people import PA100K_ATTRIBUTES

    root = Path(root)
    h, w = world.pick((128, 64), (256, 128), (256, 128))
    n_pool = world.pick(240, 2000, 20000)
    n_cams = 12
    lup = root / "LUPerson" / "images"
    for i in range(n_pool):  # LUPerson: many people, seldom the same twice
        pid = POOL_PID_BASE + i // 2
        crop = world.crop(pid, int(world.rng("luperson", i).integers(n_cams)), h, w, "lup", i)
        write_image(lup / f"{i // 1000:03d}" / f"{i:06d}.jpg", crop.image)
    n_ta = world.pick(160, 1500, 15000)
    items = []
    ta = root / "LUPerson-TA"
    for i in range(n_ta):
        pid = POOL_PID_BASE + 500_000 + i
        crop = world.crop(pid, int(world.rng("lupta", i).integers(n_cams)), h, w, "lupta", i)
        rel = f"images/{i // 1000:03d}/{i:06d}.jpg"
        write_image(ta / rel, crop.image)
        ident = world.identity(pid)
        items.append({"image": rel, "caption": ident.caption(),
                      "attributes": ident.attribute_vector(crop.view).tolist()})
    (ta / "annotations.json").write_text(json.dumps(
        {"attribute_names": list(PA100K_ATTRIBUTES), "items": items}, sort_keys=True) + "\n")
    per_class = world.pick((16, 4), (100, 20), (600, 50))
    size = world.pick(64, 96, 128)
    inet = root / "imagenet"
    for c, kind in enumerate(SHAPES):
        wnid = f"n{90000000 + c:08d}"
        for split, n in zip(("train", "val"), per_class):
            for i in range(n):
                img = _shape_image(kind, world.rng("imagenet", split, c, i), size)
                write_image(inet / split / wnid / f"{wnid}_{i}.JPEG", img)
    return {"luperson": n_pool, "luperson_ta": n_ta, "imagenet_classes": len(SHAPES),
            "imagenet_train": per_class[0] * len(SHAPES), "imagenet_val": per_class[1] * len(SHAPES)}
