"""``bench.toml`` -> typed, frozen, validated configuration.

Resolution order is defaults -> file -> command line (``--set key=value``), merged key by
key before anything is built, so a file may set one field of a profile and inherit the
rest.  Every table becomes a frozen dataclass; an unknown key or a value of the wrong
type is an error that names the file and the dotted key (``bench.toml: run.seed: expected
an integer, got 'x'``).  Names that refer to registries (datasets, backbones, tasks,
profiles) are checked against them.  The resolved config is written next to each run
(:func:`dumps`), and loading that file gives the same config back.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from bench.errors import BenchError

CONFIG_FILENAME = "bench.toml"


class ConfigError(BenchError):
    pass


# --------------------------------------------------------------------------------------
# The schema.  Field comments are the documentation `bench.toml` points to.
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSection:
    backbone: str = "solider_swin_s"  # zoo name (`bench list backbones`)
    tasks: tuple[str, ...] = ("all",)  # task names, or "all" for the six SOLIDER tasks
    profile: str = "smoke"  # a key of [profiles]
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    semantic_weight: float | None = None  # λ for every task; unset: each task's official λ


@dataclass(frozen=True)
class PathsSection:
    cache_dir: str = "~/.cache/hcbench"  # synthetic world, pretraining outputs
    results_dir: str = "results"  # the results store: <results_dir>/runs/<run_id>/


@dataclass(frozen=True)
class SyntheticSection:
    seed: int = 0  # the world's size comes from the profile (profiles.<name>.synthetic_size)


@dataclass(frozen=True)
class DatasetSection:
    root: str = ""  # the dataset's root as it ships; empty: the synthetic world's copy


@dataclass(frozen=True)
class DataSection:
    synthetic: SyntheticSection = SyntheticSection()
    datasets: Mapping[str, DatasetSection] = field(default_factory=dict)  # [data.<key>]


@dataclass(frozen=True)
class BackboneSection:
    # "pretrain": train it here with the pretraining module; "random": no pretraining;
    # anything else: a checkpoint file (ours, or an official release).
    weights: str = "pretrain"
    semantic_weight: float | None = None  # λ default for this backbone


@dataclass(frozen=True)
class ProfileSection:
    description: str = ""
    # autocast dtype for training and eval; bf16 on a CPU without native bf16 (AVX-512 BF16
    # or AMX) runs in fp32, which is faster there (bench.env.run_precision)
    precision: Literal["fp32", "bf16"] = "fp32"
    synthetic_size: Literal["smoke", "small", "large"] = "smoke"
    budget_minutes: float | None = None  # stated wall-time budget of one task; None: unbounded


@dataclass(frozen=True)
class TaskSection:
    datasets: tuple[str, ...] = ()  # empty: the task's own list
    semantic_weight: float | None = None  # unset: the task's official λ
    # Per-profile schedule overrides, [tasks.<task>.schedule.<profile>]; each task checks
    # the keys against its own schedule dataclass.
    schedule: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    run: RunSection = RunSection()
    paths: PathsSection = PathsSection()
    data: DataSection = DataSection()
    backbones: Mapping[str, BackboneSection] = field(default_factory=dict)
    tasks: Mapping[str, TaskSection] = field(default_factory=dict)
    profiles: Mapping[str, ProfileSection] = field(default_factory=dict)
    source: str = field(default="<defaults>", compare=False)  # where it was read from
    base_dir: str = field(default=".", compare=False)  # relative paths resolve against this

    def profile(self) -> ProfileSection:
        return self.profiles[self.run.profile]

    def backbone(self, name: str) -> BackboneSection:
        """``[backbones.<name>]``, or its defaults (weights "pretrain") when absent."""
        return self.backbones.get(name, BackboneSection())

    def path(self, value: str) -> Path:
        """Resolve a path from the config: ``~`` expanded, relative to the config's folder."""
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else Path(self.base_dir) / p

    @property
    def results_dir(self) -> Path:
        return self.path(self.paths.results_dir)

    @property
    def cache_dir(self) -> Path:
        return self.path(self.paths.cache_dir)


DEFAULTS: dict[str, Any] = {
    "profiles": {
        "smoke": {
            "description": "synthetic world on a 2-core CPU in minutes: crops <= 128x64, "
                           "small scenes, bf16 autocast where the CPU has native bf16",
            "precision": "bf16",
            "synthetic_size": "smoke",
            "budget_minutes": 3.0,
        },
        "small": {
            "description": "the smoke schedules on the synthetic world's small size (about "
                           "2,000 images per attribute dataset, 400 LIP, 120 COCO images): "
                           "a 2-core CPU compares backbones on test sets of hundreds",
            "precision": "bf16",
            "synthetic_size": "small",
        },
        "paper": {
            "description": "the official SOLIDER downstream schedules and resolutions; "
                           "meant for GPUs and real data",
            "precision": "bf16",
            "synthetic_size": "large",
        },
    },
}

