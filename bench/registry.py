"""A small decorator-based registry, shared by the backbone zoo and the task list.

Modelled on timm's ``register_model``: an entry is a name, the object it builds,
and frozen metadata describing it.  Names are unique (registering one twice is an
error, never a silent overwrite), lookups of unknown names fail with the closest
registered names, and ``names("swin*")`` filters with shell-style patterns.

    BACKBONES = Registry("backbone")

    @BACKBONES.register(paper="SOLIDER (CVPR 2023)")
    def solider_swin_s(**kw): ...

    BACKBONES.get("solider_swin_s").obj(**kw)
"""
from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping

from bench.errors import BenchError


class RegistryError(BenchError):
    """A registry lookup or registration failed."""


@dataclass(frozen=True)
class Entry:
    """One registered object: its name, the object, and read-only metadata."""

    name: str
    obj: Any
    meta: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


class Registry:
    """Name -> :class:`Entry`, filled by the :meth:`register` decorator.

    ``loader`` (optional) is called once before the first lookup; registries
    whose members live in modules that are expensive to import use it to import
    them lazily, so that importing the registry itself stays cheap.
    """

    def __init__(self, kind: str, loader: Callable[[], None] | None = None):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._loader = loader
        self._loaded = loader is None

    # -- registration -------------------------------------------------------------
    def register(self, name: str | None = None, **meta: Any) -> Callable[[Any], Any]:
        """Decorator: register the decorated object under ``name`` (default: its ``__name__``)."""

        def deco(obj: Any) -> Any:
            self.add(name or obj.__name__, obj, **meta)
            return obj

        return deco

    def add(self, name: str, obj: Any, **meta: Any) -> Entry:
        if not isinstance(name, str) or not name:
            raise RegistryError(f"{self.kind} names must be non-empty strings, got {name!r}")
        if name in self._entries:
            prev = self._entries[name].obj
            where = getattr(prev, "__module__", "?")
            raise RegistryError(f"{self.kind} {name!r} is already registered (by {where})")
        entry = Entry(name, obj, MappingProxyType(dict(meta)))
        self._entries[name] = entry
        return entry

    # -- lookup -------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._loaded = True  # set first: the loader registers through add()
            assert self._loader is not None
            self._loader()

    def get(self, name: str) -> Entry:
        self._ensure_loaded()
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(self._unknown_message(name)) from None

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        self._ensure_loaded()
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._entries)

    def names(self, pattern: str | None = None) -> list[str]:
        """Sorted names, optionally filtered by a shell pattern (``"solider_*"``)."""
        self._ensure_loaded()
        names = sorted(self._entries)
        if pattern:
            names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        return names

    def _unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name), list(self._entries), n=3, cutoff=0.5)
        msg = f"unknown {self.kind} {name!r}"
        if close:
            msg += f"; did you mean {', '.join(repr(c) for c in close)}?"
        elif self._entries:
            msg += f"; `bench list` shows the {len(self._entries)} registered {self.kind}s"
        else:
            msg += f"; no {self.kind} is registered yet"
        return msg
