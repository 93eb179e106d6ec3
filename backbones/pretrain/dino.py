"""DINO self-distillation for people (SOL:``main_dino.py`` / the DINO part of
``main_solider.py``): student and teacher Swin + DINOHead, multi-crop, centred and sharpened
teacher targets, EMA teacher.  The teacher sees only the two global views."""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from backbones.pretrain.heads import DINOHead, MultiCropWrapper, ema_update

Tensor = torch.Tensor


class DINOLoss(nn.Module):
    """Cross-entropy between the teacher's centred, sharpened softmax of each global view
    and the student's softmax of every other view; the centre is an EMA of the teacher's
    batch mean (all-reduced across ranks)."""

    def __init__(self, out_dim: int, ncrops: int, student_temp: float = 0.1,
                 teacher_temp: float = 0.04, center_momentum: float = 0.9):
        super().__init__()
        self.ncrops, self.student_temp, self.teacher_temp = ncrops, student_temp, teacher_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student_out: Tensor, teacher_out: Tensor) -> tuple[Tensor, dict]:
        s = (student_out.float() / self.student_temp).chunk(self.ncrops)
        t_logits = (teacher_out.float() - self.center) / self.teacher_temp
        q = F.softmax(t_logits, dim=-1).detach()
        logq = F.log_softmax(t_logits, dim=-1).detach()
        qs = q.chunk(2)
        total, n, kl = 0.0, 0, 0.0
        for iq, qv in enumerate(qs):
            for v in range(self.ncrops):
                if v == iq:
                    continue
                ce = torch.sum(-qv * F.log_softmax(s[v], dim=-1), dim=-1).mean()
                total, n = total + ce, n + 1
        entropy = float(-(q * logq).sum(-1).mean())
        kl = float(total.detach()) / n - entropy  # mean KL(teacher || student) over pairs
        self.update_center(teacher_out)
        return total / n, {"teacher_entropy": entropy, "kl": kl}

    @torch.no_grad()
    def update_center(self, teacher_out: Tensor) -> None:
        batch_center = teacher_out.float().sum(0, keepdim=True)
        n = torch.tensor(float(teacher_out.shape[0]), device=teacher_out.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_center)
            dist.all_reduce(n)
        self.center.mul_(self.center_momentum).add_(batch_center / n * (1 - self.center_momentum))


def image_lambdas(seed: int, step: int, indices: Tensor) -> Tensor:
    """SOLIDER's per-image λ ∈ {0, 1} (``torch.randint(2, (B, 1))``), drawn from (seed,
    step, dataset index) so it does not depend on the rank an image landed on."""
    lam = [np.random.SeedSequence([seed, 17, step, int(i)]).generate_state(1)[0] & 1
           for i in indices.tolist()]
    return torch.tensor(lam, dtype=torch.float32)


class DINO(nn.Module):
    """The ``dino`` objective: ``step(batch) -> {"loss", "dino", ...}``.

    ``make_backbone(drop_path)`` builds one Swin (the zoo entry); the student has the
    config's drop path, the teacher none, and starts as a copy of the student.
    """

    export_from = "teacher"  # downstream repositories load the teacher (reference doc, §3)

    def __init__(self, cfg, make_backbone):
        super().__init__()
        self.cfg = cfg
        sb, tb = make_backbone(cfg.drop_path), make_backbone(0.0)
        dim = sb.num_features
        head = lambda: DINOHead(dim, cfg.out_dim, hidden_dim=cfg.head_hidden,
                                bottleneck_dim=cfg.head_bottleneck)
        self.student = MultiCropWrapper(sb, head())
        self.teacher = MultiCropWrapper(tb, head())
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)
        self.dino_loss = DINOLoss(cfg.out_dim, 2 + cfg.n_local, cfg.student_temp,
                                  cfg.teacher_temp, cfg.center_momentum)

    @property
    def last_layer(self) -> nn.Module:
        return self.student.head.last_layer

    def trainable(self) -> nn.Module:
        return self.student

    def export(self) -> nn.Module:
        return self.teacher.backbone

    def update_teacher(self, m: float) -> None:
        ema_update(self.teacher, self.student, m)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # no dropout/drop path in the teacher either way
        return self

    def step(self, batch, step: int) -> dict:
        crops, _, _ = batch
        with torch.no_grad():
            t_out, _ = self.teacher(crops[:2])
        s_out, _ = self.student(crops)
        loss, stats = self.dino_loss(s_out, t_out)
        return {"loss": loss, "dino": loss.detach(), **stats}
