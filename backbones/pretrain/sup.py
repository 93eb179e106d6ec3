"""Supervised classification on ImageNet-style class folders (SOLIDER's "Sup" baseline):
the Swin backbone, its pooled norm3 feature, one linear classifier, cross-entropy with
label smoothing 0.1."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Supervised(nn.Module):
    export_from = "student"
    teacher = None

    def __init__(self, cfg, make_backbone, num_classes: int):
        super().__init__()
        self.cfg = cfg
        backbone = make_backbone(cfg.drop_path)
        head = nn.Linear(backbone.num_features, num_classes)
        nn.init.trunc_normal_(head.weight, std=0.02)
        nn.init.zeros_(head.bias)
        self.student = nn.ModuleDict({"backbone": backbone, "head": head})

    last_layer = None

    def trainable(self) -> nn.Module:
        return self.student

    def export(self) -> nn.Module:
        return self.student.backbone

    def update_teacher(self, m: float) -> None:
        pass

    def step(self, batch, step: int) -> dict:
        (x,), y, _ = batch
        logits = self.student.head(self.student.backbone(x)).float()
        loss = F.cross_entropy(logits, y, label_smoothing=self.cfg.label_smoothing)
        return {"loss": loss, "ce": loss.detach(),
                "acc": float((logits.argmax(1) == y).float().mean())}
