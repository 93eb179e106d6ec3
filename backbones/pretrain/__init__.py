"""Pretraining the zoo's backbones: ``bench pretrain --method sup|dino|dinoclust|solider|clasp|valpat``
(and ``clip``, CLASP's default CLIP teacher).

One readable loop (:mod:`.loop`) and one small objective module per method, each with
``step(batch, step) -> dict of losses``: :mod:`.sup` (ImageNet-style classification),
:mod:`.dino` (multi-crop self-distillation for people), :mod:`.solider` (DINO + semantic
clustering + part classification, with the λ controller; ``dinoclust`` without it),
:mod:`.clip` (a small open_clip CLIP on LUPerson-TA's captions, written as
``clip_<size>.safetensors`` for :mod:`backbones.clip_teacher`), :mod:`.clasp` (CLIP part and
attribute pseudo-labels + self-distillation on the PC-MoE Swin, one prompt per task),
:mod:`.valpat` (MoCo v3 between views + image-caption contrastive with a text tower trained
from scratch + attributes parsed from the captions, on LUPerson-TA).  Runs
write ``<cache_dir>/pretrain/<zoo name>/<profile>-<data>-<config hash>/<zoo name>.safetensors``
(+ JSON sidecar) which ``create_backbone(<zoo name>, checkpoint=path)`` loads strictly.

λ: SOLIDER pretraining only ever sees λ ∈ {0, 1} (one binary draw per image, shared by all
its views; λ=1 for the teacher's clustering pass), while downstream tasks use values in
between (0.2 for re-ID, 0.8 for detection, ...): intermediate λ is interpolation the
controller was never trained on.

This package is excluded from backbone discovery (``backbones._NOT_FAMILIES``).
"""
from backbones.pretrain.config import METHODS, PretrainConfig, profile_config
from backbones.pretrain.loop import PretrainResult, default_out_dir, train, zoo_name

__all__ = ["METHODS", "PretrainConfig", "PretrainResult", "default_out_dir", "profile_config",
           "train", "zoo_name"]
