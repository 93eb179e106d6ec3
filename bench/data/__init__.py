"""The data layer: the dataset catalogue, readers of the real on-disk formats, the synthetic world.

``DATASETS`` (:mod:`bench.data.catalog`) names every dataset the harness knows; each
dataset's reader is ``bench.data.<module>:read_<key>(root, ..., problems=None)`` and takes
the dataset's root exactly as it ships.  The synthetic world (:mod:`bench.data.synth`) writes
every one of those formats, so :func:`dataset_root` hands a task either the configured real
root or the synthetic world's copy, and nothing downstream can tell them apart.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.data.catalog import DATASETS, DatasetSpec, dataset_spec

if TYPE_CHECKING:
    from bench.config import Config


def writer_of(key: str) -> str:
    """The synthetic-world writer (``synth.world.WRITERS`` name) that produces dataset ``key``."""
    spec = dataset_spec(key)
    return key if spec.module == "reid" else spec.module


def synthetic_size(cfg: "Config", profile: str | None = None) -> str:
    """The synthetic world's size of ``profile`` (default: the run's)."""
    from bench.errors import BenchError

    name = profile or cfg.run.profile
    if name not in cfg.profiles:
        raise BenchError(f"unknown profile {name!r} (defined: {', '.join(sorted(cfg.profiles))})")
    return cfg.profiles[name].synthetic_size


def synthetic_dir(cfg: "Config", profile: str | None = None) -> Path:
    from bench.data.synth.world import default_dir

    return default_dir(cfg.cache_dir, synthetic_size(cfg, profile), cfg.data.synthetic.seed)


def dataset_root(cfg: "Config", key: str, *, profile: str | None = None,
                 make: bool = True) -> tuple[Path, str]:
    """(root, data kind) for dataset ``key``: its configured root ("real"), or the synthetic
    world's copy ("synthetic"), made on first use."""
    spec = dataset_spec(key)
    conf = cfg.data.datasets.get(key)
    if conf and conf.root:
        return cfg.path(conf.root), "real"
    out = synthetic_dir(cfg, profile)
    if make:
        from bench.data.synth import world

        world.make(out, synthetic_size(cfg, profile), cfg.data.synthetic.seed,
                   formats=[writer_of(key)])
    return out / spec.folder, "synthetic"


def read_dataset(key: str, root: str | Path, problems: Any = None) -> Any:
    """Read dataset ``key`` from ``root`` with its registered reader."""
    from bench.errors import NotImplementedYet

    reader = dataset_spec(key).load_reader()
    if reader is None:
        raise NotImplementedYet(f"the reader for {key!r}", issue=3)
    return reader(root, problems=problems)


__all__ = ["DATASETS", "DatasetSpec", "dataset_root", "dataset_spec", "read_dataset",
           "synthetic_dir", "writer_of"]
