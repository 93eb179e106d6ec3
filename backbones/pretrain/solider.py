"""SOLIDER's semantic objective (SOL:``main_solider.py``) and its no-controller ablation.

``solider``: DINO, plus a per-image λ ∈ {0, 1} fed to the controller for every view of the
image (student and teacher, masked copies too); the teacher's last-stage tokens at λ=1 are
clustered into background + ``partnum`` parts per image (:mod:`.cluster`); one part k per
step is zeroed out of the global views of the images with enough foreground; a per-token
part classifier on the student's last-stage map of the masked and the unmasked global views
must predict every token's part, its cross-entropy weighted by the image's λ and added to
the DINO loss.  ``dinoclust`` (SOLIDER's "DINO + clustering" ablation) is the same with no
controller: every image counts as λ=1 and the teacher's single pass gives both the DINO
targets and the clusters.

The official ``part_classifier`` is never put into the optimizer, so it stays at its
random init while its gradients still reach the backbone (SOLIDER issue #24): the default
here.  ``train_part_classifier=True`` adds it to the optimizer.  Deviation: with no image
passing the foreground test the part loss is 0 (the official code would crash).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from backbones.pretrain.cluster import mask_part, part_labels
from backbones.pretrain.dino import DINO, image_lambdas
from backbones.pretrain.heads import DINOHead

Tensor = torch.Tensor


class Solider(DINO):
    def __init__(self, cfg, make_backbone, controller: bool = True):
        super().__init__(cfg, make_backbone)
        self.controller = controller
        dim = self.student.backbone.num_features
        self.part_classifier = DINOHead(dim, cfg.partnum + 1, nlayers=3,
                                        hidden_dim=cfg.head_hidden,
                                        bottleneck_dim=cfg.head_bottleneck)
        if not cfg.train_part_classifier:
            self.part_classifier.requires_grad_(False)  # the official quirk: never optimised
            # (its input still carries gradients to the backbone)

    def trainable(self) -> nn.Module:
        if self.cfg.train_part_classifier:
            return nn.ModuleDict({"student": self.student, "part_classifier": self.part_classifier})
        return self.student

    def step(self, batch, step: int) -> dict:
        cfg = self.cfg
        crops, _, indices = batch
        B, dev = crops[0].shape[0], crops[0].device
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        if self.controller:
            lam = image_lambdas(cfg.seed, step, indices).to(dev)
            lams = [lam] * len(crops)
        else:
            lam, lams = torch.ones(B, device=dev), None
        glob = torch.cat(crops[:2])
        lam_g = torch.cat([lam, lam])
        with torch.no_grad():
            t_out, t_maps = self.teacher(crops[:2], lams[:2] if lams else None)
            feats = (self.teacher.backbone.forward_features(glob, semantic_weight=1.0)
                     if self.controller else t_maps[0])
            parts, keep = part_labels(feats, cfg.partnum, generator=g)
            k = int(torch.randint(1, cfg.partnum + 1, (), generator=g))
            masked = mask_part(glob[keep], parts[keep], k)
        M = masked.shape[0]
        bb = self.student.backbone
        kw = lambda lm: {"semantic_weight": lm} if self.controller else {}
        fmap = bb.forward_features(torch.cat([masked, glob]), **kw(torch.cat([lam_g[keep], lam_g])))
        pooled = [fmap[M:].mean((2, 3))]
        if len(crops) > 2:
            loc = bb.forward_features(torch.cat(crops[2:]),
                                      **kw(lam.repeat(len(crops) - 2)))
            pooled.append(loc.mean((2, 3)))
        s_out = self.student.head(torch.cat(pooled).float())
        dino, stats = self.dino_loss(s_out, t_out)

        if M:
            tok = torch.cat([fmap[:M], fmap[M:][keep]])  # masked, then the same unmasked views
            C, h, w = tok.shape[1:]
            target = parts[keep].repeat(2, 1, 1).flatten()
            weight = lam_g[keep].repeat(2).repeat_interleave(h * w) * cfg.semantic_loss
            logits = self.part_classifier(tok.permute(0, 2, 3, 1).reshape(-1, C))
            part = (F.cross_entropy(logits.float(), target, reduction="none") * weight).mean()
        else:
            part = fmap.sum() * 0.0
        fg = (parts > 0).float()
        sizes = [float((parts[keep] == i).float().mean()) if M else 0.0
                 for i in range(1, cfg.partnum + 1)]
        return {"loss": dino + part, "dino": dino.detach(), "part": part.detach(), **stats,
                "keep_frac": float(keep.float().mean()), "fg_frac": float(fg.mean()),
                "masked_part": k, "lambda_mean": float(lam.mean()),
                **{f"part{i + 1}_frac": s for i, s in enumerate(sizes)}}
