"""``bench analyze semantics``: the SOLIDER paper's Exp 1, measured.

The paper shows (poster, "Can SOLIDER learn semantic?" / "Can λ control semantic rate?")
that after SOLIDER, features of the same body part of different people move closer and
different parts of the same person move apart, more so as λ grows.  Here: person crops of
several identities from the synthetic world, whose per-pixel LIP labels give the parts
(grouped into head, upper body, lower body, feet); the backbone's last-stage map is average
pooled inside each part's mask (masks resized to the map); then, per λ,

- intra: mean cosine distance between *different* parts of the *same* image,
- inter: mean cosine distance between the *same* part of *different* people,

and a 2-D PCA of the part features, coloured by part and by person.  The synthetic world is
used because no public dataset has both identities and parsing masks.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from backbones._cfg import IMAGENET_MEAN, IMAGENET_STD
from bench.io import atomic_write_bytes, atomic_write_text

PART_GROUPS = {
    "head": ("Hat", "Hair", "Sunglasses", "Face"),
    "upper": ("UpperClothes", "Coat", "Left-arm", "Right-arm", "Glove", "Scarf"),
    "lower": ("Pants", "Skirt", "Dress", "Jumpsuits", "Left-leg", "Right-leg", "Socks"),
    "feet": ("Left-shoe", "Right-shoe"),
}


def part_masks(labels: np.ndarray) -> np.ndarray:
    """(P, H, W) boolean masks of the part groups from a LIP label map."""
    from bench.data.synth.render import LIP_CLASSES

    idx = {n: i for i, n in enumerate(LIP_CLASSES)}
    return np.stack([np.isin(labels, [idx[n] for n in names]) for names in PART_GROUPS.values()])


def samples(n_people: int = 12, per_person: int = 3, size=(128, 64), seed: int = 0):
    """Crops of ``n_people`` synthetic identities, ``per_person`` cameras each."""
    from bench.data.synth.world import SynthWorld

    world = SynthWorld(seed=seed, size="smoke")
    images, masks, pids = [], [], []
    for p in range(n_people):
        for c in range(per_person):
            crop = world.crop(2_000_000 + p, c, size[0], size[1], "analyze")
            images.append(crop.image)
            masks.append(part_masks(crop.labels))
            pids.append(p)
    return np.stack(images), np.stack(masks), np.array(pids)


@torch.no_grad()
def part_features(backbone, images: np.ndarray, masks: np.ndarray, lam: float | None,
                  mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """(N, P, C) L2-normalised part-pooled last-stage features (NaN where a part is absent)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    kw = {} if lam is None else {"semantic_weight": lam}
    fmap = backbone.forward_intermediates(x, **kw)[-1]  # (N, C, h, w)
    m = F.interpolate(torch.from_numpy(masks).float(), size=fmap.shape[-2:], mode="area")
    area = m.sum((2, 3))  # (N, P)
    pooled = torch.einsum("nchw,nphw->npc", fmap, m) / area.clamp(min=1e-6)[..., None]
    pooled = F.normalize(pooled, dim=-1)
    pooled[area < 1e-3] = float("nan")
    return pooled


def distances(feats: torch.Tensor, pids: np.ndarray) -> dict[str, float]:
    f = feats.numpy()
    n, p, _ = f.shape
    intra = []
    for i in range(n):  # different parts of the same person image
        for a in range(p):
            for b in range(a + 1, p):
                if not (np.isnan(f[i, a]).any() or np.isnan(f[i, b]).any()):
                    intra.append(1 - float(f[i, a] @ f[i, b]))
    inter = []
    for a in range(p):  # the same part of different people
        valid = ~np.isnan(f[:, a]).any(1)
        sims = f[valid, a] @ f[valid, a].T
        other = pids[valid][:, None] != pids[valid][None, :]
        inter.extend((1 - sims[other]).tolist())
    return {"intra_person_diff_parts": float(np.mean(intra)),
            "inter_person_same_part": float(np.mean(inter))}


def analyze(backbone, lambdas: list[float | None], out_dir: Path, n_people: int = 12,
            per_person: int = 3, seed: int = 0, name: str = "") -> pd.DataFrame:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backbone.eval()
    images, masks, pids = samples(n_people, per_person, seed=seed)
    rows, feats_by_lam = [], {}
    for lam in lambdas:
        feats = part_features(backbone, images, masks, lam)
        feats_by_lam[lam] = feats
        rows.append({"lambda": lam, **distances(feats, pids)})
    table = pd.DataFrame(rows)
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "semantics.csv", table.to_csv(index=False))
    shown = [lambdas[0], lambdas[-1]] if len(lambdas) > 1 else lambdas
    fig, axes = plt.subplots(2, len(shown), figsize=(4.2 * len(shown), 7), dpi=100, squeeze=False)
    names = list(PART_GROUPS)
    for j, lam in enumerate(shown):
        f = feats_by_lam[lam]
        n, p, c = f.shape
        flat = f.reshape(n * p, c)
        ok = ~torch.isnan(flat).any(1)
        xy = torch.pca_lowrank(flat[ok] - flat[ok].mean(0), q=2, center=False)
        pts = (flat[ok] - flat[ok].mean(0)) @ xy[2][:, :2]
        part_id = np.repeat(np.arange(p)[None], n, 0).reshape(-1)[ok.numpy()]
        person = np.repeat(pids, p)[ok.numpy()]
        for row, colour, title in ((0, part_id, "by part"), (1, person, "by person")):
            ax = axes[row, j]
            sc = ax.scatter(pts[:, 0], pts[:, 1], c=colour, cmap="tab10" if row == 0 else "tab20",
                            s=12)
            ax.set_title(f"{name} λ={lam} ({title})", fontsize=9)
            if row == 0:
                ax.legend(sc.legend_elements()[0], names, fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(out_dir / "semantics.png", buf.getvalue())
    return table
