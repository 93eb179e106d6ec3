"""Person re-identification datasets: Market-1501 and MSMT17, as they ship.

Market-1501 (Zheng et al., ICCV 2015)::

    Market-1501-v15.09.15/bounding_box_train/0002_c1s1_000451_03.jpg
                          query/            PPPP_cCsS_FFFFFF_NN.jpg
                          bounding_box_test/

``PPPP`` is the identity (``-1`` junk, ``0000`` distractor), ``C`` the camera (1-6), ``S``
the sequence, ``FFFFFF`` the frame, ``NN`` the box.  Junk images are kept in the records
(``pid == -1``) because the standard protocol ignores them *in evaluation*, and
distractors (``pid == 0``) stay in the gallery as negatives; torchreid instead drops junk
while reading.

MSMT17 (Wei et al., CVPR 2018)::

    MSMT17_V1/train/0000/0000_000_01_0303morning_0015_0.jpg
              test/...
              list_train.txt list_val.txt list_query.txt list_gallery.txt

Each list line is ``<pid folder>/<file> <pid>``; the camera is the third ``_`` field of
the file name (1-15), as torchreid's reader takes it.  Train and test identities are
numbered from 0 separately (they are different people).

Camera ids in the records are 0-based, as torchreid and TransReID use them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from bench.data.base import Problems, image_ok, problems_or_strict, require_dir, write_image

MARKET_RE = re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")
MARKET_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
MSMT_LISTS = {"train": ("train", "list_train.txt"), "val": ("train", "list_val.txt"),
              "query": ("test", "list_query.txt"), "gallery": ("test", "list_gallery.txt")}
JUNK, DISTRACTOR = -1, 0


@dataclass(frozen=True)
class ReIDImage:
    path: str
    pid: int  # -1 junk, 0 distractor (Market-1501)
    camid: int  # 0-based


@dataclass(frozen=True)
class ReIDDataset:
    name: str
    root: str
    train: tuple[ReIDImage, ...]
    query: tuple[ReIDImage, ...]
    gallery: tuple[ReIDImage, ...]
    val: tuple[ReIDImage, ...] = ()

    @property
    def num_train_pids(self) -> int:
        return len({im.pid for im in self.train if im.pid > 0 or self.name == "msmt17"})

    @property
    def num_cams(self) -> int:
        return len({im.camid for part in (self.train, self.query, self.gallery) for im in part})


def read_market1501(root: str | Path, problems: Problems | None = None) -> ReIDDataset:
    """Read a Market-1501 root (the folder holding bounding_box_train/, query/, ...)."""
    root = Path(root)
    probs = problems_or_strict(problems)
    require_dir(root, probs, "dataset root")
    parts: dict[str, list[ReIDImage]] = {}
    for part, sub in MARKET_DIRS.items():
        d = root / sub
        require_dir(d, probs, f"{sub}/ folder")
        items = []
        for f in sorted(d.iterdir()):
            if f.suffix.lower() != ".jpg":
                continue  # Market ships Thumbs.db files beside the images
            m = MARKET_RE.match(f.name)
            if not m:
                probs.add(f, "file name does not match PPPP_cCsS_FFFFFF_NN.jpg")
                continue
            pid, cam = int(m.group(1)), int(m.group(2))
            if not 1 <= cam <= 6:
                probs.add(f, f"camera c{cam} out of range 1-6")
                continue
            if pid > 1501:
                probs.add(f, f"identity {pid} out of range (Market-1501 ids are at most 1501)")
                continue
            if part == "query" and pid in (JUNK, DISTRACTOR):
                probs.add(f, "query images must show a real identity (not -1 or 0000)")
                continue
            if part == "train" and pid == DISTRACTOR:
                probs.add(f, "training images must not be distractors (0000)")
                continue
            if image_ok(f, probs):
                items.append(ReIDImage(str(f), pid, cam - 1))
        if not items:
            probs.add(d, "no images")
        parts[part] = items
    _check_query_in_gallery("market1501", parts, root, probs)
    return ReIDDataset("market1501", str(root), tuple(parts["train"]), tuple(parts["query"]),
                       tuple(parts["gallery"]))


def read_msmt17(root: str | Path, problems: Problems | None = None) -> ReIDDataset:
    """Read an MSMT17 root (the MSMT17_V1 or MSMT17_V2 folder with its list files)."""
    root = Path(root)
    probs = problems_or_strict(problems)
    require_dir(root, probs, "dataset root")
    parts: dict[str, list[ReIDImage]] = {}
    for part, (sub, list_name) in MSMT_LISTS.items():
        img_dir = root / sub
        if not img_dir.is_dir():
            alt = root / ("mask_" + sub + "_v2")  # MSMT17_V2's folder names
            img_dir = alt if alt.is_dir() else img_dir
        require_dir(img_dir, probs, f"{sub}/ folder")
        list_path = root / list_name
        if not list_path.is_file():
            if part == "val":
                parts[part] = []
                continue
            raise probs.fatal(list_path, "missing list file")
        try:
            lines = list_path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise probs.fatal(list_path, f"unreadable list file ({e})") from None
        items = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            fields = line.split()
            where = f"{list_path}:{n}"
            if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
                probs.add(where, f"expected '<folder>/<file>.jpg <pid>', got {line.strip()!r}")
                continue
            rel, pid = fields[0], int(fields[1])
            name_fields = Path(rel).name.split("_")
            if len(name_fields) < 3 or not name_fields[2].isdigit():
                probs.add(where, f"cannot read the camera from file name {Path(rel).name!r}")
                continue
            cam = int(name_fields[2])
            if not 1 <= cam <= 15:
                probs.add(where, f"camera {cam} out of range 1-15")
                continue
            if pid < 0:
                probs.add(where, f"negative identity {pid}")
                continue
            path = img_dir / rel
            if not image_ok(path, probs, f"listed in {list_path.name} line {n}"):
                continue
            items.append(ReIDImage(str(path), pid, cam - 1))
        if not items:
            probs.add(list_path, "lists no images")
        parts[part] = items
    _check_query_in_gallery("msmt17", parts, root, probs)
    return ReIDDataset("msmt17", str(root), tuple(parts["train"]), tuple(parts["query"]),
                       tuple(parts["gallery"]), tuple(parts["val"]))


def _check_query_in_gallery(name: str, parts: dict, root: Path, probs: Problems) -> None:
    gallery_pids = {im.pid for im in parts["gallery"]}
    missing = sorted({im.pid for im in parts["query"]} - gallery_pids)
    if missing:
        probs.add(root, f"{len(missing)} query identities never appear in the gallery "
                        f"(e.g. {missing[:5]})")


# --------------------------------------------------------------------------------------
# Synthetic writers
# --------------------------------------------------------------------------------------
# Identity offsets keep each dataset's people distinct from every other dataset's, and
# from the pretraining pools.
MARKET_PID_BASE, MSMT_TRAIN_BASE, MSMT_TEST_BASE = 10_000, 20_000, 30_000


def _appearances(world, key: str, pid: int, num_cams: int, min_cams: int, max_cams: int,
                 per_cam: tuple[int, int]) -> list[tuple[int, int]]:
    """(camera, count) pairs for one identity: seen by a few cameras, a few images each."""
    rng = world.rng(key, "appear", pid)
    k = int(rng.integers(min_cams, max_cams + 1))
    cams = sorted(rng.choice(num_cams, size=min(k, num_cams), replace=False).tolist())
    return [(c + 1, int(rng.integers(per_cam[0], per_cam[1] + 1))) for c in cams]


def write_market1501(world, root: Path) -> dict[str, int]:
    """Write a Market-1501 folder: 6 cameras, 128x64 crops, junk and distractors."""
    out = Path(root) / "Market-1501-v15.09.15"
    n_train, n_test = world.pick(24, 150, 751), world.pick(24, 150, 750)
    n_junk, n_distract = world.pick(12, 60, 300), world.pick(12, 60, 300)
    h, w = 128, 64
    counts = {"train": 0, "query": 0, "gallery": 0, "train_ids": n_train, "test_ids": n_test}
    # Market numbers its identities 1..1501, train and test interleaved
    ids = list(range(1, 1 + n_train + n_test))
    order = world.rng("market1501", "split").permutation(ids).tolist()
    train_ids, test_ids = sorted(order[:n_train]), sorted(order[n_train:])
    frame = 0
    for part_ids, part in ((train_ids, "train"), (test_ids, "test")):
        for pid in part_ids:
            apps = _appearances(world, "market1501", pid, 6, 2, 4, (1, 4))
            for j, (cam, count) in enumerate(apps):
                for i in range(count):
                    frame += 1
                    crop = world.crop(MARKET_PID_BASE + pid, cam, h, w, "market1501", i)
                    name = f"{pid:04d}_c{cam}s1_{frame:06d}_{i:02d}.jpg"
                    # one query per camera where the identity has more images, so that
                    # every query has a match in another camera's gallery
                    is_query = part == "test" and i == 0 and (
                        j == 0 or (count > 1 and apps[0][1] > 1))
                    sub = ("bounding_box_train" if part == "train" else
                           "query" if is_query else "bounding_box_test")
                    write_image(out / sub / name, crop.image)
                    counts[{"bounding_box_train": "train", "query": "query",
                            "bounding_box_test": "gallery"}[sub]] += 1
    # distractors: people who are not in the dataset; junk: cut-off boxes
    for k in range(n_distract):
        cam = int(world.rng("market1501", "distractor", k).integers(1, 7))
        crop = world.crop(MARKET_PID_BASE + 5000 + k, cam, h, w, "market1501-distractor")
        write_image(out / "bounding_box_test" / f"0000_c{cam}s1_{frame + k + 1:06d}_00.jpg",
                    crop.image)
    frame += n_distract
    for k in range(n_junk):
        rng = world.rng("market1501", "junk", k)
        cam = int(rng.integers(1, 7))
        crop = world.crop(MARKET_PID_BASE + 7000 + k, cam, h, w, "market1501-junk")
        img = crop.image.copy()
        cut = int(rng.integers(h // 3, 2 * h // 3))  # a badly cropped detection
        img[cut:] = img[cut:].mean(axis=(0, 1), keepdims=True).astype(img.dtype)
        write_image(out / "bounding_box_test" / f"-1_c{cam}s1_{frame + k + 1:06d}_00.jpg", img)
    counts["gallery"] += n_junk + n_distract
    counts["junk"], counts["distractors"] = n_junk, n_distract
    return counts


def write_msmt17(world, root: Path) -> dict[str, int]:
    """Write an MSMT17_V1 folder: 15 cameras, per-identity folders and the four list files."""
    out = Path(root) / "MSMT17_V1"
    n_train, n_test = world.pick(24, 150, 1041), world.pick(24, 150, 3060)
    times = ("0113morning", "0113noon", "0302afternoon", "0303morning")
    lists: dict[str, list[str]] = {k: [] for k in MSMT_LISTS}
    rng_split = world.rng("msmt17", "val")
    for part, n, base in (("train", n_train, MSMT_TRAIN_BASE), ("test", n_test, MSMT_TEST_BASE)):
        for pid in range(n):
            apps = _appearances(world, f"msmt17-{part}", pid, 15, 2, 5, (1, 3))
            idx = 0
            for cam, count in apps:
                for i in range(count):
                    rng = world.rng("msmt17", part, pid, cam, i)
                    h = int(rng.integers(96, 160)) // 2 * 2 if world.size != "smoke" else 128
                    w = max(32, int(h * rng.uniform(0.38, 0.5))) if world.size != "smoke" else 64
                    crop = world.crop(base + pid, cam, h, w, "msmt17", i)
                    tod = times[int(rng.integers(len(times)))]
                    name = f"{pid:04d}_{idx:03d}_{cam:02d}_{tod}_{int(rng.integers(10000)):04d}_{i}.jpg"
                    rel = f"{pid:04d}/{name}"
                    write_image(out / part / rel, crop.image)
                    if part == "train":
                        key = "val" if rng_split.random() < 0.1 else "train"
                    else:  # the first image of each identity is its query, as in MSMT17
                        key = "query" if idx == 0 else "gallery"
                    lists[key].append(f"{rel} {pid}")
                    idx += 1
    for key, (_, list_name) in MSMT_LISTS.items():
        (out / list_name).write_text("".join(line + "\n" for line in lists[key]))
    return {**{k: len(v) for k, v in lists.items()}, "train_ids": n_train, "test_ids": n_test}
