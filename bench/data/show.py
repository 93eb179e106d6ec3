"""``bench data show``: a PNG contact sheet of a dataset with its annotations drawn on.

Each dataset's records are turned into :class:`Tile` s (an image, boxes, keypoints, a part
mask, a caption) by a small function per record type; the drawing is shared.  It reads
through the same readers as everything else, so it shows exactly what a task would see.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageDraw

from bench.data.base import read_image
from bench.errors import BenchError
from bench.io import atomic_write_bytes

TILE_H = 192
# LIP palette: distinct colours for the 20 classes (0 = background, transparent)
PALETTE = np.array([[0, 0, 0], [128, 0, 0], [255, 0, 0], [0, 85, 0], [170, 0, 51],
                    [255, 85, 0], [0, 0, 85], [0, 119, 221], [85, 85, 0], [0, 85, 85],
                    [85, 51, 0], [52, 86, 128], [0, 128, 0], [0, 0, 255], [51, 170, 221],
                    [0, 255, 255], [85, 255, 170], [170, 255, 85], [255, 255, 0],
                    [255, 170, 0]], dtype=np.uint8)
SKELETON = ((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
            (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4))


@dataclass
class Tile:
    image: np.ndarray
    caption: str = ""
    boxes: list[tuple[tuple[float, float, float, float], str]] = field(default_factory=list)
    keypoints: list[np.ndarray] = field(default_factory=list)  # (17, 3) each
    mask: np.ndarray | None = None  # LIP class map


TILERS: dict[str, Callable[[Any, int], list[Tile]]] = {}


def tiler(record_type: str):
    def deco(fn):
        TILERS[record_type] = fn
        return fn
    return deco


def _spread(items, n):
    """Up to ``n`` items spread evenly over the list (not just the first ones)."""
    items = list(items)
    if len(items) <= n:
        return items
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in idx]


@tiler("ReIDDataset")
def _reid(ds, n):
    query = _spread(ds.query, max(1, n // 2))
    tiles = []
    for q in query:
        tiles.append(Tile(read_image(q.path), f"q {q.pid} c{q.camid + 1}"))
        match = next((g for g in ds.gallery if g.pid == q.pid and g.camid != q.camid), None)
        if match:
            tiles.append(Tile(read_image(match.path), f"g {match.pid} c{match.camid + 1}"))
    return tiles[:n]


@tiler("ImagePool")
def _pool(ds, n):
    return [Tile(read_image(p)) for p in _spread(ds.images, n)]


@tiler("ImageTextPool")
def _pool_text(ds, n):
    idx = _spread(range(len(ds.images)), n)
    return [Tile(read_image(ds.images[i]), ds.captions[i][:40]) for i in idx]


@tiler("PedesDataset")
def _pedes(ds, n):
    return [Tile(read_image(im.path), f"{im.pid}: {im.captions[0][:40]}")
            for im in _spread(ds.test, n)]


@tiler("ClassFolders")
def _folders(ds, n):
    return [Tile(read_image(p), ds.classes[y]) for p, y in _spread(ds.train, n)]


@tiler("AttrDataset")
def _attributes(ds, n):
    names = ds.eval_attr_names
    tiles = []
    for i in _spread(range(len(ds.images)), n):
        on = [names[j] for j, a in enumerate(ds.labels[i, ds.eval_attr_idx]) if a]
        tiles.append(Tile(read_image(ds.images[i]), " ".join(on[:3])))
    return tiles


@tiler("CityPersonsImage")
def _citypersons(images, n):
    tiles = []
    for im in _spread(images, n):
        boxes = []
        for o in im.objects:
            if o.ignore:
                boxes.append((tuple(o.bbox), "grey"))
            else:
                boxes.append((tuple(o.bbox), "lime"))
                boxes.append((tuple(o.bbox_vis), "yellow"))
        tiles.append(Tile(read_image(im.image_path), im.name, boxes))
    return tiles


@tiler("LipSample")
def _lip(samples, n):
    from bench.data.base import read_label_png

    return [Tile(read_image(s.image_path), s.id, mask=read_label_png(s.mask_path))
            for s in _spread(samples, n)]


@tiler("CocoKeypoints")
def _coco(ds, n):
    by_image: dict[int, list] = {}
    for p in ds.persons:
        by_image.setdefault(p.image_id, []).append(p)
    tiles = []
    for im in _spread(ds.images, n):
        persons = by_image.get(im.id, [])
        tiles.append(Tile(read_image(im.path), f"{im.id}: {len(persons)} people",
                          [(tuple(p.bbox), "lime") for p in persons],
                          [p.keypoints for p in persons]))
    return tiles


@tiler("SearchDataset")
def _search(ds, n):
    tiles = []
    for q in _spread(ds.queries, max(1, n // 2)):
        tiles.append(Tile(read_image(q.path), f"query {q.pid}",
                          [(_xywh(q.box), "red")]))
        hit = next((g for g in ds.gallery if g.path != q.path and q.pid in set(g.pids.tolist())),
                   None)
        if hit is not None:
            boxes = [(_xywh(b), "red" if p == q.pid else "lime") for b, p in zip(hit.boxes, hit.pids)]
            tiles.append(Tile(read_image(hit.path), f"gallery {q.pid}", boxes))
    return tiles[:n]


def _xywh(box) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return (x1, y1, x2 - x1, y2 - y1)


def contact_sheet(key: str, record: Any, dest: str | Path, n: int = 16, cols: int = 8) -> Path:
    kind = type(record).__name__
    if isinstance(record, (list, tuple)) and record:
        kind = type(record[0]).__name__  # readers that return a list of per-image records
    if kind not in TILERS:
        raise BenchError(f"`bench data show` cannot draw {kind} records (dataset {key!r}) yet")
    tiles = TILERS[kind](record, n)
    if not tiles:
        raise BenchError(f"dataset {key!r} has no images to show")
    rendered = [_render(t) for t in tiles]
    cols = min(cols, len(rendered))
    rows = -(-len(rendered) // cols)
    widths = [im.width for im in rendered]
    cell_w = max(widths)
    sheet = Image.new("RGB", (cell_w * cols, (TILE_H + 14) * rows), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (im, t) in enumerate(zip(rendered, tiles)):
        x, y = (i % cols) * cell_w, (i // cols) * (TILE_H + 14)
        sheet.paste(im, (x, y))
        draw.text((x + 2, y + TILE_H + 1), t.caption[:cell_w // 6], fill=(0, 0, 0))
    import io
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return atomic_write_bytes(dest, buf.getvalue())


def _render(t: Tile) -> Image.Image:
    img = t.image.astype(np.float32)
    if t.mask is not None and t.mask.shape == img.shape[:2]:
        colour = PALETTE[np.clip(t.mask, 0, len(PALETTE) - 1)].astype(np.float32)
        on = (t.mask > 0)[..., None]
        img = np.where(on, 0.45 * img + 0.55 * colour, img)
    scale = TILE_H / img.shape[0]
    im = Image.fromarray(img.clip(0, 255).astype(np.uint8)).resize(
        (max(1, round(img.shape[1] * scale)), TILE_H), Image.BILINEAR)
    draw = ImageDraw.Draw(im)
    for (x, y, w, h), colour in t.boxes:
        draw.rectangle([x * scale, y * scale, (x + w) * scale, (y + h) * scale], outline=colour,
                       width=2)
    for kp in t.keypoints:
        for a, b in SKELETON:
            if kp[a, 2] > 0 and kp[b, 2] > 0:
                draw.line([kp[a, 0] * scale, kp[a, 1] * scale, kp[b, 0] * scale,
                           kp[b, 1] * scale], fill=(0, 255, 0), width=2)
        for x, y, v in kp:
            if v > 0:
                r = 3
                draw.ellipse([x * scale - r, y * scale - r, x * scale + r, y * scale + r],
                             fill=(255, 0, 0) if v == 2 else (0, 128, 255))
    return im

