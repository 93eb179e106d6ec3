"""Re-identification metrics: single-query CMC and mAP, k-reciprocal re-ranking, and the
k-reciprocal Jaccard distance that unsupervised reID clusters with.

Protocol (Market-1501's, as torchreid's ``eval_market1501`` and TransReID's ``eval_func``
implement it): for each query, the gallery images of the same identity taken by the same
camera are removed, and so are junk images (identity -1, Market-1501 only); distractors
(identity 0) stay as negatives.  A query with no remaining true match is skipped.  CMC(k)
is the fraction of valid queries whose first true match is within the top k; AP is the
mean over true matches of (matches so far / rank), mAP its mean over valid queries.

Speed: no sort of whole gallery rows.  A query's AP needs only the rank of each of its true
matches among the valid gallery entries, which is (negatives closer than it) + (matches
closer than it).  The true matches are taken with ``topk``; every negative is placed among
them with a batched ``searchsorted``; a histogram gives the counts.  This is O(G log k) per
query rather than O(G log G).  Ties between a match and a negative, where the order is
otherwise ambiguous, are resolved as a stable sort does (lower gallery index first) by
falling back to a stable sort for those rows only.  Queries are processed in chunks so that
MSMT17's 11,659 x 82,161 matrix fits in memory.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class RankResult:
    cmc: np.ndarray  # (max_rank,) CMC curve, cmc[k-1] = rank-k accuracy in [0, 1]
    mAP: float  # in [0, 1]
    num_valid_queries: int
    ap: np.ndarray  # (num_valid_queries,) per-query AP

    def as_dict(self, ranks=(1, 5, 10)) -> dict[str, float]:
        out = {"mAP": float(self.mAP)}
        for r in ranks:
            if r <= len(self.cmc):
                out[f"Rank-{r}"] = float(self.cmc[r - 1])
        return out


def _as_tensor(x, dtype=None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(dtype) if dtype is not None else t


def evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50, *,
                  remove_junk: bool = True, chunk_elems: int = 1 << 24) -> RankResult:
    """CMC and mAP of a (num_query, num_gallery) distance matrix (smaller = more similar).

    ``remove_junk`` drops gallery images of identity -1 from every ranking (Market-1501's
    junk); torchreid instead drops them while reading the dataset, so on a gallery without
    -1 both give the same numbers.  Raises ValueError if no query has a true match.
    """
    d = _as_tensor(distmat)
    if d.ndim != 2:
        raise ValueError(f"distmat must be 2-D, got shape {tuple(d.shape)}")
    if not d.is_floating_point():
        d = d.double()
    q_pids, g_pids = _as_tensor(q_pids, torch.int32), _as_tensor(g_pids, torch.int32)
    q_cams, g_cams = _as_tensor(q_camids, torch.int32), _as_tensor(g_camids, torch.int32)
    nq, ng = d.shape
    if (len(q_pids), len(q_cams), len(g_pids), len(g_cams)) != (nq, nq, ng, ng):
        raise ValueError("ids and camera ids must match the distance matrix's shape")
    max_rank = min(max_rank, ng)
    hits = torch.zeros(max_rank, dtype=torch.float64)
    aps: list[torch.Tensor] = []
    step = max(1, chunk_elems // max(ng, 1))
    for s in range(0, nq, step):
        ap, first = _chunk(d[s:s + step], q_pids[s:s + step], q_cams[s:s + step], g_pids,
                           g_cams, remove_junk)
        aps.append(ap)
        first = first[first < max_rank]
        hits += torch.bincount(first, minlength=max_rank)[:max_rank].double()
    ap = torch.cat(aps) if aps else torch.zeros(0, dtype=torch.float64)
    n_valid = len(ap)
    if n_valid == 0:
        raise ValueError("no query has a true match in the gallery (from another camera)")
    cmc = (hits.cumsum(0) / n_valid).numpy()
    return RankResult(cmc=cmc, mAP=float(ap.mean()), num_valid_queries=n_valid, ap=ap.numpy())


def _chunk(d, qp, qc, gp, gc, remove_junk):
    """Per-query AP and 0-based rank of the first true match, for valid queries only."""
    same = gp[None, :] == qp[:, None]
    match = same & (gc[None, :] != qc[:, None])
    if remove_junk:
        junk = gp == -1
        match &= ~junk[None, :]
        neg = ~(same | junk[None, :])
    else:
        neg = ~same
    k_row = match.sum(1)
    keep = k_row > 0
    d, match, neg, k_row = d[keep], match[keep], neg[keep], k_row[keep]
    if len(d) == 0:
        return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.int64)
    inf = torch.tensor(float("inf"), dtype=d.dtype)
    K = int(k_row.max())
    md = torch.topk(torch.where(match, d, inf), K, dim=1, largest=False, sorted=True).values
    nd = torch.where(neg, d, inf)
    right = torch.searchsorted(md, nd, right=True)  # matches at distance <= negative
    # a negative at distance v precedes match j iff v < md[j]  <=>  j >= right(v)
    counts = torch.zeros(len(d), K + 1, dtype=torch.int64)
    counts.scatter_add_(1, right, neg.to(torch.int64))
    before = counts.cumsum(1)[:, :K]  # negatives ranked before match j
    j = torch.arange(K)
    rank = before + j  # 0-based rank of match j among the valid gallery entries
    valid_j = j[None, :] < k_row[:, None]
    ap = torch.where(valid_j, (j + 1).double() / (rank + 1).double(), 0.0).sum(1) / k_row
    first = rank[:, 0].clone()
    # exact ties between a negative and a match: order them by gallery index, as a stable sort
    # does (a negative ties a match iff the last match at or below it sits at its distance)
    tied = ((md.gather(1, (right - 1).clamp_(min=0)) == nd) & (right > 0) & neg).any(1)
    for r in tied.nonzero().flatten().tolist():
        ap[r], first[r] = _stable_row(d[r], match[r], neg[r])
    return ap, first


def _stable_row(d, match, neg):
    valid = match | neg
    order = torch.argsort(torch.where(valid, d, torch.tensor(float("inf"), dtype=d.dtype)),
                          stable=True)
    m = match[order][: int(valid.sum())]
    pos = m.nonzero().flatten()
    hits = torch.arange(1, len(pos) + 1, dtype=torch.float64)
    return (hits / (pos + 1).double()).mean(), pos[0]


# --------------------------------------------------------------------------------------
def pairwise_distance(qf: torch.Tensor, gf: torch.Tensor, metric: str = "euclidean") -> torch.Tensor:
    """Squared-free Euclidean distance (as TransReID's ``euclidean_distance``) or 1 - cosine."""
    qf, gf = qf.float(), gf.float()
    if metric == "cosine":
        qf = torch.nn.functional.normalize(qf, dim=1)
        gf = torch.nn.functional.normalize(gf, dim=1)
        return 1 - qf @ gf.T
    if metric != "euclidean":
        raise ValueError(f"unknown metric {metric!r} (euclidean or cosine)")
    d = (qf * qf).sum(1, keepdim=True) + (gf * gf).sum(1)[None, :] - 2 * qf @ gf.T
    return d.clamp_(min=0).sqrt_()


def re_ranking(qf: torch.Tensor, gf: torch.Tensor, k1: int = 20, k2: int = 6,
               lambda_value: float = 0.3) -> torch.Tensor:
    """k-reciprocal re-ranking (Zhong et al., CVPR 2017) of query x gallery distances.

    Follows the algorithm of the reference implementation TransReID's
    ``utils/reranking.py`` uses (SOLIDER's reID settings: k1=20, k2=6, λ=0.3): original
    distances over query+gallery features (squared Euclidean, divided by each column's
    maximum), k-reciprocal neighbour sets expanded by the k1/2-reciprocal neighbours of their
    members when they overlap by more than 2/3, Gaussian-weighted set vectors, local query
    expansion over the k2 nearest neighbours, Jaccard distance, and the mix
    ``(1 - λ) * jaccard + λ * original``.  Memory is (Q+G)^2.
    """
    feat = torch.cat([qf, gf]).float()
    nq = len(qf)
    original = _squared_euclidean(feat)
    original = original / original.max(0, keepdim=True).values
    original = original.T.contiguous()  # the reference transposes after column scaling
    jaccard = _k_reciprocal_jaccard(original, k1, k2, nq)
    final = jaccard * (1 - lambda_value) + original[:nq] * lambda_value
    return final[:, nq:]


def jaccard_distance(features: torch.Tensor, k1: int = 30, k2: int = 6) -> torch.Tensor:
    """(N, N) k-reciprocal Jaccard distances among ``features``, in [0, 1], for clustering.

    The Jaccard part of :func:`re_ranking` (same neighbour sets, expansion, weights and
    query expansion) over one feature set, as unsupervised reID clusters with it
    (Cluster Contrast's ``compute_jaccard_distance``, k1=30, k2=6): the weights use the
    unscaled squared Euclidean distance (``2 - 2 cos`` for L2-normalised features), there
    is no mix with the original distance, and negative rounding is clipped to 0.  The
    neighbour windows are the re-ranking paper's (k1+1 and k1/2+1 including the sample
    itself); Cluster Contrast's faiss search takes one fewer.  Memory is N^2.
    """
    original = _squared_euclidean(features.float())
    return _k_reciprocal_jaccard(original, k1, k2, len(features)).clamp_(min=0)


def _squared_euclidean(feat: torch.Tensor) -> torch.Tensor:
    sq = (feat * feat).sum(1)
    return (sq[:, None] + sq[None, :] - 2 * feat @ feat.T).clamp_(min=0)


def _k_reciprocal_jaccard(original: torch.Tensor, k1: int, k2: int, nq: int,
                          chunk: int = 1024) -> torch.Tensor:
    """Jaccard distances of the first ``nq`` samples to all n, from an (n, n) distance
    matrix whose row i ranks the neighbours of sample i (Zhong et al.'s encoding)."""
    n = len(original)
    rank = torch.cat([torch.argsort(original[s:s + chunk], dim=1, stable=True)[:, : k1 + 1]
                      for s in range(0, n, chunk)])
    half = int(round(k1 / 2)) + 1
    V = torch.zeros(n, n, dtype=torch.float32)
    fwd = rank  # (n, k1+1)
    for i in range(n):
        cand = fwd[i]
        back = fwd[cand]  # neighbours of the candidates
        recip = cand[(back == i).any(1)]
        exp = recip
        for c in recip.tolist():
            cc = fwd[c, :half]
            cc_back = fwd[cc, :half]
            cc_recip = cc[(cc_back == c).any(1)]
            if len(cc_recip) and torch.isin(cc_recip, recip).sum() > 2 / 3 * len(cc_recip):
                exp = torch.cat([exp, cc_recip])
        exp = torch.unique(exp)
        w = torch.exp(-original[i, exp])
        V[i, exp] = w / w.sum()
    if k2 != 1:  # local query expansion, in row chunks ((chunk, k2, n) at a time)
        V = torch.cat([V[rank[s:s + chunk, :k2]].mean(1) for s in range(0, n, chunk)])
    g_idx = [V[:, j].nonzero().flatten() for j in range(n)]
    jaccard = torch.zeros(nq, n, dtype=torch.float32)
    for i in range(nq):
        tmp = torch.zeros(n, dtype=torch.float32)
        nz = V[i].nonzero().flatten()
        for j in nz.tolist():
            tmp[g_idx[j]] += torch.minimum(V[i, j], V[g_idx[j], j])
        jaccard[i] = 1 - tmp / (2 - tmp)
    return jaccard