# Tables whose keys are names chosen by the user (checked against registries), not fields.
_NAMED_TABLES = {("data",): "datasets"}


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------
def load(path: str | os.PathLike | None = None, overrides: typing.Sequence[str] = (),
         *, check_names: bool = True) -> Config:
    """Load ``path`` (default: ``./bench.toml`` if present, else built-in defaults).

    ``overrides`` are ``"dotted.key=value"`` strings; values are read as TOML values
    (``run.seed=3``, ``run.tasks=["reid"]``) and fall back to plain strings
    (``run.backbone=dino_swin_t``).
    """
    raw: dict[str, Any] = {}
    source, base_dir = "<defaults>", Path.cwd()
    if path is None and Path(CONFIG_FILENAME).is_file():
        path = CONFIG_FILENAME
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: invalid TOML: {e}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        source, base_dir = str(p), p.resolve().parent
    merged = _merge(_merge({}, DEFAULTS), raw)
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(merged, key, value, item)
    cfg = _build(Config, _lift_named_tables(merged, source), (), source)
    cfg = dataclasses.replace(cfg, source=source, base_dir=str(base_dir))
    _check_values(cfg)
    if check_names:
        check_registry_names(cfg)
    return cfg


def parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted key, "
                          "like run.seed=3")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    return key, value


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(dict(out[k]), v)
        elif isinstance(v, Mapping):
            out[k] = _merge({}, v)
        else:
            out[k] = v
    return out


def _set_dotted(raw: dict[str, Any], key: str, value: Any, item: str) -> None:
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {item!r}: {'.'.join(parts[:i + 1])} is a value, "
                              "not a table")
        node = nxt
    node[parts[-1]] = value


