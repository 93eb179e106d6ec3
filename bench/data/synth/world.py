"""The synthetic human world: one seeded source of people, cameras and scenes, written out in
every benchmark's real on-disk format.

:class:`SynthWorld` hands out identities, cameras, crops and scenes; each is a pure function
of ``(seed, kind, keys...)`` (``world.rng(...)`` derives an independent numpy generator
from those keys), so the output does not depend on generation order and the same seed gives
byte-identical files.  Each format module (``bench/data/<format>.py``) has a
``write_synthetic(world, root) -> counts`` that writes its dataset as it ships, and
:func:`make` writes them all into a cache folder keyed by generator version, size and seed,
once: written under a temporary name and renamed when complete, with ``world.json``
(generator version, size, seed, counts per dataset) inside.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import shutil
import time
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from bench.data.synth.people import Identity, make_identity
from bench.data.synth.render import Camera, Crop, Scene, render_crop, render_scene
from bench.errors import BenchError
from bench.io import atomic_write_json

# Bumped whenever a size's content changes, so a cached world of an older generator is not
# reused: 2 tripled the smoke attribute datasets (PA100k 160 -> 480, PETA and RAP 120 -> 360);
# 3 drew the torso, skirts, coats' skirts, backpacks and held boxes (polygons were wound the
# wrong way and never filled) and added the people's fields that PETA's and RAP's evaluated
# attributes need (people.py); 4 took the smoke attribute datasets back to 160, 120 and 120
# images (the transfer checks moved to the `small` world, and the default job paid 3x).
GENERATOR_VERSION = 4
SIZES = ("smoke", "small", "large")

# Writers, in generation order: (format family, module, dataset folders it writes).
WRITERS: tuple[tuple[str, str], ...] = (
    ("market1501", "bench.data.reid:write_market1501"),
    ("msmt17", "bench.data.reid:write_msmt17"),
    ("par", "bench.data.par:write_synthetic"),
    ("search", "bench.data.search:write_synthetic"),
    ("citypersons", "bench.data.citypersons:write_synthetic"),
    ("lip", "bench.data.lip:write_synthetic"),
    ("coco", "bench.data.coco:write_synthetic"),
    ("pools", "bench.data.pools:write_synthetic"),
    ("pedes", "bench.data.pedes:write_synthetic"),
)


def _key(k: int | str) -> int:
    return k if isinstance(k, int) else zlib.crc32(k.encode())


@dataclass(frozen=True)
class SynthWorld:
    seed: int = 0
    size: str = "smoke"
    _ids: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise BenchError(f"unknown synthetic size {self.size!r} (one of {', '.join(SIZES)})")

    def pick(self, smoke, small, large):
        """The value for this world's size."""
        return {"smoke": smoke, "small": small, "large": large}[self.size]

    def rng(self, *keys: int | str) -> np.random.Generator:
        """An independent generator for one item: ``world.rng("market1501", pid, cam, i)``."""
        return np.random.default_rng([self.seed, 7, *(_key(k) for k in keys)])

    def identity(self, pid: int) -> Identity:
        if pid not in self._ids:
            self._ids[pid] = make_identity(self.seed, pid)
        return self._ids[pid]

    def camera(self, cam: int) -> Camera:
        return _camera(self.seed, cam)

    def crop(self, pid: int, cam: int, h: int, w: int, *keys: int | str,
             view: str | None = None) -> Crop:
        """Identity ``pid`` seen by camera ``cam`` in an ``h`` x ``w`` crop."""
        return render_crop(self.identity(pid), self.camera(cam), h, w,
                           self.rng("crop", pid, cam, h, w, *keys), view=view)

    def scene(self, pids: Iterable[int], cam: int, h: int, w: int, *keys: int | str,
              kinds: list[str] | None = None, min_height: float = 0.15,
              max_height: float = 0.7) -> Scene:
        pids = list(pids)
        return render_scene([self.identity(p) for p in pids], self.camera(cam), h, w,
                            self.rng("scene", cam, h, w, *keys), kinds=kinds,
                            min_height=min_height, max_height=max_height)


