"""Pretraining data: the pools, SOLIDER's multi-crop augmentation, a resumable sampler.

Every random draw of an item comes from a generator seeded by ``(seed, epoch, index)``, so
an item's crops do not depend on the worker, the rank, or whether the run was resumed:
one process with a global batch of 2B and two processes with B each see the same crops.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter, ImageOps
from torch.utils.data import Dataset
from torchvision.transforms import functional as TF

from backbones._cfg import IMAGENET_MEAN, IMAGENET_STD
from bench.data.base import read_image


def _u(g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def random_resized_crop(img: Image.Image, size: tuple[int, int], scale: tuple[float, float],
                        ratio: tuple[float, float], g: torch.Generator) -> Image.Image:
    """torchvision's RandomResizedCrop (10 tries, then centre fallback), bicubic."""
    W, H = img.size
    area = H * W
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * _u(g, *scale)
        ar = math.exp(_u(g, *log_r))
        w = int(round(math.sqrt(target * ar)))
        h = int(round(math.sqrt(target / ar)))
        if 0 < w <= W and 0 < h <= H:
            i = int(torch.randint(0, H - h + 1, (), generator=g))
            j = int(torch.randint(0, W - w + 1, (), generator=g))
            break
    else:
        in_ratio = W / H
        if in_ratio < ratio[0]:
            w, h = W, int(round(W / ratio[0]))
        elif in_ratio > ratio[1]:
            h, w = H, int(round(H * ratio[1]))
        else:
            w, h = W, H
        i, j = (H - h) // 2, (W - w) // 2
    return TF.resized_crop(img, i, j, h, w, list(size), TF.InterpolationMode.BICUBIC,
                           antialias=True)


def color_augment(img: Image.Image, g: torch.Generator) -> Image.Image:
    """Flip p=.5, ColorJitter(.4,.4,.2,.1) p=.8 (random order), grayscale p=.2."""
    if _u(g) < 0.5:
        img = TF.hflip(img)
    return colour_jitter(img, g)


def colour_jitter(img: Image.Image, g: torch.Generator) -> Image.Image:
    """The photometric part of :func:`color_augment` (same draws, after its flip)."""
    if _u(g) < 0.8:
        ops = [lambda im: TF.adjust_brightness(im, _u(g, 0.6, 1.4)),
               lambda im: TF.adjust_contrast(im, _u(g, 0.6, 1.4)),
               lambda im: TF.adjust_saturation(im, _u(g, 0.8, 1.2)),
               lambda im: TF.adjust_hue(im, _u(g, -0.1, 0.1))]
        for k in torch.randperm(4, generator=g).tolist():
            img = ops[k](img)
    if _u(g) < 0.2:
        img = TF.to_grayscale(img, num_output_channels=3)
    return img


def blur(img: Image.Image, p: float, g: torch.Generator) -> Image.Image:
    if _u(g) < p:
        # DINO's GaussianBlur: radius U(0.1, 2.0) on 224 px; scaled to the crop height / 224
        img = img.filter(ImageFilter.GaussianBlur(radius=_u(g, 0.1, 2.0) * img.size[1] / 224))
    return img


def to_tensor(img: Image.Image) -> torch.Tensor:
    return TF.normalize(TF.to_tensor(img), IMAGENET_MEAN, IMAGENET_STD)


class MultiCrop:
    """SOLIDER's DataAugmentationDINO for people (reference doc, section 2, Multi-crop)."""

    def __init__(self, global_size: tuple[int, int], local_size: tuple[int, int], n_local: int,
                 global_scale=(0.8, 1.0), local_scale=(0.05, 0.8), ratio=(0.4, 0.6)):
        self.global_size, self.local_size, self.n_local = tuple(global_size), tuple(local_size), n_local
        self.global_scale, self.local_scale, self.ratio = global_scale, local_scale, ratio

    def __call__(self, img: Image.Image, g: torch.Generator) -> list[torch.Tensor]:
        crops = []
        for v in range(2):
            c = color_augment(random_resized_crop(img, self.global_size, self.global_scale,
                                                  self.ratio, g), g)
            c = blur(c, 1.0 if v == 0 else 0.1, g)
            if v == 1 and _u(g) < 0.2:
                c = ImageOps.solarize(c, 128)
            crops.append(to_tensor(c))
        for _ in range(self.n_local):
            c = color_augment(random_resized_crop(img, self.local_size, self.local_scale,
                                                  self.ratio, g), g)
            crops.append(to_tensor(blur(c, 0.5, g)))
        return crops


