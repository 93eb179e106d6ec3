"""Text-based person search: CUHK-PEDES, as it ships.

CUHK-PEDES (Li et al., "Person Search with Natural Language Description", CVPR 2017)::

    CUHK-PEDES/reid_raw.json
               imgs/CUHK01/0363004.png
                    CUHK03/1344_1.jpg  Market/...  test_query/p5846_s7727.jpg  train_query/...

``reid_raw.json`` is one list with an object per image::

    {"split": "train", "captions": ["A woman ...", "The girl ..."], "file_path": "CUHK01/0363004.png",
     "processed_tokens": [[...], [...]], "id": 1}

``file_path`` is relative to ``imgs/``, ``id`` the identity (1-13,003; the splits are
identity-disjoint: 11,003 train, 1,000 val, 1,000 test), ``split`` one of ``train``,
``val``, ``test``, ``captions`` the image's descriptions (two, by different annotators).
``processed_tokens`` is the authors' tokenisation; it is not read (every text-based person
search codebase tokenises the captions itself).  This is the file IRRA (Jiang & Ye, CVPR
2023, ``datasets/cuhkpedes.py``) and its successors read; ids are kept as written (IRRA
renumbers the training ones from 0 for its identity loss, which changes nothing here).
ICFG-PEDES (``ICFG-PEDES.json``) and RSTPReid (``data_captions.json``, ``img_path``) ship
the same record with other file names; they are not read yet.

The synthetic writer renders identities of the world (one caption per image,
``Identity.caption()``: the world's people have one description each, so the images of a
person share their caption).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bench.data.base import Problems, image_ok, problems_or_strict, require_dir, write_image

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class PedesImage:
    path: str
    pid: int
    captions: tuple[str, ...]


@dataclass(frozen=True)
class PedesDataset:
    name: str
    root: str
    train: tuple[PedesImage, ...]
    val: tuple[PedesImage, ...]
    test: tuple[PedesImage, ...]

    @property
    def images(self) -> tuple[str, ...]:
        return tuple(im.path for part in (self.train, self.val, self.test) for im in part)

    def split(self, name: str) -> tuple[PedesImage, ...]:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def read_cuhk_pedes(root: str | Path, problems: Problems | None = None) -> PedesDataset:
    """Read a CUHK-PEDES root (the folder holding ``reid_raw.json`` and ``imgs/``)."""
    root = Path(root)
    probs = problems_or_strict(problems)
    require_dir(root, probs, "dataset root")
    ann = root / "reid_raw.json"
    if not ann.is_file():
        raise probs.fatal(ann, "missing reid_raw.json")
    require_dir(root / "imgs", probs, "imgs/ folder")
    try:
        data = json.loads(ann.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise probs.fatal(ann, f"malformed json ({e})") from None
    if not isinstance(data, list):
        raise probs.fatal(ann, "expected a list of objects with file_path, id, captions and split")
    parts: dict[str, list[PedesImage]] = {s: [] for s in SPLITS}
    for i, item in enumerate(data):
        where = f"{ann}: [{i}]"
        if not isinstance(item, dict) or not {"file_path", "id", "captions", "split"} <= set(item):
            probs.add(where, "expected an object with file_path, id, captions and split")
            continue
        split, pid, caps, rel = item["split"], item["id"], item["captions"], item["file_path"]
        if split not in SPLITS:
            probs.add(where, f"split must be train, val or test, got {split!r}")
            continue
        if not isinstance(pid, int) or isinstance(pid, bool) or pid < 0:
            probs.add(where, f"id must be a non-negative integer, got {pid!r}")
            continue
        if not isinstance(caps, list) or not caps or not all(
                isinstance(c, str) and c.strip() for c in caps):
            probs.add(where, "captions must be a non-empty list of non-empty strings")
            continue
        if not isinstance(rel, str) or not rel:
            probs.add(where, f"file_path must be a path under imgs/, got {rel!r}")
            continue
        path = root / "imgs" / rel
        if not image_ok(path, probs, f"{ann.name} [{i}]"):
            continue
        parts[split].append(PedesImage(str(path), pid, tuple(caps)))
    for split in ("train", "test"):
        if not parts[split]:
            probs.add(ann, f"no {split} items")
    return PedesDataset("cuhk_pedes", str(root), tuple(parts["train"]), tuple(parts["val"]),
                        tuple(parts["test"]))


# --------------------------------------------------------------------------------------
# Synthetic writer
# --------------------------------------------------------------------------------------
PID_BASE, CAM_BASE = 3_600_000, 900  # CUHK-PEDES people and cameras: nobody else's
NUM_CAMS = 12


def write_synthetic(world, root: Path) -> dict[str, int]:
    """Write ``CUHK-PEDES/`` (``reid_raw.json`` + ``imgs/``) as it ships: identity-disjoint
    train / val / test, 2-4 images per identity from different cameras (CUHK-PEDES has 3.1
    on average), ids 1.. in split order, each image with its identity's caption."""
    out = Path(root) / "CUHK-PEDES"
    n_ids = {"train": world.pick(64, 600, 11003), "val": world.pick(8, 60, 1000),
             "test": world.pick(32, 200, 1000)}
    h, w = world.pick((128, 64), (256, 128), (256, 128))
    records, counts, pid = [], {}, 0
    for split in SPLITS:
        counts[f"{split}_ids"], counts[split] = n_ids[split], 0
        sub = "train_query" if split == "train" else "test_query"
        for _ in range(n_ids[split]):
            pid += 1
            rng = world.rng("cuhk_pedes", pid)
            n = int(rng.integers(2, 5))
            cams = rng.choice(NUM_CAMS, size=n, replace=False)
            caption = world.identity(PID_BASE + pid).caption()
            for k, cam in enumerate(cams.tolist()):
                crop = world.crop(PID_BASE + pid, CAM_BASE + cam, h, w, "cuhk_pedes", k)
                rel = f"{sub}/p{pid}_s{len(records) + 1}.jpg"
                write_image(out / "imgs" / rel, crop.image)
                records.append({"split": split, "captions": [caption], "file_path": rel,
                                "processed_tokens": [caption.lower().rstrip(".").replace(",", "").split()],
                                "id": pid})
                counts[split] += 1
    (out / "reid_raw.json").write_text(json.dumps(records) + "\n")
    return counts
