"""DINO's projection head and the multi-crop wrapper (SOL:``vision_transformer.py::DINOHead``,
``utils.py::MultiCropCondWrapper``), written for our Swin.

State-dict keys are the official ones (``head.mlp.{0,2,4}``, ``head.last_layer.weight_g`` /
``weight_v``; ``backbone.<swin key>``), so a training dict we write has the layout of
SOLIDER's released files (reference doc, section 3).
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

Tensor = torch.Tensor


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, m: float) -> None:
    """teacher <- m * teacher + (1 - m) * student, parameter by parameter (DINO's momentum
    teacher, MoCo's key encoder)."""
    for ps, pt in zip(student.parameters(), teacher.parameters()):
        pt.mul_(m).add_(ps.detach(), alpha=1 - m)


def _trunc_normal(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class DINOHead(nn.Module):
    """MLP (``nlayers`` Linear, GELU between) -> bottleneck -> L2 normalise -> weight-normed
    last layer.  ``norm_last_layer`` freezes the weight-norm gain at 1, as DINO does."""

    def __init__(self, in_dim: int, out_dim: int, nlayers: int = 3, hidden_dim: int = 2048,
                 bottleneck_dim: int = 256, norm_last_layer: bool = True):
        super().__init__()
        nlayers = max(nlayers, 1)
        if nlayers == 1:
            self.mlp = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim), nn.GELU()]
            for _ in range(nlayers - 2):
                layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        self.apply(_trunc_normal)
        with warnings.catch_warnings():  # the old API keeps the official weight_g/weight_v keys
            warnings.simplefilter("ignore")
            self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last_layer.weight_g.data.fill_(1)
        if norm_last_layer:
            self.last_layer.weight_g.requires_grad = False

    def forward(self, x: Tensor) -> Tensor:
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)


class MultiCropWrapper(nn.Module):
    """``backbone`` + ``head`` over a list of crops: one backbone call per run of crops of the
    same size (the official groups by width), the head on all pooled features at once.

    ``forward(crops, lams)`` returns ``(head outputs (sum B_i, out_dim), last-stage maps of
    every group)``; ``lams`` is one per-sample λ tensor per crop (None: no controller).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, crops: list[Tensor], lams: list[Tensor] | None = None
                ) -> tuple[Tensor, list[Tensor]]:
        pooled, maps = [], []
        start = 0
        while start < len(crops):
            end = start + 1
            while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
                end += 1
            x = torch.cat(crops[start:end])
            kw = {} if lams is None else {"semantic_weight": torch.cat(lams[start:end])}
            fmap = self.backbone.forward_features(x, **kw)
            maps.append(fmap)
            pooled.append(fmap.mean(dim=(2, 3)))
            start = end
        return self.head(torch.cat(pooled).float()), maps