class SupAugment:
    """Classification training view: RandomResizedCrop(scale .08-1), flip, colour jitter."""

    def __init__(self, size: tuple[int, int]):
        self.size = tuple(size)

    def __call__(self, img: Image.Image, g: torch.Generator) -> list[torch.Tensor]:
        c = random_resized_crop(img, self.size, (0.08, 1.0), (3 / 4, 4 / 3), g)
        return [to_tensor(color_augment(c, g))]


class PretrainDataset(Dataset):
    """(path, label) items -> ``(crops list, label, index)``; label -1 for unlabeled pools.

    ``set_epoch`` changes the augmentation draws; item i of epoch e always gives the same
    crops for the same seed."""

    def __init__(self, items: Sequence[tuple[str, int]], transform: Callable, seed: int = 0):
        self.items, self.transform, self.seed, self.epoch = list(items), transform, seed, 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        path, label = self.items[i]
        g = torch.Generator().manual_seed(int(np.random.SeedSequence(
            [self.seed, self.epoch, i]).generate_state(1)[0]))
        img = Image.fromarray(read_image(path)).convert("RGB")
        return self.transform(img, g), label, i


def collate(batch):
    crops = [torch.stack([b[0][v] for b in batch]) for v in range(len(batch[0][0]))]
    return crops, torch.tensor([b[1] for b in batch]), torch.tensor([b[2] for b in batch])


class GlobalBatchSampler:
    """Batches of dataset indices: a seeded permutation per epoch cut into global batches of
    ``batch_size * world``; rank r takes its slice of each.  The last partial global batch
    is dropped (DINO's ``drop_last=True``).  ``start`` skips batches (resume mid-epoch)."""

    def __init__(self, n: int, batch_size: int, world: int = 1, rank: int = 0, seed: int = 0):
        self.n, self.batch_size, self.world, self.rank, self.seed = n, batch_size, world, rank, seed
        self.epoch, self.start = 0, 0

    def __len__(self) -> int:
        return self.n // (self.batch_size * self.world)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        G = self.batch_size * self.world
        for b in range(self.start, len(self)):
            chunk = perm[b * G:(b + 1) * G]
            yield chunk[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]


def pool_items(data: str, cfg, profile: str, method: str, limit: int | None = None
               ) -> tuple[list[tuple[str, int]], int, str]:
    """(items, number of classes, description) of ``data``: ``luperson`` / ``imagenet`` (the
    configured root or the synthetic world's copy) or a folder (an ImageNet-style
    ``train/`` tree for ``sup``, any folder of images otherwise)."""
    from bench.data import dataset_root
    from bench.data.pools import read_imagenet, read_luperson, read_luperson_ta
    from bench.errors import BenchError

    if data in ("luperson", "luperson_ta", "imagenet"):
        root, kind = dataset_root(cfg, data, profile=profile)
        desc = f"{data} ({kind}: {root})"
    else:
        root = Path(data).expanduser()
        if not root.is_dir():
            raise BenchError(f"--data: {data!r} is neither luperson, imagenet nor a folder")
        desc = str(root)
    if method in TEXT_METHODS:
        pool = read_luperson_ta(root)
        items, n_classes = [(p, -1) for p in pool.images], 0
    elif method == "sup":
        folders = read_imagenet(root)
        items, n_classes = list(folders.train), len(folders.classes)
    else:
        items, n_classes = [(p, -1) for p in read_luperson(root).images], 0
    if limit:
        items = items[:limit]
    return items, n_classes, desc


TEXT_METHODS = ("clip", "valpat")  # objectives that read LUPerson-TA's captions


def text_pool(cfg, bench_cfg):
    """The LUPerson-TA pool (captions, attributes) of a run, cut as :func:`pool_items` cuts
    its images, so a batch's dataset indices index it."""
    from dataclasses import replace

    from bench import config as config_mod
    from bench.data import dataset_root
    from bench.data.pools import read_luperson_ta

    bench_cfg = bench_cfg or config_mod.load(None)
    if cfg.data in ("luperson_ta",):
        root, _ = dataset_root(bench_cfg, "luperson_ta",
                               profile="smoke" if cfg.profile == "smoke" else "paper")
    else:
        root = Path(cfg.data).expanduser()
    pool = read_luperson_ta(root)
    n = cfg.max_images or len(pool.images)
    return replace(pool, images=pool.images[:n], captions=pool.captions[:n],
                   attributes=pool.attributes[:n])
