"""Person search datasets: CUHK-SYSU and PRW, read as SeqNet (and SOLIDER's fork of it) reads them.

A person search image is a whole scene with several people; some boxes carry an identity,
the rest are unlabeled passers-by.  Both readers return a :class:`SearchDataset` of
:class:`SearchImage` (train and gallery scenes) and :class:`SearchQuery` records.

Conventions shared by both readers (SeqNet's, so evaluators can mirror ``eval_func.py``):

* boxes are float32 ``(N, 4)`` ``x1, y1, x2, y2`` in pixels, converted from the files'
  ``x, y, w, h`` exactly as SeqNet converts them (integer truncation, ``x2 = x + w``);
* ``pids`` are int64; :data:`UNLABELED` (5555, SeqNet's value) marks an unlabeled person;
  labelled identities are positive and numbered per split (CUHK-SYSU: ``1..N`` in the order
  of ``Train.mat``, resp. the ``TestG*.mat`` queries, so train and test ids both start at 1);
* ``cam`` is the PRW camera (1-6, from the frame name ``c{cam}s{seq}_{frame}``), ``None``
  for CUHK-SYSU.

CUHK-SYSU (Xiao et al., CVPR 2017)::

    CUHK-SYSU/Image/SSM/s1.jpg ...
      annotation/Images.mat  Img: 1xN struct (imname, nAppear,
                                              box: 1xK struct (idlocate, ishard))
      annotation/pool.mat    pool: Nx1 cell of test image names
      annotation/Person.mat  Person: 1xP struct (idname, nAppear,
                                                 scene: 1xK struct (imname, idlocate, ishard))
      annotation/test/train_test/Train.mat  Train: Nx1 cell of 1x1 struct (idname, nAppear, scene)
      annotation/test/train_test/TestG{50,100,500,...}.mat
          TestG50: 1xQ struct (Query: 1x1 struct (imname, idlocate, ishard, idname),
                               Gallery: 1xG struct (imname, idlocate, ishard))

``idlocate`` is ``x, y, w, h``; a gallery image without the query person has an empty
(1x0) ``idlocate``.  Training images are all images minus ``pool.mat`` (sorted by name);
the gallery is ``pool.mat`` in its order.  Boxes of zero width or height in ``Images.mat``
(a known annotation slip in the real files) are dropped, as SeqNet drops them.  Every
query has its own gallery of ``gallery_size`` images (``query_gallery``: indices into
``gallery``); SeqNet labels the test boxes from ``TestG50.mat``, we from the protocol file
that is read (all of them hold the same queries and positives).  ``Person.mat`` is not
needed by SeqNet; when present it is checked (every image it names is in ``Images.mat``).

PRW (Zheng et al., CVPR 2017)::

    PRW/frames/c1s1_000151.jpg ...
        annotations/c1s1_000151.jpg.mat   box_new: Nx5 [id, x, y, w, h]
                                          (some ship it as anno_file or anno_previous)
        frame_train.mat   img_index_train: Nx1 cell of frame names (no .jpg)
        frame_test.mat    img_index_test
        query_info.txt    "pid x y w h frame_name" per line (CRLF line ends, as shipped)

``id == -2`` is an unlabeled person (-> :data:`UNLABELED`); negative coordinates are
clipped to 0 before conversion, as SeqNet does ("several coordinates are negative").
PRW's query searches the whole test set (``query_gallery is None``); its cross-camera
protocol uses ``cam``.  ``ID_train.mat``/``ID_test.mat``/``query_box/`` are not read.

Checks (each problem names its file): folders, files and images exist (and decode, when
checking images); the .mat files hold the variables and struct fields SeqNet indexes;
every box has positive size and lies within its image (allowing :data:`BOX_SLACK` of the
image side for annotators' overshoot); every box a protocol names is a box of that image;
train and test images are disjoint; queries lie in the test set, their identity is in the
query image and in at least one other test image (else SeqNet's evaluation divides by
zero).

:func:`write_synthetic` writes both folders from the synthetic world in these formats.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from bench.data.base import (DataError, Problems, check_image, load_mat, problems_or_strict,
                             require_dir, write_image)
from bench.errors import BenchError
from bench.io import atomic_write_bytes, atomic_write_text

UNLABELED = 5555  # SeqNet's pid for unlabeled people (CUHK-SYSU: unnamed boxes; PRW: id -2)
PRW_UNLABELED_ID = -2  # as written in PRW's annotation files
BOX_SLACK = 0.02  # a box may overshoot the image by 2% of its side (annotation overshoot)
PRW_BOX_KEYS = ("box_new", "anno_file", "anno_previous")  # tried in this order, as SeqNet
PRW_FRAME_RE = re.compile(r"^c(\d)s(\d+)_(\d+)$")
CUHK_TEST_DIR = "annotation/test/train_test"


@dataclass(frozen=True, eq=False)
class SearchImage:
    name: str  # file name, as the annotation files name it (SeqNet's img_name)
    path: str
    boxes: np.ndarray  # float32 (N, 4) x1, y1, x2, y2
    pids: np.ndarray  # int64 (N,): identity, or UNLABELED
    cam: int | None  # PRW camera (1-based); None for CUHK-SYSU


@dataclass(frozen=True, eq=False)
class SearchQuery:
    name: str
    path: str
    box: np.ndarray  # float32 (4,) x1, y1, x2, y2
    pid: int
    cam: int | None


@dataclass(frozen=True, eq=False)
class SearchDataset:
    name: str
    root: str
    train: tuple[SearchImage, ...]
    gallery: tuple[SearchImage, ...]
    queries: tuple[SearchQuery, ...]
    # CUHK-SYSU: per query, the indices into ``gallery`` of its protocol gallery
    # (TestG{gallery_size}.mat); None for PRW, whose queries search the whole gallery.
    query_gallery: tuple[tuple[int, ...], ...] | None
    gallery_size: int | None = None  # the CUHK-SYSU protocol read; None for PRW

    @property
    def num_train_pids(self) -> int:
        return len({int(p) for im in self.train for p in im.pids if p != UNLABELED})

    def counts(self) -> dict[str, int]:
        """Images, boxes, identities and queries (what the synthetic writer reports)."""
        test_ids = {int(p) for im in self.gallery for p in im.pids if p != UNLABELED}
        return {"train_images": len(self.train), "gallery_images": len(self.gallery),
                "train_boxes": sum(len(im.boxes) for im in self.train),
                "gallery_boxes": sum(len(im.boxes) for im in self.gallery),
                "train_ids": self.num_train_pids, "test_ids": len(test_ids),
                "queries": len(self.queries)}


# --------------------------------------------------------------------------------------
# .mat helpers
# --------------------------------------------------------------------------------------
def _var(mat: dict, name: str, path: Path, probs: Problems) -> np.ndarray:
    if name not in mat:
        have = sorted(k for k in mat if not k.startswith("__"))
        raise probs.fatal(path, f"missing variable {name!r} (has {have})")
    return mat[name]


def _fields(arr: Any, names: tuple[str, ...], path: Path, what: str, probs: Problems) -> None:
    have = getattr(getattr(arr, "dtype", None), "names", None) or ()
    for n in names:
        if n not in have:
            raise probs.fatal(path, f"{what} has no field {n!r} (fields: {list(have)})")


def _str(v: Any) -> str:
    a = np.asarray(v)
    if a.dtype.kind == "U" and a.size == 1:
        return str(a.reshape(-1)[0])
    if a.dtype == object and a.size == 1:
        return _str(a.reshape(-1)[0])
    raise ValueError(f"expected a string, got {a.dtype} array of shape {a.shape}")


def _box(v: Any) -> np.ndarray | None:
    """An ``idlocate`` value -> float64 (4,) x, y, w, h, or None when empty."""
    a = np.asarray(v)
    if a.size == 0:
        return None
    a = a.astype(np.float64).reshape(-1)
    if a.size != 4:
        raise ValueError(f"expected a box of 4 numbers, got {a.size}")
    return a


def _records(arr: np.ndarray) -> list:
    return list(np.asarray(arr).reshape(-1))


def _parse(path: Path, probs: Problems, what: str, fn):
    """Run ``fn`` over a loaded .mat; a wrong nesting becomes a DataError naming the file."""
    try:
        return fn()
    except DataError:
        raise
    except (ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
        raise probs.fatal(path, f"malformed {what} ({type(e).__name__}: {e})") from None


def _image_size(path: Path, probs: Problems, context: str) -> tuple[int, int] | None:
    """(width, height) from the header; the image must exist (and decode, when checking)."""
    if not path.is_file():
        probs.add(path, f"missing image ({context})")
        return None
    if probs.check_images and not check_image(path, probs):
        return None
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        probs.add(path, f"unreadable image ({e})")
        return None


def _check_boxes(where: str, boxes: np.ndarray, size: tuple[int, int] | None,
                 probs: Problems) -> None:
    """x1y1x2y2 boxes: positive size and inside the image (with BOX_SLACK)."""
    for b in boxes:
        if not (b[2] > b[0] and b[3] > b[1]):
            probs.add(where, f"box {_fmt(b)} (x1, y1, x2, y2) has no positive size")
        elif size is not None:
            w, h = size
            sx, sy = BOX_SLACK * w, BOX_SLACK * h
            if b[0] < -sx or b[1] < -sy or b[2] > w + sx or b[3] > h + sy:
                probs.add(where, f"box {_fmt(b)} (x1, y1, x2, y2) lies outside the "
                                 f"{w}x{h} image")


def _fmt(b) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in b) + "]"


def _freeze(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


# --------------------------------------------------------------------------------------
# CUHK-SYSU
# --------------------------------------------------------------------------------------
def cuhk_gallery_sizes(root: str | Path) -> list[int]:
    """The ``TestG{N}.mat`` protocols present in a CUHK-SYSU root, ascending."""
    d = Path(root) / CUHK_TEST_DIR
    sizes = []
    for f in d.glob("TestG*.mat") if d.is_dir() else ():
        m = re.fullmatch(r"TestG(\d+)\.mat", f.name)
        if m:
            sizes.append(int(m.group(1)))
    return sorted(sizes)


def read_cuhk_sysu(root: str | Path, problems: Problems | None = None, *,
                   gallery_size: int | None = None) -> SearchDataset:
    """Read a CUHK-SYSU root with the per-query galleries of ``TestG{gallery_size}.mat``.

    ``gallery_size=None`` takes 100 (the protocol papers report) when ``TestG100.mat`` is
    there, else the largest ``TestG{N}.mat`` present (the smoke-size synthetic world has
    too few test images for 100); the dataset records the size it read.
    """
    root = Path(root)
    probs = problems_or_strict(problems)
    require_dir(root, probs, "dataset root")
    img_dir = root / "Image" / "SSM"
    require_dir(img_dir, probs, "Image/SSM/ folder")
    ann = root / "annotation"
    require_dir(ann, probs, "annotation/ folder")
    test_dir = root / CUHK_TEST_DIR
    require_dir(test_dir, probs, "annotation/test/train_test/ folder")

    # Images.mat: every image and every box (x, y, w, h)
    images_path = ann / "Images.mat"
    img_var = _var(load_mat(images_path, probs), "Img", images_path, probs)
    _fields(img_var, ("imname", "box"), images_path, "Img", probs)

    def parse_images():
        out: dict[str, np.ndarray] = {}
        for i, rec in enumerate(_records(img_var)):
            name = _str(rec["imname"])
            box = np.asarray(rec["box"])
            if box.dtype.names is None and box.size == 0:  # [] : an image without boxes
                locs = []
            else:
                _fields(box, ("idlocate",), images_path, f"Img({i + 1}).box", probs)
                locs = [_box(b) for b in _records(box["idlocate"])]
            boxes = np.array([b for b in locs if b is not None], dtype=np.float64).reshape(-1, 4)
            if name in out:
                probs.add(images_path, f"image {name} is listed twice")
            # zero-size boxes are an annotation slip in the real file; SeqNet drops them
            out[name] = boxes[(boxes[:, 2] > 0) & (boxes[:, 3] > 0)].astype(np.int32)
            if len(out[name]) == 0:
                probs.add(images_path, f"image {name} has no box of positive size")
        return out

    name_to_boxes = _parse(images_path, probs, "Img struct", parse_images)

    pool_path = ann / "pool.mat"
    pool_var = _var(load_mat(pool_path, probs), "pool", pool_path, probs)
    pool = _parse(pool_path, probs, "pool cell array",
                  lambda: [_str(a) for a in _records(pool_var)])
    pool_set = set(pool)
    if len(pool_set) != len(pool):
        probs.add(pool_path, "lists an image twice")
    for name in pool:
        if name not in name_to_boxes:
            probs.add(pool_path, f"test image {name} is not in Images.mat")

    def assign(path: Path, where: str, labels: dict, img: str, box: np.ndarray | None,
               pid: int) -> bool:
        """Label the box of ``img`` equal to ``box`` (x, y, w, h) with ``pid``."""
        if img not in name_to_boxes:
            probs.add(path, f"{where}: image {img} is not in Images.mat")
            return False
        if box is None:
            probs.add(path, f"{where}: empty box in image {img}")
            return False
        hits = np.nonzero(np.all(name_to_boxes[img] == box.astype(np.int32), axis=1))[0]
        if len(hits) == 0:
            probs.add(path, f"{where}: box {_fmt(box)} (x, y, w, h) is not a box of {img} "
                            "in Images.mat")
            return False
        pids = labels.setdefault(img, np.full(len(name_to_boxes[img]), UNLABELED, np.int64))
        if pids[hits[0]] not in (UNLABELED, pid):
            probs.add(path, f"{where}: box {_fmt(box)} of {img} already belongs to "
                            f"identity {pids[hits[0]]}")
            return False
        pids[hits[0]] = pid
        return True

    # Train.mat: training identities, numbered 1..N in file order
    train_path = test_dir / "Train.mat"
    train_var = _var(load_mat(train_path, probs), "Train", train_path, probs)
    train_labels: dict[str, np.ndarray] = {}

    def parse_train():
        for k, cell in enumerate(_records(train_var)):
            ident = np.asarray(cell).reshape(-1)[0]
            if k == 0:
                _fields(np.asarray(cell), ("idname", "scene"), train_path, "Train{1}", probs)
                _fields(ident["scene"], ("imname", "idlocate"), train_path,
                        "Train{1}.scene", probs)
            scenes = _records(ident["scene"])
            if not scenes:
                probs.add(train_path, f"identity {k + 1} has no scene")
            for s in scenes:
                img = _str(s["imname"])
                if img in pool_set:
                    probs.add(train_path, f"training identity {k + 1} is in test image {img}")
                assign(train_path, f"identity {k + 1}", train_labels, img, _box(s["idlocate"]),
                       k + 1)
        return len(_records(train_var))

    _parse(train_path, probs, "Train cell array", parse_train)

    # TestG{N}.mat: queries and their galleries
    if gallery_size is None:
        present = cuhk_gallery_sizes(root)
        if not present:
            raise probs.fatal(test_dir, "no TestG{N}.mat protocol file")
        gallery_size = 100 if 100 in present else present[-1]
    key = f"TestG{gallery_size}"
    test_path = test_dir / f"{key}.mat"
    test_var = _var(load_mat(test_path, probs), key, test_path, probs)
    _fields(test_var, ("Query", "Gallery"), test_path, key, probs)
    test_labels: dict[str, np.ndarray] = {}
    raw_queries: list[tuple[str, np.ndarray, int, list[str]]] = []  # labelled queries only

    def parse_test():
        for i, item in enumerate(_records(test_var)):
            q, g = item["Query"], item["Gallery"]
            if i == 0:
                _fields(q, ("imname", "idlocate"), test_path, f"{key}.Query", probs)
                _fields(g, ("imname", "idlocate"), test_path, f"{key}.Gallery", probs)
            q = np.asarray(q).reshape(-1)[0]
            img, box, where = _str(q["imname"]), _box(q["idlocate"]), f"query {i + 1}"
            if img not in pool_set:
                probs.add(test_path, f"{where}: query image {img} is not in pool.mat "
                                     "(the test set)")
            query_ok = assign(test_path, where, test_labels, img, box, i + 1)
            names, positives = [], 0
            for e in _records(g):
                gimg, gbox = _str(e["imname"]), _box(e["idlocate"])
                names.append(gimg)
                if gimg not in pool_set:
                    probs.add(test_path, f"{where}: gallery image {gimg} is not in pool.mat")
                    continue
                if gbox is not None:
                    positives += assign(test_path, where, test_labels, gimg, gbox, i + 1)
            if len(names) != gallery_size:
                probs.add(test_path, f"{where}: gallery has {len(names)} images, expected "
                                     f"{gallery_size}")
            if positives == 0:
                probs.add(test_path, f"{where}: no gallery image contains the query person")
            if query_ok:
                raw_queries.append((img, box, i + 1, names))

    _parse(test_path, probs, f"{key} struct", parse_test)
    if not _records(test_var):
        probs.add(test_path, f"{key} lists no queries")

    person_path = ann / "Person.mat"
    if person_path.is_file():  # not needed by SeqNet; checked when shipped
        person_var = _var(load_mat(person_path, probs), "Person", person_path, probs)
        _fields(person_var, ("idname", "scene"), person_path, "Person", probs)

        def parse_person():
            for rec in _records(person_var):
                for s in _records(rec["scene"]):
                    img = _str(s["imname"])
                    if img not in name_to_boxes:
                        probs.add(person_path, f"person {_str(rec['idname'])}: image {img} "
                                               "is not in Images.mat")

        _parse(person_path, probs, "Person struct", parse_person)

    def image(name: str, labels: dict) -> SearchImage | None:
        path = img_dir / name
        size = _image_size(path, probs, "listed in annotation/Images.mat")
        xywh = name_to_boxes[name]
        boxes = xywh.astype(np.float32)
        boxes[:, 2:] += boxes[:, :2]
        _check_boxes(f"{images_path} ({name})", boxes, size, probs)
        if size is None:
            return None
        pids = labels.get(name, np.full(len(xywh), UNLABELED, np.int64)).copy()
        return SearchImage(name, str(path), _freeze(boxes), _freeze(pids), None)

    train_names = sorted(set(name_to_boxes) - pool_set)
    train = [im for im in (image(n, train_labels) for n in train_names) if im is not None]
    gallery = [im for im in (image(n, test_labels) for n in pool if n in name_to_boxes)
               if im is not None]
    index = {im.name: i for i, im in enumerate(gallery)}
    queries, query_gallery = [], []
    for img, box, pid, names in raw_queries:
        if img not in index:
            continue
        b = box.astype(np.int32).astype(np.float32)
        b[2:] += b[:2]
        queries.append(SearchQuery(img, str(img_dir / img), _freeze(b), pid, None))
        query_gallery.append(tuple(index[n] for n in names if n in index))
    return SearchDataset("cuhk_sysu", str(root), tuple(train), tuple(gallery), tuple(queries),
                         tuple(query_gallery), gallery_size)


# --------------------------------------------------------------------------------------
# PRW
# --------------------------------------------------------------------------------------
def read_prw(root: str | Path, problems: Problems | None = None) -> SearchDataset:
    """Read a PRW root: frames, per-frame annotations, the train/test frame lists, queries."""
    root = Path(root)
    probs = problems_or_strict(problems)
    require_dir(root, probs, "dataset root")
    frames, ann = root / "frames", root / "annotations"
    require_dir(frames, probs, "frames/ folder")
    require_dir(ann, probs, "annotations/ folder")

    splits: dict[str, list[str]] = {}
    for split in ("train", "test"):
        path = root / f"frame_{split}.mat"
        var = _var(load_mat(path, probs), f"img_index_{split}", path, probs)
        names = _parse(path, probs, "frame list",
                       lambda: [_str(a) + ".jpg" for a in _records(var)])
        if len(set(names)) != len(names):
            probs.add(path, "lists a frame twice")
        if not names:
            probs.add(path, "lists no frames")
        splits[split] = names
    both = sorted(set(splits["train"]) & set(splits["test"]))
    if both:
        probs.add(root / "frame_test.mat", f"{len(both)} frames are also in frame_train.mat "
                                           f"(e.g. {both[:3]})")

    sizes: dict[str, tuple[int, int]] = {}

    def frame(name: str) -> SearchImage | None:
        m = PRW_FRAME_RE.match(Path(name).stem)
        path = frames / name
        if m is None:
            probs.add(path, "cannot read the camera from the frame name "
                            "(expected c{cam}s{seq}_{frame}.jpg)")
            return None
        anno_path = ann / (name + ".mat")
        if not anno_path.is_file():
            probs.add(anno_path, "missing annotation file")
            return None
        try:
            anno = load_mat(anno_path, probs)
        except DataError:
            if probs.strict:
                raise
            return None
        key = next((k for k in PRW_BOX_KEYS if k in anno), None)
        if key is None:
            have = sorted(k for k in anno if not k.startswith("__"))
            probs.add(anno_path, f"missing variable 'box_new' (nor 'anno_file', "
                                 f"'anno_previous'; has {have})")
            return None
        raw = np.asarray(anno[key])
        if raw.dtype.kind not in "iuf" or raw.ndim != 2 or raw.shape[1] != 5:
            probs.add(anno_path, f"{key} must be an N x 5 numeric array [id, x, y, w, h], "
                                 f"got {raw.dtype} {raw.shape}")
            return None
        raw = raw.astype(np.float64)
        ids = raw[:, 0]
        bad = ids[(ids != np.round(ids)) | ((ids < 1) & (ids != PRW_UNLABELED_ID))]
        if len(bad):
            probs.add(anno_path, f"identity {bad[0]:g} is neither positive nor "
                                 f"{PRW_UNLABELED_ID} (unlabeled)")
        rois = np.clip(raw[:, 1:], 0, None)  # SeqNet: "several coordinates are negative"
        rois[:, 2:] += rois[:, :2]
        boxes = rois.astype(np.int32).astype(np.float32)
        pids = ids.astype(np.int64)
        pids[pids == PRW_UNLABELED_ID] = UNLABELED
        size = _image_size(path, probs, f"listed in frame list, annotated in {anno_path.name}")
        _check_boxes(str(anno_path), boxes, size, probs)
        if size is None:
            return None
        sizes[name] = size
        return SearchImage(name, str(path), _freeze(boxes), _freeze(pids), int(m.group(1)))

    train = [im for im in map(frame, splits["train"]) if im is not None]
    gallery = [im for im in map(frame, splits["test"]) if im is not None]
    by_name = {im.name: im for im in gallery}
    test_set = set(splits["test"])
    frames_of: dict[int, set[str]] = {}  # identity -> test frames holding it
    for im in gallery:
        for p in set(im.pids.tolist()):
            frames_of.setdefault(p, set()).add(im.name)

    qpath = root / "query_info.txt"
    if not qpath.is_file():
        raise probs.fatal(qpath, "missing query list")
    queries = []
    for n, line in enumerate(qpath.read_bytes().decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{qpath}:{n}"
        fields = line.split()
        try:
            if len(fields) != 6:
                raise ValueError
            pid = int(fields[0])
            x, y, w, h = (float(v) for v in fields[1:5])
        except ValueError:
            probs.add(where, f"expected 'pid x y w h frame_name', got {line.strip()!r}")
            continue
        name = fields[5] + ".jpg"
        if name not in test_set:
            probs.add(where, f"query frame {name} is not in frame_test.mat (the test set)")
            continue
        if pid < 1:
            probs.add(where, f"query identity {pid} is not a labelled identity")
            continue
        box = np.clip(np.array([x, y, x + w, y + h]).astype(np.int32), 0, None).astype(np.float32)
        im = by_name.get(name)
        if im is None:  # the frame itself has a problem, reported above
            continue
        _check_boxes(where, box[None], sizes[name], probs)
        if pid not in im.pids:
            probs.add(where, f"identity {pid} is not annotated in its query frame {name}")
            continue
        if not frames_of.get(pid, set()) - {name}:
            probs.add(where, f"identity {pid} appears in no other test frame")
        queries.append(SearchQuery(name, im.path, _freeze(box), pid, im.cam))
    if not queries and not probs:
        probs.add(qpath, "lists no queries")
    return SearchDataset("prw", str(root), tuple(train), tuple(gallery), tuple(queries), None)


# --------------------------------------------------------------------------------------
# Synthetic writers
# --------------------------------------------------------------------------------------
# Identity offsets keep these people distinct from every other dataset's (reid.py uses
# 10_000-40_000, the pretraining pools 1_000_000+); passers-by are numbered per scene.
CUHK_PID_BASE, CUHK_PASSER_BASE = 100_000, 150_000
PRW_PID_BASE, PRW_PASSER_BASE = 200_000, 250_000
CUHK_CAM_BASE, PRW_CAM_BASE = 100, 200
MIN_VISIBILITY = 0.3  # people less visible than this are not annotated (as in both datasets)
MIN_BOX_HEIGHT = 0.08  # ... nor people shorter than this fraction of the image height
GALLERY_SIZES = (10, 20, 50, 100, 500, 1000, 2000, 4000)  # TestG{N} written when they fit
MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: hcbench synthetic world"
_TRIES = 12


def write_synthetic(world, root: Path) -> dict[str, int]:
    """Write ``CUHK-SYSU/`` and ``PRW/`` into ``root`` as they ship; returns their counts.

    Scenes come from ``world.scene``: each holds one or two labelled identities (people
    who recur in several scenes, and in PRW in several cameras) plus unlabeled passers-by.
    Boxes are the visible extent (``vis_box``) of people at least :data:`MIN_VISIBILITY`
    visible and :data:`MIN_BOX_HEIGHT` tall: both datasets box what can be seen.  Test
    identities are disjoint from training ones.  CUHK-SYSU gets ``TestG{N}.mat`` for each
    ``N`` of :data:`GALLERY_SIZES` its test pool can fill (smoke: 10 and 20; small: up to
    100), PRW a query for every appearance of a test identity, each seen by >= 2 cameras.
    """
    root = Path(root)
    counts = {f"cuhk_sysu_{k}": v for k, v in _write_cuhk(world, root / "CUHK-SYSU").items()}
    counts.update({f"prw_{k}": v for k, v in _write_prw(world, root / "PRW").items()})
    return counts


def save_mat(path: Path, variables: dict[str, Any]) -> None:
    """scipy.io.savemat with a fixed header (scipy stamps the time and OS into it), so the
    same content gives the same bytes."""
    import scipy.io

    buf = io.BytesIO()
    scipy.io.savemat(buf, variables, do_compression=False, oned_as="row")
    data = bytearray(buf.getvalue())
    data[:116] = MAT_HEADER.ljust(116, b" ")
    atomic_write_bytes(path, bytes(data))


def _struct(rows: list[dict[str, Any]], names: tuple[str, ...]) -> np.ndarray:
    """A 1 x len(rows) MATLAB struct array (numpy record array of objects)."""
    arr = np.zeros((1, len(rows)), dtype=[(n, object) for n in names])
    for j, row in enumerate(rows):
        for n in names:
            arr[n][0, j] = row[n]
    return arr


def _cell(items: list[Any]) -> np.ndarray:
    """An N x 1 MATLAB cell array."""
    arr = np.empty((len(items), 1), dtype=object)
    for i, v in enumerate(items):
        arr[i, 0] = v
    return arr


def _num(v: float) -> np.ndarray:
    return np.array([[float(v)]])


def _loc(box) -> np.ndarray:
    return np.array([box], dtype=np.float64) if box is not None else np.zeros((1, 0))


def _groups(world, key: str, counts: dict[int, int]) -> list[list[int]]:
    """Scenes of one or two labelled identities: round r holds every identity's r-th
    appearance, so an identity never appears twice in a scene."""
    out = []
    for r in range(max(counts.values(), default=0)):
        rng = world.rng(key, "round", r)
        active = [p for p in sorted(counts) if counts[p] > r]
        order = [active[i] for i in rng.permutation(len(active))]
        i = 0
        while i < len(order):
            k = int(rng.integers(1, 3))
            out.append(order[i:i + k])
            i += k
    return out


def _render(world, key: str, idx: int, labelled: list[int], n_pass: int, passer_base: int,
            cam: int, h: int, w: int, heights: tuple[float, float]):
    """One scene -> (image, [(labelled pid or None, (x, y, w, h))]); re-rendered (other
    placement, fewer passers-by) until every labelled person is visible enough."""
    for attempt in range(_TRIES):
        passers = [passer_base + 8 * idx + j for j in range(max(0, n_pass - attempt // 3))]
        scene = world.scene(labelled + passers, cam, h, w, key, idx, attempt,
                            min_height=heights[0], max_height=heights[1])
        boxes, ok = [], True
        for ins in scene.instances:
            x, y, bw, bh = (int(v) for v in ins.vis_box)
            good = ins.visibility >= MIN_VISIBILITY and bh >= MIN_BOX_HEIGHT * h and bw >= 4
            if ins.pid in labelled:
                ok &= good
                boxes.append((ins.pid, (x, y, bw, bh)))
            elif good:
                boxes.append((None, (x, y, bw, bh)))
        if ok and boxes:
            return scene.image, boxes
    raise BenchError(f"synthetic {key}: scene {idx} keeps hiding a labelled person")


def _write_cuhk(world, out: Path) -> dict[str, int]:
    key = "cuhk_sysu"
    n_train, n_test = world.pick(10, 120, 600), world.pick(8, 80, 400)
    n_distract = world.pick(8, 60, 300)  # test scenes of passers-by only
    n_cams = world.pick(8, 30, 100)  # street snaps and films: many "cameras"
    (h0, h1), (w0, w1) = world.pick(((240, 300), (320, 400)), ((360, 480), (480, 640)),
                                    ((480, 600), (640, 800)))
    # global identity numbers (Person.mat's p00001 ...), train and test interleaved
    gids = (world.rng(key, "split").permutation(n_train + n_test) + 1).tolist()
    train_ids, test_ids = sorted(gids[:n_train]), sorted(gids[n_train:])
    apps = {g: int(world.rng(key, "appear", g).integers(2, 4 if g in train_ids else 5))
            for g in gids}
    plan = [(split, grp) for split, ids in (("train", train_ids), ("test", test_ids))
            for grp in _groups(world, f"{key}-{split}", {g: apps[g] for g in ids})]
    plan += [("test", [])] * n_distract
    numbers = (world.rng(key, "names").permutation(len(plan)) + 1).tolist()  # s1.jpg ...
    images = []  # (name, split, boxes)
    for idx, ((split, grp), num) in enumerate(zip(plan, numbers)):
        rng = world.rng(key, "scene", idx)
        h, w = int(rng.integers(h0, h1 + 1)), int(rng.integers(w0, w1 + 1))
        cam = CUHK_CAM_BASE + int(rng.integers(n_cams))
        n_pass = int(rng.integers(1, 4)) if grp else int(rng.integers(2, 5))
        img, boxes = _render(world, key, idx, [CUHK_PID_BASE + g for g in grp], n_pass,
                             CUHK_PASSER_BASE, cam, h, w, (0.3, 0.8))
        name = f"s{num}.jpg"
        write_image(out / "Image" / "SSM" / name, img)
        images.append((name, split, [(None if p is None else p - CUHK_PID_BASE, b)
                                     for p, b in boxes]))
    # where each identity appears, in scene order (a test identity's first scene is its query)
    seen: dict[int, list[tuple[str, tuple]]] = {g: [] for g in gids}
    for name, _, boxes in images:
        for g, b in boxes:
            if g is not None:
                seen[g].append((name, b))
    pool = [name for name, split, _ in images if split == "test"]
    ann = out / "annotation"
    save_mat(ann / "Images.mat", {"Img": _struct(
        [{"imname": name, "nAppear": _num(len(boxes)),
          "box": _struct([{"idlocate": _loc(b), "ishard": _num(0)} for _, b in boxes],
                         ("idlocate", "ishard"))} for name, _, boxes in images],
        ("imname", "nAppear", "box"))})
    save_mat(ann / "pool.mat", {"pool": _cell(pool)})

    def person(g: int) -> dict[str, Any]:
        return {"idname": f"p{g:05d}", "nAppear": _num(len(seen[g])),
                "scene": _struct([{"imname": n, "idlocate": _loc(b), "ishard": _num(0)}
                                  for n, b in seen[g]], ("imname", "idlocate", "ishard"))}

    names3 = ("idname", "nAppear", "scene")
    save_mat(ann / "Person.mat", {"Person": _struct([person(g) for g in sorted(gids)], names3)})
    test_dir = out / CUHK_TEST_DIR
    save_mat(test_dir / "Train.mat",
             {"Train": _cell([_struct([person(g)], names3) for g in train_ids])})
    sizes = [n for n in GALLERY_SIZES
             if n <= len(pool) - 1 and all(len(seen[g]) - 1 <= n for g in test_ids)]
    for n in sizes:
        queries, galleries = [], []
        for g in test_ids:
            (qname, qbox), positives = seen[g][0], seen[g][1:]
            pos_names = {p for p, _ in positives}
            others = [p for p in pool if p != qname and p not in pos_names]
            pick = world.rng(key, "gallery", n, g).permutation(len(others))[:n - len(positives)]
            entries = [{"imname": p, "idlocate": _loc(b), "ishard": _num(0)} for p, b in positives]
            entries += [{"imname": others[i], "idlocate": _loc(None), "ishard": _num(0)}
                        for i in sorted(pick)]
            queries.append(_struct([{"imname": qname, "idlocate": _loc(qbox), "ishard": _num(0),
                                     "idname": f"p{g:05d}"}],
                                   ("imname", "idlocate", "ishard", "idname")))
            galleries.append(_struct(entries, ("imname", "idlocate", "ishard")))
        save_mat(test_dir / f"TestG{n}.mat", {f"TestG{n}": _struct(
            [{"Query": q, "Gallery": gal} for q, gal in zip(queries, galleries)],
            ("Query", "Gallery"))})
    return {"images": len(images), "train_images": len(images) - len(pool),
            "gallery_images": len(pool),
            "train_boxes": sum(len(b) for _, s, b in images if s == "train"),
            "gallery_boxes": sum(len(b) for _, s, b in images if s == "test"),
            "train_ids": n_train, "test_ids": n_test, "queries": n_test,
            "max_gallery_size": max(sizes, default=0), "gallery_sizes_written": len(sizes)}


def _write_prw(world, out: Path) -> dict[str, int]:
    key = "prw"
    n_train, n_test = world.pick(8, 80, 300), world.pick(8, 60, 250)
    n_cams = world.pick(3, 6, 6)
    n_distract = world.pick(3, 30, 150)  # test frames with passers-by only
    h, w = world.pick((240, 360), (360, 640), (540, 960))  # one size, as PRW's 1920x1080
    # PRW numbers identities from 1; ours: train 1..n_train, test after them
    cams_of: dict[int, list[int]] = {}
    for pid in range(1, n_train + n_test + 1):
        rng = world.rng(key, "appear", pid)
        k = int(rng.integers(2, min(3, n_cams) + 1))
        cams_of[pid] = sorted((rng.choice(n_cams, size=k, replace=False) + 1).tolist())
    plan = []  # (split, cam, labelled pids)
    for split, pids in (("train", range(1, n_train + 1)),
                        ("test", range(n_train + 1, n_train + n_test + 1))):
        for cam in range(1, n_cams + 1):
            here = {p: 1 for p in pids if cam in cams_of[p]}
            plan += [(split, cam, grp) for grp in _groups(world, f"{key}-{split}-c{cam}", here)]
    plan += [("test", int(world.rng(key, "distract", i).integers(1, n_cams + 1)), [])
             for i in range(n_distract)]
    # frame names: per camera, frames numbered in a shuffled order (train and test interleave)
    order = world.rng(key, "order").permutation(len(plan)).tolist()
    next_frame = {c: 0 for c in range(1, n_cams + 1)}
    names = [""] * len(plan)
    for idx in order:
        cam = plan[idx][1]
        next_frame[cam] += 1
        names[idx] = f"c{cam}s1_{100 + 25 * next_frame[cam]:06d}"
    frames: dict[str, list[str]] = {"train": [], "test": []}
    queries, n_boxes = [], {"train": 0, "test": 0}
    for idx, (split, cam, grp) in enumerate(plan):
        n_pass = int(world.rng(key, "pass", idx).integers(1, 3 if grp else 4))
        img, boxes = _render(world, key, idx, [PRW_PID_BASE + p for p in grp], n_pass,
                             PRW_PASSER_BASE, PRW_CAM_BASE + cam, h, w, (0.25, 0.7))
        name = names[idx]
        write_image(out / "frames" / f"{name}.jpg", img)
        rows = [[PRW_UNLABELED_ID if p is None else p - PRW_PID_BASE, *b] for p, b in boxes]
        save_mat(out / "annotations" / f"{name}.jpg.mat",
                 {"box_new": np.array(rows, dtype=np.float64)})
        frames[split].append(name)
        n_boxes[split] += len(rows)
        if split == "test":  # every appearance of a test identity is a query
            queries += [(p - PRW_PID_BASE, b, name) for p, b in boxes if p is not None]
    for split in ("train", "test"):
        save_mat(out / f"frame_{split}.mat", {f"img_index_{split}": _cell(sorted(frames[split]))})
    queries.sort(key=lambda q: (q[0], q[2]))
    atomic_write_text(out / "query_info.txt", "".join(
        f"{pid} {x} {y} {bw} {bh} {name}\r\n" for pid, (x, y, bw, bh), name in queries))
    return {"frames": len(plan), "train_images": len(frames["train"]),
            "gallery_images": len(frames["test"]), "train_boxes": n_boxes["train"],
            "gallery_boxes": n_boxes["test"], "train_ids": n_train, "test_ids": n_test,
            "queries": len(queries), "cameras": n_cams}