@lru_cache(maxsize=256)
def _camera(seed: int, cam: int) -> Camera:
    return Camera.make(seed, cam)


def _load(ref: str) -> Callable:
    mod, _, fn = ref.partition(":")
    return getattr(importlib.import_module(mod), fn)


def default_dir(cache_dir: Path, size: str, seed: int) -> Path:
    return Path(cache_dir) / "synthetic" / f"v{GENERATOR_VERSION}-{size}-seed{seed}"


def make(out: Path, size: str = "smoke", seed: int = 0, *, formats: Iterable[str] | None = None,
         progress: Callable[[str], None] | None = None, force: bool = False) -> dict:
    """Write the synthetic world into ``out`` (once); returns its manifest.

    ``formats`` restricts generation to some format families (names of ``WRITERS``).  An
    existing complete world (``world.json`` present, same version/size/seed, every asked
    format in it) is reused as it is.
    """
    out = Path(out)
    wanted = [name for name, _ in WRITERS] if formats is None else list(formats)
    unknown = [f for f in wanted if f not in dict(WRITERS)]
    if unknown:
        raise BenchError(f"unknown synthetic format(s) {unknown} "
                         f"(known: {', '.join(n for n, _ in WRITERS)})")
    manifest_path = out / "world.json"
    manifest = _read_manifest(manifest_path)
    if manifest and not force:
        if (manifest.get("generator_version"), manifest.get("size"), manifest.get("seed")) != (
                GENERATOR_VERSION, size, seed):
            raise BenchError(f"{manifest_path}: this folder holds another world "
                             f"(v{manifest.get('generator_version')}, {manifest.get('size')}, "
                             f"seed {manifest.get('seed')})")
        if all(f in manifest["formats"] for f in wanted):
            return manifest
    out.mkdir(parents=True, exist_ok=True)
    with _locked(out):  # two runs sharing a cache: one writes, the other waits and reuses
        return _make_locked(out, size, seed, wanted, progress, force)


def _make_locked(out: Path, size: str, seed: int, wanted: list[str],
                 progress: Callable[[str], None] | None, force: bool) -> dict:
    manifest = _read_manifest(out / "world.json")  # again: another process may have written it
    if manifest and not force and all(f in manifest["formats"] for f in wanted):
        return manifest
    from bench import timing

    with timing.phase(timing.DATA):
        return _write(out, size, seed, wanted, progress, force, manifest)


@contextlib.contextmanager
def _locked(out: Path):
    """An exclusive lock (``out/.lock``, POSIX flock) held while the world is written."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(out / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _write(out: Path, size: str, seed: int, wanted: list[str],
           progress: Callable[[str], None] | None, force: bool, manifest: dict | None) -> dict:
    manifest_path = out / "world.json"
    world = SynthWorld(seed=seed, size=size)
    formats_done = dict(manifest["formats"]) if manifest and not force else {}
    for name, ref in WRITERS:
        if name not in wanted or name in formats_done:
            continue
        if progress:
            progress(name)
        t0 = time.time()
        staging = out / f".tmp-{name}"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
        counts = _load(ref)(world, staging)
        # move each written dataset folder into place (replacing a stale one)
        for child in staging.iterdir():
            target = out / child.name
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            child.rename(target)
        staging.rmdir()
        formats_done[name] = {"counts": counts, "seconds": round(time.time() - t0, 2)}
        atomic_write_json(manifest_path, {"generator_version": GENERATOR_VERSION, "size": size,
                                          "seed": seed, "formats": formats_done})
    return _read_manifest(manifest_path)


def _read_manifest(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BenchError(f"{path}: damaged synthetic-world manifest ({e}); delete the folder "
                         "and make it again") from None
