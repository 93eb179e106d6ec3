"""Reading backbone weights: official SOLIDER files, Microsoft / timm Swin, and our own.

Three formats, told apart by their contents:

* **SOLIDER** (tinyvision/SOLIDER and its six downstream forks): a full training dict
  ``{'student', 'teacher', 'optimizer', 'epoch', ...}``.  As the official
  ``SwinTransformer.init_weights`` does: take ``teacher`` if present, then ``state_dict`` or
  ``model`` if present, else the dict itself; keep the ``backbone.``-prefixed keys and strip
  ``backbone.`` and ``module.`` (the student is saved DDP-wrapped, ``module.backbone.*``).
  A bare mmdet-layout state dict (``stages.*``, no prefix) loads the same way.
* **ImageNet Swin**, Microsoft's release (``layers.{i}.downsample`` at the *end* of stages
  0-2, under ``model``) or timm's (``layers.{i}.downsample`` at the *start* of layers 1-3):
  renamed to the official layout (``attn.*`` -> ``attn.w_msa.*``, ``mlp.fc1/fc2`` ->
  ``ffn.layers.0.0 / ffn.layers.1``, ``patch_embed.proj`` -> ``patch_embed.projection``,
  final ``norm`` -> ``norm3``), classifier dropped, and the PatchMerging ``norm`` /
  ``reduction`` permuted from the concat order (x0, x1, x2, x3) to the ``nn.Unfold``
  channel-major order (the same permutation as the official ``swin_converter``).
* **ours**: ``*.safetensors`` written by :func:`save_checkpoint`, with a JSON sidecar
  (``<name>.json``) naming the architecture and pretraining method; a mismatch with the
  backbone it is loaded into is an error.

Pickled files are read with ``torch.load(weights_only=True)``: tensors and plain containers
only (plus ``argparse.Namespace``, the ``args`` entry of SOLIDER's training dict), so a file
carrying code is refused without running it.  Loading is strict by default:
every missing or unexpected key is reported in one :class:`BenchError` naming the file and
the likely cause.  Relative-position tables of another window size are resized bicubically
(as the official loader does); ``relative_position_index`` is a derived buffer and is always
recomputed; ``norm{i}`` of a stage the backbone does not output is ignored.  An ImageNet Swin
has only the final norm (``norm3``): ``norm0..norm2`` keep their identity init (weight 1,
bias 0), which is what the official non-strict load leaves them at; the report lists them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.errors import BenchError
from bench.io import atomic_write_bytes, atomic_write_json

Tensor = torch.Tensor
FORMAT_TAG = "hcbench-backbone"
# Beyond tensors and plain containers, the one type a released SOLIDER file holds: the
# training script's ``args`` (an argparse.Namespace, rebuilt as a bag of attributes).
SAFE_GLOBALS = [argparse.Namespace]


class CheckpointError(BenchError):
    """A strict load failed; the message names the file and the likely cause, and the
    full key lists are kept as attributes."""

    def __init__(self, message: str, missing=(), unexpected=(), mismatched=()):
        super().__init__(message)
        self.missing, self.unexpected = tuple(missing), tuple(unexpected)
        self.mismatched = tuple(mismatched)


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_checkpoint` did."""

    path: str
    format: str  # solider | mmdet | ms_swin | timm_swin | hcbench
    loaded: int  # tensors copied into the model
    resized: tuple[str, ...] = ()  # relative-position tables interpolated to the window
    ignored: tuple[str, ...] = ()  # keys deliberately not loaded (heads, buffers, unused norms)
    kept_init: tuple[str, ...] = ()  # keys the format cannot have; they keep their init
    missing: tuple[str, ...] = ()  # only with strict=False
    unexpected: tuple[str, ...] = ()  # only with strict=False (unexpected or mis-shaped)
    meta: Mapping[str, Any] = field(default_factory=dict)  # our sidecar, if any


