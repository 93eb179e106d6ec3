"""What every dataset reader shares: errors naming the file, problem collection, image I/O,
a restricted unpickler, and .mat loading with clear errors.

Readers take a ``problems`` argument.  By default (``None``) the first problem raises a
:class:`DataError` naming the file and what is wrong with it.  ``bench data check`` passes a
collecting :class:`Problems` instead, so a reader reports every problem it finds (a
missing folder still stops it: nothing after it can be checked).
"""
from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from bench.errors import BenchError
from bench.io import atomic_write_bytes


class DataError(BenchError):
    """A dataset file is missing or malformed; the message starts with the file's path."""


@dataclass(frozen=True)
class Problem:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class Problems:
    """Collects problems (``strict=False``) or raises on the first one (``strict=True``)."""

    def __init__(self, strict: bool = False, check_images: bool = True):
        self.strict = strict
        self.check_images = check_images  # decode every image (slow) rather than stat it
        self.items: list[Problem] = []

    def add(self, path: str | os.PathLike, reason: str) -> None:
        if self.strict:
            raise DataError(f"{path}: {reason}")
        self.items.append(Problem(str(path), reason))

    def fatal(self, path: str | os.PathLike, reason: str) -> DataError:
        """Record a problem that stops the reader, and return the error to raise."""
        self.items.append(Problem(str(path), reason))
        return DataError(f"{path}: {reason}")

    def __bool__(self) -> bool:
        return bool(self.items)


def problems_or_strict(problems: Problems | None) -> Problems:
    return problems if problems is not None else Problems(strict=True, check_images=False)


def require_dir(path: Path, problems: Problems, what: str = "folder") -> None:
    if not path.is_dir():
        raise problems.fatal(path, f"missing {what}")


def require_file(path: Path, problems: Problems, what: str = "file") -> bool:
    if not path.is_file():
        problems.add(path, f"missing {what}")
        return False
    return True


def check_image(path: Path, problems: Problems) -> bool:
    """The image exists (and, when checking images, decodes completely)."""
    if not path.is_file():
        problems.add(path, "missing image")
        return False
    if problems.check_images:
        try:
            with Image.open(path) as im:
                im.load()
        except (OSError, UnidentifiedImageError, SyntaxError) as e:
            problems.add(path, f"unreadable image ({e})")
            return False
    return True


def image_ok(path: Path, problems: Problems, context: str = "") -> bool:
    """Decode the image when checking images; otherwise only require that it exists."""
    if problems.check_images:
        return check_image(path, problems)
    if not path.is_file():
        problems.add(path, f"missing image ({context})" if context else "missing image")
        return False
    return True


def read_image(path: str | os.PathLike) -> np.ndarray:
    """RGB uint8 (H, W, 3); a missing, truncated or non-image file raises DataError."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise DataError(f"{path}: missing image") from None
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise DataError(f"{path}: unreadable image ({e})") from None


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """A label map stored as a single-channel PNG -> uint8 (H, W)."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I"):
                raise DataError(f"{path}: label map must be a single-channel PNG, got mode {im.mode}")
            return np.asarray(im).astype(np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: missing label map") from None
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise DataError(f"{path}: unreadable label map ({e})") from None


def encode_image(arr: np.ndarray, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    im = Image.fromarray(arr)
    if fmt == "JPEG":
        im.save(buf, format="JPEG", quality=92)
    else:
        im.save(buf, format=fmt)
    return buf.getvalue()


def write_image(path: str | os.PathLike, arr: np.ndarray) -> None:
    """Write RGB (JPEG for .jpg/.jpeg, PNG otherwise) or a label map (2-D -> PNG)."""
    suffix = Path(path).suffix.lower()
    atomic_write_bytes(path, encode_image(arr, "JPEG" if suffix in (".jpg", ".jpeg") else "PNG"))


# --------------------------------------------------------------------------------------
# .mat files
# --------------------------------------------------------------------------------------
def load_mat(path: Path, problems: Problems | None = None, **kwargs: Any) -> dict[str, Any]:
    """scipy.io.loadmat with a clear error for missing or malformed files."""
    import scipy.io
    from scipy.io.matlab import MatReadError

    if not path.is_file():
        raise problems_or_strict(problems).fatal(path, "missing .mat file")
    try:
        return scipy.io.loadmat(str(path), **kwargs)
    except (MatReadError, ValueError, TypeError, OSError, NotImplementedError) as e:
        raise problems_or_strict(problems).fatal(path, f"unreadable .mat file ({e})") from None


# --------------------------------------------------------------------------------------
# Restricted unpickling (RethinkPAR's dataset_*.pkl)
# --------------------------------------------------------------------------------------
_ALLOWED = {
    ("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"), ("builtins", "set"),
    ("builtins", "frozenset"), ("builtins", "str"), ("builtins", "int"), ("builtins", "float"),
    ("builtins", "bool"), ("builtins", "bytes"), ("builtins", "complex"), ("builtins", "range"),
    ("builtins", "slice"),
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}
# Containers that are plain dicts with attribute access: read back as dict.
_AS_DICT = {("easydict", "EasyDict")}


class _PlainDict(dict):
    """Stands in for EasyDict while unpickling: its items load, its attribute state is
    ignored (EasyDict mirrors every item as an attribute)."""

    def __setstate__(self, state: Any) -> None:
        pass


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):  # _PlainDict included: back to a plain dict
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


class _Refused(pickle.UnpicklingError):
    """A global outside the allowed set (as opposed to a malformed pickle stream)."""


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _AS_DICT:
            return _PlainDict
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise _Refused(f"refusing to load {module}.{name}")


def safe_load_pickle(path: str | os.PathLike) -> Any:
    """Unpickle admitting only plain containers, scalars and numpy arrays.

    Anything else (a function, a class with ``__reduce__``, ``os.system``) is refused
    before it is called, so a malicious file cannot run code.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: missing pickle file")
    try:
        with open(p, "rb") as f:
            return _plain(_SafeUnpickler(f, encoding="latin1").load())
    except _Refused as e:
        raise DataError(f"{p}: refused: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            ImportError, KeyError, MemoryError, OverflowError) as e:
        raise DataError(f"{p}: malformed pickle ({type(e).__name__}: {e})") from None