def _lift_named_tables(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """``[data.market1501]`` sits beside the fixed ``[data.synthetic]``: move it under
    ``data.datasets`` so the dataclass schema stays uniform."""
    data = raw.get("data")
    if isinstance(data, dict):
        fixed = {f.name for f in dataclasses.fields(DataSection)} - {"datasets"}
        named = {k: v for k, v in data.items() if k not in fixed}
        for k, v in named.items():
            if not isinstance(v, dict):
                raise ConfigError(f"{source}: data.{k}: unknown key (dataset tables look "
                                  f"like [data.market1501] with root = \"...\")")
        lifted = {k: v for k, v in data.items() if k in fixed}
        lifted["datasets"] = named
        raw = {**raw, "data": lifted}
    return raw


# --------------------------------------------------------------------------------------
# Building dataclasses with type checks
# --------------------------------------------------------------------------------------
def _dotted(path: tuple[str, ...]) -> str:
    # data.datasets.X is written [data.X] in the file
    parts = [p for i, p in enumerate(path) if not (p == "datasets" and path[:i] == ("data",))]
    return ".".join(parts).replace(".[", "[") or "<top level>"


def _build(cls: type, raw: Any, path: tuple[str, ...], source: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: {_dotted(path)}: expected a table, got "
                          f"{_show(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.compare}
    unknown = [k for k in raw if k not in fields]
    if unknown:
        k = unknown[0]
        close = difflib.get_close_matches(k, list(fields), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(fields)})"
        raise ConfigError(f"{source}: {_dotted(path + (k,))}: unknown key{hint}")
    kwargs = {k: _convert(hints[k], v, path + (k,), source) for k, v in raw.items()}
    return cls(**kwargs)


def _convert(tp: Any, value: Any, path: tuple[str, ...], source: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    where = f"{source}: {_dotted(path)}"
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, source)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if value is None and len(inner) < len(args):
            return None
        if len(inner) == 1:
            return _convert(inner[0], value, path, source)
        raise TypeError(f"unsupported config type {tp}")  # schema bug, not user error
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {', '.join(map(repr, args))}, "
                              f"got {_show(value)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {_show(value)}")
        return tuple(_convert(args[0], v, path + (f"[{i}]",), source)
                     for i, v in enumerate(value))
    if origin in (collections.abc.Mapping, dict):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {_show(value)}")
        val_tp = args[1] if args else Any
        return types.MappingProxyType(
            {k: _convert(val_tp, v, path + (k,), source) for k, v in value.items()})
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {_show(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {_show(value)}")
        return value
    raise TypeError(f"unsupported config type {tp}")


def _show(value: Any) -> str:
    kind = {dict: "table", list: "list", str: "string", bool: "boolean", int: "integer",
            float: "number"}.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{text if len(text) <= 40 else text[:37] + '...'} ({kind})"


# --------------------------------------------------------------------------------------
# Cross-field checks
# --------------------------------------------------------------------------------------
def _check_values(cfg: Config) -> None:
    src = cfg.source
    if cfg.run.profile not in cfg.profiles:
        raise ConfigError(f"{src}: run.profile: unknown profile {cfg.run.profile!r} "
                          f"(defined: {', '.join(sorted(cfg.profiles))})")
    if not cfg.run.tasks:
        raise ConfigError(f"{src}: run.tasks: empty list (use [\"all\"] for every task)")
    lam = [("run.semantic_weight", cfg.run.semantic_weight)]
    lam += [(f"backbones.{k}.semantic_weight", b.semantic_weight) for k, b in cfg.backbones.items()]
    lam += [(f"tasks.{k}.semantic_weight", t.semantic_weight) for k, t in cfg.tasks.items()]
    for key, v in lam:
        if v is not None and not 0.0 <= v <= 1.0:
            raise ConfigError(f"{src}: {key}: λ must lie in [0, 1], got {v}")
    if cfg.run.device not in ("auto", "cpu", "cuda") and not _is_cuda_index(cfg.run.device):
        raise ConfigError(f"{src}: run.device: expected auto, cpu, cuda or cuda:N, "
                          f"got {cfg.run.device!r}")
    for name, p in cfg.profiles.items():
        if p.budget_minutes is not None and p.budget_minutes <= 0:
            raise ConfigError(f"{src}: profiles.{name}.budget_minutes: must be positive")
    for name, t in cfg.tasks.items():
        for prof in t.schedule:
            if prof not in cfg.profiles:
                raise ConfigError(f"{src}: tasks.{name}.schedule.{prof}: unknown profile "
                                  f"(defined: {', '.join(sorted(cfg.profiles))})")


def _is_cuda_index(device: str) -> bool:
    head, _, idx = device.partition(":")
    return head == "cuda" and idx.isdigit()


def check_registry_names(cfg: Config) -> None:
    """Table names that refer to registries must name registered entries.

    Backbone and task registries are only consulted when the file has such tables, so
    loading a config with none imports no model code.
    """
    from bench.data import DATASETS

    src = cfg.source
    _check_names(src, "data", "dataset", cfg.data.datasets, DATASETS.names())
    for name, t in cfg.tasks.items():
        for i, d in enumerate(t.datasets):
            if d not in DATASETS:
                raise ConfigError(f"{src}: tasks.{name}.datasets[{i}]: unknown dataset "
                                  f"{d!r} ({_suggest(d, DATASETS.names())})")
    if cfg.backbones:
        from backbones import BACKBONES
        _check_names(src, "backbones", "backbone", cfg.backbones, BACKBONES.names())
    if cfg.tasks:
        from adapters import TASKS
        _check_names(src, "tasks", "task", cfg.tasks, TASKS.names())


def _check_names(src: str, table: str, noun: str, names: typing.Iterable[str],
                 known: list[str]) -> None:
    for name in names:
        if name not in known:
            raise ConfigError(f"{src}: {table}.{name}: unknown {noun} name "
                              f"({_suggest(name, known)})")


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"known: {', '.join(known)}" if known else "none is registered yet"


# --------------------------------------------------------------------------------------
# Writing the resolved config back (TOML)
# --------------------------------------------------------------------------------------
def to_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain TOML-shaped data (None values dropped)."""

    def plain(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj):
            return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                    if f.compare and getattr(obj, f.name) is not None}
        if isinstance(obj, Mapping):
            return {k: plain(v) for k, v in obj.items() if v is not None}
        if isinstance(obj, tuple):
            return [plain(v) for v in obj]
        return obj

    d = plain(cfg)
    data = d.get("data", {})
    data.update(data.pop("datasets", {}))  # back to [data.<key>]
    return d


def dumps(cfg: Config) -> str:
    lines: list[str] = [f"# resolved hcbench config (from {cfg.source})"]

    def emit(table: dict[str, Any], prefix: tuple[str, ...]) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        subs = {k: v for k, v in table.items() if isinstance(v, dict)}
        if prefix and (scalars or not subs):
            lines.append("")
            lines.append("[" + ".".join(_toml_key(p) for p in prefix) + "]")
        for k, v in scalars.items():
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
        for k, v in subs.items():
            emit(v, prefix + (k,))

    emit(to_dict(cfg), ())
    return "\n".join(lines) + "\n"


def _toml_key(k: str) -> str:
    return k if k and all(c.isalnum() or c in "_-" for c in k) else _toml_value(k)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")
