"""SOLIDER's semantic clustering, batched in torch (SOL:``utils.get_mask``).

The official code runs sklearn ``KMeans`` on the CPU for every image of every iteration:
k=2 on the L2 norm of each last-stage token (the cluster with the larger centre is the
person), then, for images with more than half of their tokens in the foreground, k=3 on
the foreground tokens' features; the three clusters are labelled 1..3 by their mean row,
top to bottom, background 0.  Here both k-means run for the whole batch at once
(:func:`batched_kmeans`, Lloyd iterations with k-means++ seeding and a few restarts, the
best inertia kept per image), on whatever device the features live on.

Deviation: sklearn seeds with ``random_state=0`` per call; we seed from a generator the
caller passes (derived from the run seed and step), so a run is reproducible but the
clusters are not bit-identical to sklearn's.  For the 1-D k=2 split we seed with the
minimum and maximum norm, which reaches the optimal 2-means split on 1-D data in practice.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _sqdist(x: Tensor, c: Tensor) -> Tensor:
    """(N, T, D), (N, K, D) -> (N, T, K) squared Euclidean distances (inputs centred by
    the callers, so the expanded form loses no precision that matters)."""
    if x.shape[-1] == 1:
        return (x - c.transpose(1, 2)) ** 2
    return ((x * x).sum(-1, keepdim=True) - 2 * x @ c.transpose(1, 2)
            + (c * c).sum(-1)[:, None, :]).clamp_(min=0)


def _lloyd(x: Tensor, valid: Tensor, centres: Tensor, iters: int) -> tuple[Tensor, Tensor]:
    k = centres.shape[1]
    for _ in range(iters):
        labels = _sqdist(x, centres).argmin(-1)
        onehot = F.one_hot(labels, k).to(x.dtype) * valid[..., None]  # (N, T, K)
        count = onehot.sum(1)  # (N, K)
        new = onehot.transpose(1, 2) @ x / count.clamp(min=1)[..., None]
        centres = torch.where(count[..., None] > 0, new, centres)  # empty cluster: keep centre
    d = _sqdist(x, centres)
    labels = d.argmin(-1)
    return labels, centres


def _kmeanspp(x: Tensor, valid: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
    N, T, D = x.shape
    w = valid.to(x.dtype) + 1e-12 * (valid.sum(1, keepdim=True) == 0)  # all-invalid rows: any
    idx = torch.multinomial(w.cpu(), 1, generator=generator).to(x.device)  # (N, 1)
    centres = [x.gather(1, idx[..., None].expand(N, 1, D))]
    for _ in range(1, k):
        c = torch.cat(centres, 1)
        d = _sqdist(x, c).min(-1).values * valid
        d = torch.where(d.sum(1, keepdim=True) > 0, d, w)  # fewer distinct points than k
        idx = torch.multinomial(d.cpu().double(), 1, generator=generator).to(x.device)
        centres.append(x.gather(1, idx[..., None].expand(N, 1, D)))
    return torch.cat(centres, 1)


@torch.no_grad()
def batched_kmeans(x: Tensor, k: int, valid: Tensor | None = None, iters: int = 30,
                   n_init: int = 4, generator: torch.Generator | None = None
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """k-means on each of N point sets at once.

    Args:
        x: (N, T, D) points; ``valid`` (N, T) bool marks the points of each set (default all).
        k: clusters per set; ``iters`` Lloyd iterations; ``n_init`` k-means++ restarts.
    Returns:
        labels (N, T) in 0..k-1 (meaningless where not valid), centres (N, k, D) and the
        inertia (N,) of the best restart per set.
    """
    x = x.float()
    N, T, _ = x.shape
    valid = torch.ones(N, T, dtype=torch.bool, device=x.device) if valid is None else valid
    vf = valid.to(x.dtype)
    mean = (x * vf[..., None]).sum(1, keepdim=True) / vf.sum(1).clamp(min=1)[:, None, None]
    x = x - mean  # centring: same clusters, no cancellation in the distance expansion
    best = None
    for _ in range(n_init):
        labels, centres = _lloyd(x, vf, _kmeanspp(x, vf, k, generator), iters)
        inertia = (_sqdist(x, centres).gather(-1, labels[..., None])[..., 0] * vf).sum(1)
        if best is None:
            best = [labels, centres, inertia]
        else:
            better = inertia < best[2]
            best[0] = torch.where(better[:, None], labels, best[0])
            best[1] = torch.where(better[:, None, None], centres, best[1])
            best[2] = torch.where(better, inertia, best[2])
    return best[0], best[1] + mean, best[2]


@torch.no_grad()
def foreground(feats: Tensor) -> Tensor:
    """(N, C, h, w) -> (N, h, w) bool: 2-means on token L2 norms, larger centre = person."""
    N, C, h, w = feats.shape
    norms = feats.double().norm(dim=1).reshape(N, h * w, 1)
    norms = norms - norms.mean(1, keepdim=True)  # LayerNorm'd tokens: norms differ in the 5th digit
    init = torch.stack([norms.min(1).values, norms.max(1).values], 1)  # (N, 2, 1)
    labels, centres = _lloyd(norms, torch.ones(N, h * w, device=feats.device), init, 30)
    fg_cluster = centres[..., 0].argmax(1)  # (N,)
    return (labels == fg_cluster[:, None]).reshape(N, h, w)


@torch.no_grad()
def part_labels(feats: Tensor, partnum: int = 3, generator: torch.Generator | None = None,
                min_fg: float = 0.5) -> tuple[Tensor, Tensor]:
    """SOLIDER's pseudo part labels of last-stage maps (``utils.get_mask``).

    Args:
        feats: (N, C, h, w) teacher last-stage maps (at λ=1 for SOLIDER).
    Returns:
        labels (N, h, w) long: 0 background, 1..partnum parts ordered top to bottom by
        their mean row; and ``keep`` (N,) bool: images with more than ``min_fg * h * w``
        foreground tokens (the only ones the part loss and masking use).
    """
    N, C, h, w = feats.shape
    fg = foreground(feats)
    keep = fg.flatten(1).sum(1) > min_fg * h * w
    tokens = feats.float().flatten(2).transpose(1, 2)  # (N, T, C)
    lab, _, _ = batched_kmeans(tokens, partnum, fg.flatten(1), generator=generator)
    return order_parts(lab.reshape(N, h, w), fg, partnum), keep


def order_parts(labels: Tensor, fg: Tensor, partnum: int) -> Tensor:
    """Relabel clusters 0..partnum-1 as 1..partnum by mean row (top first); background 0.
    A cluster with no foreground token sorts last."""
    N, h, w = labels.shape
    rows = torch.arange(h, device=labels.device, dtype=torch.float32)[None, :, None].expand(N, h, w)
    onehot = F.one_hot(labels, partnum).float() * fg[..., None]  # (N, h, w, K)
    count = onehot.sum((1, 2))
    mean_row = (onehot * rows[..., None]).sum((1, 2)) / count.clamp(min=1)
    mean_row = torch.where(count > 0, mean_row, torch.full_like(mean_row, float(h + 1)))
    rank = mean_row.argsort(1).argsort(1)  # (N, K): cluster -> position top to bottom
    out = rank.gather(1, labels.flatten(1)).reshape(N, h, w) + 1
    return torch.where(fg, out, torch.zeros_like(out))


def mask_part(images: Tensor, labels: Tensor, part: int) -> Tensor:
    """Zero the pixels of part ``part`` (token labels nearest-upsampled to pixels)."""
    H, W = images.shape[-2:]
    m = (labels == part).float()[:, None]
    m = F.interpolate(m, size=(H, W), mode="nearest")
    return images * (1 - m)
