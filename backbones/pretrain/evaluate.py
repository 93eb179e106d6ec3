"""Checks of a pretrained backbone on the synthetic world, where the truth is known.

* :func:`part_agreement`: SOLIDER's part pseudo-labels (:func:`.cluster.part_labels` on the
  last-stage map at λ=1) against the true body layout of the same pool images, re-rendered
  with ``SynthWorld.crop`` (same keys -> same image, plus per-pixel LIP labels).  Each
  token's true class is the majority of its pixels among background, head (hat, hair,
  sunglasses, face), upper body (clothes, coat, dress, scarf, arms, gloves) and lower body
  (pants, skirt, jumpsuit, legs, socks, shoes).  Scores: adjusted Rand index (0 = chance)
  and token accuracy (pseudo label == true label, both ordered background/top/middle/
  bottom), next to a chance baseline (pseudo-labels shuffled within each image).
* :func:`knn_reid`: frozen pooled features, cosine distance, Market-1501 query vs gallery
  (``evaluate_rank``): mAP and rank-1 without any fine-tuning.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from backbones.pretrain.cluster import part_labels
from backbones.pretrain.data import IMAGENET_MEAN, IMAGENET_STD

HEAD = {"Hat", "Hair", "Sunglasses", "Face"}
UPPER = {"UpperClothes", "Dress", "Coat", "Scarf", "Glove", "Left-arm", "Right-arm"}
LOWER = {"Socks", "Pants", "Jumpsuits", "Skirt", "Left-leg", "Right-leg", "Left-shoe",
         "Right-shoe"}


def _lip_to_band() -> np.ndarray:
    from bench.data.synth.render import LIP_CLASSES

    lut = np.zeros(len(LIP_CLASSES), np.int64)
    for i, name in enumerate(LIP_CLASSES):
        lut[i] = 1 if name in HEAD else 2 if name in UPPER else 3 if name in LOWER else 0
    return lut


def _normalise(images: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = F.interpolate(x, size=size, mode="bicubic", align_corners=False).clamp(0, 1)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return (x - mean) / std


def pool_crops(n: int, seed: int = 0, size: str = "smoke") -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` images of the synthetic LUPerson pool and their band labels (0-3),
    rendered with the pool writer's keys (``bench.data.pools.write_synthetic``)."""
    images, bands, _ = pool_truth(n, seed, size)
    return images, bands


def pool_truth(n: int, seed: int = 0, size: str = "smoke", start: int = 0
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pool images ``start .. start+n-1`` with their band labels (0-3) and their true
    PA100k-named attributes (N, 26) (the identity's, with the view the renderer drew)."""
    from bench.data.pools import POOL_PID_BASE
    from bench.data.synth.world import SynthWorld

    world = SynthWorld(seed=seed, size=size)
    h, w = world.pick((128, 64), (256, 128), (256, 128))
    lut = _lip_to_band()
    images, bands, attrs = [], [], []
    for i in range(start, start + n):
        cam = int(world.rng("luperson", i).integers(12))
        crop = world.crop(POOL_PID_BASE + i // 2, cam, h, w, "lup", i)
        images.append(crop.image)
        bands.append(lut[crop.labels])
        attrs.append(world.identity(POOL_PID_BASE + i // 2).attribute_vector(crop.view))
    return np.stack(images), np.stack(bands), np.stack(attrs)


def token_truth(bands: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(N, H, W) pixel bands -> (N, h, w) majority band per token cell."""
    N, H, W = bands.shape
    h, w = grid
    onehot = np.eye(4)[bands]  # (N, H, W, 4)
    cells = onehot.reshape(N, h, H // h, w, W // w, 4).sum((2, 4))
    return cells.argmax(-1)


def adjusted_rand(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index of two labelings (Hubert & Arabie 1985)."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(table, (ai, bi), 1)
    comb = lambda x: x * (x - 1) / 2
    sum_ij = comb(table).sum()
    sa, sb = comb(table.sum(1)).sum(), comb(table.sum(0)).sum()
    expected = sa * sb / comb(len(a))
    maxi = (sa + sb) / 2
    return float((sum_ij - expected) / (maxi - expected)) if maxi != expected else 0.0


@torch.no_grad()
def part_agreement(backbone: torch.nn.Module, n: int = 64, input_size=(256, 128), seed: int = 0,
                   partnum: int = 3, shuffles: int = 5) -> dict[str, Any]:
    """Agreement of the pseudo part labels with the true body bands (see the module doc)."""
    images, bands = pool_crops(n, seed)
    x = _normalise(images, input_size)
    kw = {"semantic_weight": 1.0} if getattr(backbone, "has_controller", False) else {}
    backbone.eval()
    feats = torch.cat([backbone.forward_features(c, **kw) for c in x.split(32)])
    g = torch.Generator().manual_seed(seed)
    pseudo, keep = part_labels(feats, partnum, generator=g)
    pseudo = pseudo.numpy()
    truth = token_truth(bands, pseudo.shape[1:])
    rng = np.random.default_rng(seed)
    chance_ari, chance_acc = [], []
    for _ in range(shuffles):
        shuf = np.stack([rng.permutation(p.ravel()).reshape(p.shape) for p in pseudo])
        chance_ari.append(adjusted_rand(shuf, truth))
        chance_acc.append(float((shuf == truth).mean()))
    rows = np.broadcast_to(np.arange(pseudo.shape[1])[None, :, None], pseudo.shape)
    prior = 1 + rows * partnum // pseudo.shape[1]  # row tertiles, everything foreground
    return {"ari": adjusted_rand(pseudo, truth), "accuracy": float((pseudo == truth).mean()),
            "chance_ari": float(np.mean(chance_ari)), "chance_accuracy": float(np.mean(chance_acc)),
            "row_prior_ari": adjusted_rand(prior, truth), "keep_frac": float(keep.float().mean()),
            "fg_frac": float((pseudo > 0).mean()), "grid": list(pseudo.shape[1:]), "images": n}


@torch.no_grad()
def knn_reid(backbone: torch.nn.Module, bench_cfg=None, input_size=(128, 64),
             semantic_weight: float | None = None, profile: str = "smoke") -> dict[str, float]:
    """Frozen-feature re-ID on (synthetic) Market-1501: mAP and rank-1 in [0, 1]."""
    from PIL import Image

    from bench import config as config_mod
    from bench.data import dataset_root
    from bench.data.base import read_image
    from bench.data.reid import read_market1501
    from bench.metrics.reid import evaluate_rank, pairwise_distance

    bench_cfg = bench_cfg or config_mod.load(None)
    root, _ = dataset_root(bench_cfg, "market1501", profile=profile)
    ds = read_market1501(root)
    kw = {} if semantic_weight is None else {"semantic_weight": semantic_weight}
    backbone.eval()

    def feats(items):
        imgs = np.stack([np.asarray(Image.fromarray(read_image(it.path)).convert("RGB")
                                    .resize((input_size[1], input_size[0]), Image.BICUBIC))
                         for it in items])
        x = _normalise(imgs, input_size)
        return torch.cat([backbone(c, **kw) for c in x.split(64)])

    qf, gf = feats(ds.query), feats(ds.gallery)
    d = pairwise_distance(qf, gf, metric="cosine")
    r = evaluate_rank(d, np.array([i.pid for i in ds.query]), np.array([i.pid for i in ds.gallery]),
                      np.array([i.camid for i in ds.query]), np.array([i.camid for i in ds.gallery]))
    return {"mAP": float(r.mAP), "rank1": float(r.cmc[0]), "queries": len(ds.query),
            "gallery": len(ds.gallery)}