# --------------------------------------------------------------------------------------
# reading files
# --------------------------------------------------------------------------------------
def read_raw(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The file's top-level object (a dict) and our sidecar metadata (empty for others)."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise BenchError(f"{path}: refused to load: the pickle holds more than tensors and "
                         f"plain containers (torch.load weights_only=True): "
                         f"{_unpickling_reason(e)}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BenchError(f"{path}: not a readable torch checkpoint ({first})") from None
    if not isinstance(obj, Mapping):
        raise BenchError(f"{path}: expected a dict of tensors (or a training dict holding one), "
                         f"got {type(obj).__name__}")
    return dict(obj), {}


def _unpickling_reason(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:
        if "GLOBAL" in ln or "Unsupported" in ln:
            return ln
    return lines[0] if lines else type(e).__name__


def _read_safetensors(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise BenchError(f"{path}: not a readable safetensors file ({e})") from None
    meta = _sidecar_meta(path)
    if not meta and FORMAT_TAG in header:
        meta = json.loads(header[FORMAT_TAG])
    return tensors, meta


def _sidecar_meta(path: Path) -> dict[str, Any]:
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return {}
    try:
        meta = json.loads(sidecar.read_text())
    except json.JSONDecodeError as e:
        raise BenchError(f"{sidecar}: invalid JSON sidecar ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_TAG:
        return {}  # some other tool's JSON: treat the weights as a foreign file
    return meta


def read_meta(path: str | Path) -> dict[str, Any]:
    """Our metadata of a checkpoint (sidecar, else the safetensors header) without reading
    its tensors; empty for a file that is not ours (an official release, timm or Microsoft
    weights)."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"{path}: checkpoint file not found")
    meta = _sidecar_meta(path)
    if not meta and path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                header = f.metadata() or {}
        except (SafetensorError, OSError) as e:
            raise BenchError(f"{path}: not a readable safetensors file ({e})") from None
        if FORMAT_TAG in header:
            meta = json.loads(header[FORMAT_TAG])
    return meta


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def unwrap(obj: Mapping[str, Any], path: str | Path = "checkpoint",
           dropped: list[str] | None = None) -> tuple[dict[str, Tensor], str]:
    """The backbone state dict inside a checkpoint, in the official key layout, and its format
    (``solider``, ``mmdet``, ``ms_swin`` or ``timm_swin``).  Keys left out (heads, derived
    buffers) are appended to ``dropped`` if given."""
    dropped = [] if dropped is None else dropped
    fmt = "mmdet"
    if "teacher" in obj and isinstance(obj["teacher"], Mapping):
        obj, fmt = obj["teacher"], "solider"
    for k in ("state_dict", "model"):
        if k in obj and isinstance(obj[k], Mapping):
            obj = obj[k]
            break
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise BenchError(f"{path}: expected a state dict of tensors; {len(bad)} entries are not "
                         f"tensors (e.g. {bad[0]!r}): is this a full training dict without "
                         f"'teacher' / 'state_dict' / 'model'?")
    sd = {_strip(k, "module."): v for k, v in obj.items()}
    if any(k.startswith("backbone.") for k in sd):
        dropped.extend(k for k in sd if not k.startswith("backbone."))
        sd = {_strip(k[len("backbone."):], "module."): v for k, v in sd.items()
              if k.startswith("backbone.")}
    if any(k.startswith("layers.") for k in sd):
        dropped.extend(k for k in sd if k.startswith("head")
                       or k.endswith(("relative_position_index", "attn_mask")))
        if "layers.0.downsample.reduction.weight" in sd:
            return ms_swin_to_official(sd), "ms_swin"
        return timm_swin_to_official(sd), "timm_swin"
    return sd, fmt


def _strip(key: str, prefix: str) -> str:
    return key[len(prefix):] if key.startswith(prefix) else key


# --------------------------------------------------------------------------------------
# ImageNet Swin -> official layout
# --------------------------------------------------------------------------------------
def concat_to_unfold_order(t: Tensor) -> Tensor:
    """Permute the last dim (4C) from the concat order of MS/timm PatchMerging
    (index ``(2*dx + dy) * C + c``) to ``nn.Unfold``'s (index ``c * 4 + 2*dy + dx``)."""
    *lead, n = t.shape
    c = n // 4
    t = t.reshape(*lead, 2, 2, c)  # dx, dy, c
    nd = len(lead)
    return t.permute(*range(nd), nd + 2, nd + 1, nd).reshape(*lead, n)


_RENAMES = (
    (re.compile(r"^patch_embed\.proj\."), "patch_embed.projection."),
    (re.compile(r"\.attn\.(?!w_msa\.)"), ".attn.w_msa."),
    (re.compile(r"\.mlp\.fc1\."), ".ffn.layers.0.0."),
    (re.compile(r"\.mlp\.fc2\."), ".ffn.layers.1."),
    (re.compile(r"^norm\."), "norm3."),
)


def _imagenet_swin_to_official(sd: Mapping[str, Tensor],
                               downsample_shift: int) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for k, v in sd.items():
        if k.startswith("head") or k.endswith(("relative_position_index", "attn_mask")):
            continue  # classifier, derived buffers
        m = re.match(r"^layers\.(\d+)\.(.*)$", k)
        if m:
            i, rest = int(m.group(1)), m.group(2)
            if rest.startswith("downsample."):
                i += downsample_shift
                if rest.endswith(("reduction.weight", "norm.weight", "norm.bias")):
                    v = concat_to_unfold_order(v)
            k = f"stages.{i}.{rest}"
        for pat, new in _RENAMES:
            k = pat.sub(new, k)
        out[k] = v
    return out


def ms_swin_to_official(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Microsoft Swin (downsample at the end of stages 0-2) -> official SOLIDER keys."""
    return _imagenet_swin_to_official(sd, 0)


def timm_swin_to_official(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """timm Swin (downsample at the start of layers 1-3) -> official SOLIDER keys."""
    return _imagenet_swin_to_official(sd, -1)


def resize_rel_pos_table(table: Tensor, size: int) -> Tensor:
    """Bicubically resize a ((2w-1)^2, heads) table to (size, heads), as the official loader."""
    n1, heads = table.shape
    s1, s2 = int(n1 ** 0.5), int(size ** 0.5)
    grid = table.float().permute(1, 0).reshape(1, heads, s1, s1)
    out = F.interpolate(grid, size=(s2, s2), mode="bicubic")
    return out.reshape(heads, s2 * s2).permute(1, 0).contiguous().to(table.dtype)


# --------------------------------------------------------------------------------------
# loading into a model
# --------------------------------------------------------------------------------------
def load_checkpoint(model: nn.Module, path: str | Path, strict: bool = True) -> LoadReport:
    """Load ``path`` into ``model`` (see the module docstring for the formats).

    ``strict=True`` (default): any missing, unexpected or mis-shaped key is a
    :class:`BenchError` naming the file and the likely cause.  ``strict=False`` loads what
    fits and lists the rest in the returned :class:`LoadReport`.
    """
    raw, meta = read_raw(path)
    dropped: list[str] = []
    if meta:
        _check_sidecar(model, path, meta)
        sd, fmt = dict(raw), "hcbench"
    else:
        sd, fmt = unwrap(raw, path, dropped)
    report = load_state_dict(model, sd, path=str(path), fmt=fmt, strict=strict, meta=meta)
    return dataclasses.replace(report, ignored=tuple(dropped) + report.ignored)


# Keys a format cannot have, which keep the model's init: ImageNet Swin has one final norm.
_NEVER_IN = {"ms_swin": r"norm[0-2]\.(weight|bias)", "timm_swin": r"norm[0-2]\.(weight|bias)"}


def load_state_dict(model: nn.Module, sd: Mapping[str, Tensor], path: str = "state dict",
                    fmt: str = "mmdet", strict: bool = True,
                    meta: Mapping[str, Any] | None = None) -> LoadReport:
    """Load an official-layout state dict (see :func:`load_checkpoint`); ``fmt`` as
    :func:`unwrap` returns it."""
    own = model.state_dict()
    sd = dict(sd)
    ignored, resized = [], []
    out_indices = set(getattr(model, "out_indices", ()))
    for k in list(sd):
        m = re.fullmatch(r"norm(\d+)\.(weight|bias)", k)
        if k not in own and m and out_indices and int(m.group(1)) not in out_indices:
            ignored.append(k)  # the norm of a stage this backbone does not output
            del sd[k]
        elif k.endswith("relative_position_index"):
            del sd[k]  # derived from the window size; ours is always right
    for k, v in own.items():
        if k.endswith("relative_position_index"):
            sd[k] = v
    for k, v in list(sd.items()):
        if (k.endswith("relative_position_bias_table") and k in own
                and v.shape != own[k].shape and v.shape[1] == own[k].shape[1]):
            sd[k] = resize_rel_pos_table(v, own[k].shape[0])
            resized.append(k)

    never = re.compile(_NEVER_IN.get(fmt, r"(?!)"))
    kept_init = [k for k in own if k not in sd and never.fullmatch(k)]
    missing = [k for k in own if k not in sd and k not in kept_init]
    unexpected = [k for k in sd if k not in own]
    mismatched = [k for k in sd if k in own and sd[k].shape != own[k].shape]
    if strict and (missing or unexpected or mismatched):
        raise CheckpointError(_diagnose(model, path, sd, own, missing, unexpected, mismatched),
                              missing, unexpected, mismatched)
    loadable = {k: v for k, v in sd.items() if k in own and k not in mismatched}
    model.load_state_dict(loadable, strict=False)
    return LoadReport(path=path, format=fmt, loaded=len(loadable), resized=tuple(resized),
                      ignored=tuple(ignored), kept_init=tuple(kept_init), missing=tuple(missing),
                      unexpected=tuple(unexpected + mismatched), meta=dict(meta or {}))


def _describe_swin(sd: Mapping[str, Tensor]) -> str | None:
    """'embed 96, depths (2, 2, 6, 2)' of an official-layout state dict, if it is one."""
    w = sd.get("patch_embed.projection.weight")
    if w is None:
        return None
    depths: dict[int, int] = {}
    for k in sd:
        m = re.match(r"^stages\.(\d+)\.blocks\.(\d+)\.", k)
        if m and not k.endswith("relative_position_index"):  # that one is always ours
            i, j = int(m.group(1)), int(m.group(2))
            depths[i] = max(depths.get(i, 0), j + 1)
    return f"embed {w.shape[0]}, depths {tuple(depths[i] for i in sorted(depths))}"


def _few(keys: list[str], n: int = 4) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def summarize_keys(keys: list[str], full: int = 6) -> str:
    """Every key, compactly: listed as is up to ``full`` keys, else grouped with block and
    stage numbers as ``*`` (``stages.*.blocks.*.norm1.weight x12``)."""
    if len(keys) <= full:
        return ", ".join(keys)
    groups: dict[str, int] = {}
    for k in keys:
        pat = re.sub(r"(?<!ffn\.)\b(stages|blocks|layers|semantic_embed_[wb])\.\d+\.",
                     r"\1.*.", k)
        groups[pat] = groups.get(pat, 0) + 1
    return ", ".join(f"{p} x{n}" if n > 1 else p for p, n in groups.items())


def _diagnose(model: nn.Module, path: str, sd, own, missing, unexpected, mismatched) -> str:
    name = getattr(model, "backbone_name", None) or type(model).__name__
    causes = []
    given = {k for k in sd if not k.endswith("relative_position_index")}  # others are ours
    if not given & set(own):
        prefix = next((k[:-len(o)] for k in sorted(given) for o in own
                       if k.endswith("." + o)), None)
        hint = f"its keys sit under {prefix!r}" if prefix else "not a Swin backbone?"
        causes.append(f"none of its {len(given)} keys match (first: {_few(sorted(given), 2)}): "
                      f"wrong prefix ({hint}); expected keys like 'patch_embed.projection.weight', "
                      f"optionally under 'backbone.' / 'module.' or inside a SOLIDER training dict")
    else:
        theirs, ours = _describe_swin(sd), _describe_swin(own)
        if theirs and ours and theirs != ours:
            causes.append(f"wrong variant: the checkpoint is a Swin with {theirs}, "
                          f"{name} has {ours}")
        if any(k.startswith("semantic_embed") for k in missing) and not any(
                k.startswith("semantic_embed") for k in sd):
            causes.append("the checkpoint has no semantic controller (semantic_embed_*): load it "
                          "into a backbone without one (sup_*, dino_*, dinoclust_*, valpat_*)")
        if any(k.startswith("semantic_embed") for k in unexpected):
            causes.append("the checkpoint has a semantic controller: load it into a solider_* "
                          "backbone (or one built with semantic_weight=<float>)")
        moe = ("task_prompts", ".ffn.experts.", ".ffn.gate_")
        if any(any(t in k for t in moe) for k in unexpected):
            causes.append("the checkpoint has CLASP PC-MoE weights: load it into a clasp_* "
                          "backbone")
        if any(any(t in k for t in moe) for k in missing) and not any(
                any(t in k for t in moe) for k in sd):
            causes.append("this is a CLASP (PC-MoE) backbone and the checkpoint is a dense Swin")
    if not causes:
        causes.append("the checkpoint and the backbone differ in structure")
    parts = [f"{path}: cannot load strictly into {name}: {'; '.join(causes)}"]
    if missing:
        parts.append(f"{len(missing)} missing: {summarize_keys(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {summarize_keys(unexpected)}")
    if mismatched:
        first = mismatched[0]
        parts.append(f"{len(mismatched)} with another shape (e.g. {first} "
                     f"{tuple(sd[first].shape)} here vs {tuple(own[first].shape)} in the "
                     f"backbone): {summarize_keys(mismatched)}")
    return "; ".join(parts)


def _check_sidecar(model: nn.Module, path: str | Path, meta: Mapping[str, Any]) -> None:
    cfg = getattr(model, "backbone_cfg", None)
    name = getattr(model, "backbone_name", None) or type(model).__name__
    if meta.get("format") not in (None, FORMAT_TAG):
        raise BenchError(f"{sidecar_path(path)}: format {meta.get('format')!r} is not "
                         f"{FORMAT_TAG!r}")
    if cfg is not None and meta.get("arch") and meta["arch"] != cfg.arch:
        raise BenchError(f"{path}: the checkpoint is a {meta['arch']} (per "
                         f"{sidecar_path(path).name}), backbone {name!r} is a {cfg.arch}: "
                         f"wrong variant")
    theirs, ours = meta.get("task_prompts"), getattr(model, "tasks", None)
    if theirs is not None and ours is not None and tuple(theirs) != tuple(ours):
        raise BenchError(f"{path}: task prompts {tuple(theirs)} differ from {name}'s "
                         f"{tuple(ours)}; the prompt rows would be misassigned")


# --------------------------------------------------------------------------------------
# saving ours
# --------------------------------------------------------------------------------------
def save_checkpoint(model: nn.Module, path: str | Path, **extra: Any) -> Path:
    """Write ``model``'s state dict as safetensors plus a JSON sidecar describing it.

    The sidecar (``<name>.json``) names the backbone, its arch and pretraining method and
    the constructor knobs that change the key layout; ``extra`` adds fields (epoch, data,
    git commit...).  The same JSON is stored in the safetensors header, so the file is
    self-describing if the sidecar is lost.  Both files are written atomically.
    """
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise BenchError(f"{path}: our checkpoints are written as .safetensors")
    cfg = getattr(model, "backbone_cfg", None)
    meta = {
        "format": FORMAT_TAG, "version": 1,
        "backbone": getattr(model, "backbone_name", None),
        "arch": cfg.arch if cfg else None,
        "pretrain_method": cfg.pretrain_method if cfg else None,
        "semantic_controller": bool(getattr(model, "has_controller", False)),
        "window_size": getattr(model, "window_size", None),
        "strides": list(getattr(model, "strides", ())),
        "out_indices": list(getattr(model, "out_indices", ())),
    }
    if getattr(model, "tasks", None) is not None:
        meta["task_prompts"] = list(model.tasks)
    meta.update(extra)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    header = {FORMAT_TAG: json.dumps(meta, sort_keys=True, default=str)}
    atomic_write_bytes(path, save(tensors, metadata=header))
    atomic_write_json(sidecar_path(path), meta)
    return path


__all__ = ["CheckpointError", "LoadReport", "concat_to_unfold_order", "load_checkpoint",
           "load_state_dict", "ms_swin_to_official", "read_meta", "read_raw",
           "resize_rel_pos_table", "save_checkpoint", "summarize_keys", "timm_swin_to_official",
           "unwrap"]
