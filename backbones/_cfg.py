"""The frozen cfg that travels with every zoo entry (timm's ``PretrainedCfg``).

A :class:`BackboneCfg` says what the weights are (architecture, pretraining method, paper,
where the file comes from) and how to feed them (mean/std and input size per task).  It is
registered as the entry's metadata, flattened, so ``bench list`` and the runner read plain
keys (``meta["arch"]``, ``meta["semantic_controller"]``), and as a whole under
``meta["cfg"]``.  Built models carry it as ``model.backbone_cfg``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Mapping

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)

# Input (H, W) of each downstream task as SOLIDER's six downstream repositories use it
# (reference doc section 4).  Person search resizes to min side 900 / max side 1500, which
# is no fixed size, so it has no entry here.
TASK_INPUT_SIZE = MappingProxyType({
    "reid": (384, 128),  # SOLIDER-REID configs
    "attribute": (256, 128),  # PA100k; PETA_ZS / RAP_ZS use 256x192
    "detection": (1024, 2048),  # CityPersons full frames
    "parsing": (572, 384),  # SOLIDER-HumanParsing
    "pose": (384, 288),  # SOLIDER-HumanPose coco_384x288
})

# Per-task normalisation that differs from the backbone's own: SOLIDER-REID (TransReID)
# feeds mean = std = 0.5; every other downstream repository uses ImageNet statistics.
TASK_NORM = MappingProxyType({"reid": (HALF, HALF)})

SWIN_ARCHS = MappingProxyType({
    # arch: (embed_dims, depths, num_heads)
    "swin_t": (96, (2, 2, 6, 2), (3, 6, 12, 24)),
    "swin_s": (96, (2, 2, 18, 2), (3, 6, 12, 24)),
    "swin_b": (128, (2, 2, 18, 2), (4, 8, 16, 32)),
    "test": (32, (1, 1, 2, 1), (1, 2, 4, 8)),
})


def _ro(d: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(d))


@dataclass(frozen=True)
class BackboneCfg:
    """What one zoo entry is; every field is read-only."""

    arch: str  # swin_t | swin_s | swin_b | test
    pretrain_method: str  # sup | dino | dinoclust | solider | clasp | valpat | random
    paper: str
    source: str  # where the weights come from (hcbench never downloads them)
    semantic_controller: bool = False
    semantic_weight: float | None = None  # default λ of the controller (None: no controller)
    task_prompts: tuple[str, ...] = ()  # PC-MoE task names (CLASP only)
    pretrain_input_size: tuple[int, int] = (224, 224)  # (H, W) the weights were trained at
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: Mapping[str, tuple[int, int]] = field(default_factory=lambda: TASK_INPUT_SIZE)
    task_norm: Mapping[str, tuple[tuple[float, ...], tuple[float, ...]]] = field(
        default_factory=lambda: TASK_NORM)
    feature_channels: tuple[int, ...] = ()
    feature_strides: tuple[int, ...] = (4, 8, 16, 32)
    num_features: int = 0
    notes: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_size", _ro(self.input_size))
        object.__setattr__(self, "task_norm", _ro(self.task_norm))

    def preprocessing(self, task: str) -> dict[str, Any]:
        """``{"input_size", "mean", "std"}`` for ``task`` (input_size None where not fixed)."""
        mean, std = self.task_norm.get(task, (self.mean, self.std))
        return {"input_size": self.input_size.get(task), "mean": tuple(mean), "std": tuple(std)}

    def as_meta(self) -> dict[str, Any]:
        """Registry metadata: every field flat, plus the cfg itself under ``cfg``."""
        meta = {f.name: getattr(self, f.name) for f in fields(self)}
        meta["cfg"] = self
        return meta


def swin_channels(arch: str) -> tuple[int, ...]:
    embed = SWIN_ARCHS[arch][0]
    return tuple(embed * 2 ** i for i in range(4))
