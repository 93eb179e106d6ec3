"""The backbone zoo: one registry of factory functions, one entry point.

    from backbones import create_backbone, list_backbones
    list_backbones("solider_*")
    model = create_backbone("solider_swin_s", checkpoint="swin_small.pth", semantic_weight=0.2)

Factories are registered with ``@register_backbone(cfg=...)`` next to the model family
they build (timm's ``register_model``), each with a frozen cfg describing its weights
(input size, mean/std, feature channels and strides, paper, source).  Registration is
lazy: ``import backbones`` stays cheap, the first lookup imports the family modules.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable

from bench.registry import Registry

# Modules of this package that hold no model family.
_NOT_FAMILIES = {"pretrain"}


def _discover() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_") and mod.name not in _NOT_FAMILIES:
            importlib.import_module(f"{__name__}.{mod.name}")


BACKBONES = Registry("backbone", loader=_discover)


def register_backbone(name: str | None = None, **meta: Any) -> Callable[[Callable], Callable]:
    """Decorator for a factory ``fn(**kwargs) -> nn.Module``; ``meta`` is its frozen cfg."""
    return BACKBONES.register(name, **meta)


def list_backbones(pattern: str | None = None) -> list[str]:
    return BACKBONES.names(pattern)


def create_backbone(name: str, **kwargs: Any):
    """Build the registered backbone ``name``; keyword arguments go to its factory."""
    return BACKBONES.get(name).obj(**kwargs)


__all__ = ["BACKBONES", "create_backbone", "list_backbones", "register_backbone"]
