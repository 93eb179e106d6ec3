"""LIP, Look Into Person (Gong et al., CVPR 2017), single-person human parsing, as it ships::

    LIP/TrainVal_images/train_images/77_471474.jpg
                        val_images/
                        train_id.txt  val_id.txt
        TrainVal_parsing_annotations/train_segmentations/77_471474.png
                                     val_segmentations/

Each id list holds one image id per line.  A mask is a single-channel PNG the size of its
image whose values are the 20 LIP classes (``LIP_CLASSES``, 0 background).  SCHP
(Self-Correction-Human-Parsing) reads a flattened copy (``<root>/{train,val}_images/``,
``{train,val}_segmentations/``, ``{train,val}_id.txt``); :func:`read_lip` accepts both,
and id lists lying at the root beside the shipped folders.  Horizontal flips swap the
left/right classes in ``FLIP_PAIRS`` (SCHP's pairs: arms, legs, shoes).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from bench.data.base import (DataError, Problems, image_ok, problems_or_strict, require_dir,
                             write_image)
from bench.data.synth.render import LIP_CLASSES
from bench.io import atomic_write_text

NUM_CLASSES = len(LIP_CLASSES)  # 20
FLIP_PAIRS = ((14, 15), (16, 17), (18, 19))  # Left/Right-arm, -leg, -shoe
SPLITS = ("train", "val")


@dataclass(frozen=True)
class LipSample:
    id: str
    image_path: str  # absolute
    mask_path: str  # absolute


def flip_labels(mask: np.ndarray) -> np.ndarray:
    """A label map mirrored left-right, with left and right classes swapped."""
    lut = np.arange(256, dtype=np.uint8)
    for a, b in FLIP_PAIRS:
        lut[a], lut[b] = b, a
    return lut[np.ascontiguousarray(mask[:, ::-1])]


def _layout(root: Path, split: str) -> tuple[Path, Path, Path]:
    """(image folder, mask folder, id list) for the shipped or SCHP's flattened layout."""
    shipped = root / "TrainVal_images"
    if shipped.is_dir() or not (root / f"{split}_images").is_dir():
        id_list = shipped / f"{split}_id.txt"
        if not id_list.is_file() and (root / f"{split}_id.txt").is_file():
            id_list = root / f"{split}_id.txt"
        return (shipped / f"{split}_images",
                root / "TrainVal_parsing_annotations" / f"{split}_segmentations", id_list)
    return root / f"{split}_images", root / f"{split}_segmentations", root / f"{split}_id.txt"


def read_lip(root: str | Path, split: str = "val",
             problems: Problems | None = None) -> list[LipSample]:
    """Read one split of a LIP root: the samples its id list names, in list order.

    With a checking :class:`Problems` (``check_images``) every image is decoded and every
    mask opened: single channel, the image's size, values 0..19.  Without it files are
    only required to exist; :func:`load_mask` makes the same checks when a mask is used.
    """
    root = Path(root).absolute()
    probs = problems_or_strict(problems)
    if split not in SPLITS:
        raise probs.fatal(root, f"unknown LIP split {split!r} (one of {', '.join(SPLITS)})")
    require_dir(root, probs, "dataset root")
    img_dir, mask_dir, id_list = _layout(root, split)
    require_dir(img_dir, probs, f"{split}_images/ folder")
    require_dir(mask_dir, probs, f"{split}_segmentations/ folder")
    if not id_list.is_file():
        raise probs.fatal(id_list, "missing id list")
    try:
        lines = id_list.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise probs.fatal(id_list, f"unreadable id list ({e})") from None
    samples, seen = [], {}
    for n, line in enumerate(lines, 1):
        sid = line.strip()
        if not sid:
            continue
        where = f"{id_list}:{n}"
        if len(sid.split()) != 1 or "/" in sid:
            probs.add(where, f"expected one image id per line, got {line.strip()!r}")
            continue
        if sid in seen:
            probs.add(where, f"id {sid!r} repeats line {seen[sid]}")
            continue
        seen[sid] = n
        image, mask = img_dir / f"{sid}.jpg", mask_dir / f"{sid}.png"
        ok = image_ok(image, probs, f"listed in {id_list.name} line {n}")
        if not mask.is_file():
            probs.add(mask, f"missing mask (listed in {id_list.name} line {n})")
            ok = False
        elif ok and probs.check_images:
            try:
                load_mask(mask, _image_size(image))
            except DataError as e:
                probs.add(mask, str(e).removeprefix(f"{mask}: "))
                ok = False
        if ok:
            samples.append(LipSample(sid, str(image), str(mask)))
    if not seen:
        probs.add(id_list, "lists no ids")
    return samples


def load_mask(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A LIP mask as uint8 (H, W); checks mode, ``size`` (W, H) if given and class range."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P"):
                raise DataError(f"{path}: mask must be a single-channel PNG, got mode {im.mode}")
            if size is not None and im.size != tuple(size):
                raise DataError(f"{path}: mask is {im.size[0]}x{im.size[1]}, "
                                f"its image {size[0]}x{size[1]}")
            arr = np.asarray(im)
    except FileNotFoundError:
        raise DataError(f"{path}: missing mask") from None
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise DataError(f"{path}: unreadable mask ({e})") from None
    top = int(arr.max()) if arr.size else 0
    if top >= NUM_CLASSES:
        raise DataError(f"{path}: label {top} out of range 0..{NUM_CLASSES - 1}")
    return arr.astype(np.uint8, copy=False)


def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


# --------------------------------------------------------------------------------------
# Synthetic writer
# --------------------------------------------------------------------------------------
PID_BASE, CAM_BASE = 3_200_000, 700  # LIP people and cameras: nobody else's
NUM_CAMS = 8


def write_synthetic(world, root: Path) -> dict[str, int]:
    """Write ``LIP/`` as it ships: single-person crops of varied size and aspect (a quarter
    of them cut to the upper body, as many LIP images are) with their part label maps."""
    out = Path(root) / "LIP"
    sizes = {"train": world.pick(32, 400, 4000), "val": world.pick(16, 100, 1000)}
    lo, hi = world.pick((96, 224), (128, 384), (160, 512))
    counts: dict[str, int] = {}
    for s, split in enumerate(SPLITS):
        ids = []
        for i in range(sizes[split]):
            rng = world.rng("lip", split, i)
            pid = PID_BASE + 100_000 * s + i
            h = int(rng.integers(lo, hi + 1))
            w = max(24, int(round(h * rng.uniform(0.4, 0.85))))
            crop = world.crop(pid, CAM_BASE + int(rng.integers(NUM_CAMS)), h, w, "lip", split, i)
            image, labels = crop.image, crop.labels
            if rng.uniform() < 0.25:  # upper body only
                keep = int(round(h * rng.uniform(0.45, 0.7)))
                image, labels = image[:keep], labels[:keep]
            sid = f"{100 + i + 10_000 * s}_{int(rng.integers(100_000, 1_000_000))}"
            write_image(out / "TrainVal_images" / f"{split}_images" / f"{sid}.jpg",
                        np.ascontiguousarray(image))
            write_image(out / "TrainVal_parsing_annotations" / f"{split}_segmentations" /
                        f"{sid}.png", np.ascontiguousarray(labels))
            ids.append(sid)
        atomic_write_text(out / "TrainVal_images" / f"{split}_id.txt",
                          "".join(f"{sid}\n" for sid in ids))
        counts[f"{split}_images"] = len(ids)
    return counts
