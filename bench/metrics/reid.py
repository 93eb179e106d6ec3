"""Re-identification metrics: single-query CMC and mAP, k-reciprocal re-ranking, and the
k-reciprocal Jaccard distance that unsupervised reID clusters with.

Protocol (Market-1501's, as torchreid's ``eval_market1501`` and TransReID's ``eval_func``
implement it): for each query, the gallery images of the same identity taken by the same
camera are removed, and so are junk images (identity -1, Market-1501 only); distractors
(identity 0) stay as negatives.  A query with no remaining true match is skipped.  CMC(k)
is the fraction of valid queries whose first true match is within the top k; AP is the
mean over true matches of (matches so far / rank), mAP its mean over valid queries.

Speed (``evaluate_rank`` on the CPU): no row is sorted.  A query's AP needs only the rank
of each of its true matches among the valid gallery entries: (gallery entries before it) -
(same-identity entries before it) + (true matches before it).  The same-identity entries, a
few dozen per query, are sorted exactly.  The gallery entries before a match are counted
with a histogram: each distance of a block of queries goes to one of G/8 bins of its row by
a monotone map (``round((d - min) * scale)``, so a smaller distance never lands in a higher
bin and equal distances share one), one ``bincount`` and a cumulative sum give the entries
in lower bins, and the few entries that share a bin with a true match are compared with it
exactly.  That is a handful of vectorised, single-threaded NumPy passes over each block of
about half a million entries (small enough to stay in cache), against the O(G log G) sort
of every row that torchreid's evaluators do.  Order is that of a stable sort (distance, then
gallery index): where a true match and a negative are exactly tied the lower gallery index
comes first; torchreid's argsort is not stable, so its order among ties is arbitrary (a tie
has probability zero for continuous distances).  A block with a NaN or an infinite
distance, or whose distances nearly all tie, and any matrix on a GPU go through a stable
sort of each row instead (``torch.argsort(stable=True)``, NaN last as in NumPy), with the
same numbers.
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


def evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50, *,
                  remove_junk: bool = True, chunk_elems: int = 1 << 19) -> RankResult:
    """CMC and mAP of a (num_query, num_gallery) distance matrix (smaller = more similar).

    ``distmat``: a NumPy array or a torch tensor (a CUDA tensor is evaluated on its GPU).
    ``remove_junk`` drops gallery images of identity -1 from every ranking (Market-1501's
    junk); torchreid instead drops them while reading the dataset, so on a gallery without
    -1 both give the same numbers.  ``chunk_elems``: the entries of one block of queries
    (the memory used besides the matrix is about 9 bytes each on the CPU; ties are ordered
    as a stable sort orders them, see the module docstring).  Raises ValueError if no query
    has a true match.
    """
    on_gpu = isinstance(distmat, torch.Tensor) and distmat.device.type != "cpu"
    d = distmat.detach() if isinstance(distmat, torch.Tensor) else np.asarray(distmat)
    if d.ndim != 2:
        raise ValueError(f"distmat must be 2-D, got shape {tuple(d.shape)}")
    ids = [_ids(x) for x in (q_pids, g_pids, q_camids, g_camids)]
    nq, ng = d.shape
    if tuple(map(len, ids)) != (nq, ng, nq, ng):
        raise ValueError("ids and camera ids must match the distance matrix's shape")
    qp, gp, qc, gc = ids
    if nq == 0 or ng == 0:
        raise ValueError(f"no query has a true match in an empty ranking ({nq} x {ng})")
    junk = (gp == -1) if remove_junk else np.zeros(ng, bool)
    ap, first = np.full(nq, np.nan), np.full(nq, -1, np.int64)
    if on_gpu:  # sorting is cheap there; blocks of 32 x chunk_elems
        step = max(1, 32 * chunk_elems // max(ng, 1))
        t_ids = [torch.as_tensor(x, device=d.device) for x in (qp, gp, qc, gc, junk)]
        for s in range(0, nq, step):
            ap[s:s + step], first[s:s + step] = _sorted_block(d[s:s + step], *t_ids, s)
    else:
        _count_blocks(d, qp, gp, qc, gc, junk, max(1, chunk_elems // max(ng, 1)), ap, first)
    valid = first >= 0
    n_valid = int(valid.sum())
    if n_valid == 0:
        raise ValueError("no query has a true match in the gallery (from another camera)")
    max_rank = min(max_rank, ng)
    f = first[valid]
    hits = np.bincount(f[f < max_rank], minlength=max_rank)[:max_rank]
    return RankResult(cmc=np.cumsum(hits) / n_valid, mAP=float(ap[valid].mean()),
                      num_valid_queries=n_valid, ap=ap[valid])


def _ids(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x).astype(np.int64, copy=False).reshape(-1)


def _float_block(d, s: int, e: int) -> np.ndarray:
    """Rows s:e as a C-contiguous float32/float64 array (a view when possible)."""
    if isinstance(d, torch.Tensor):
        blk = d[s:e]
        if blk.dtype not in (torch.float32, torch.float64):
            blk = blk.to(torch.float32 if blk.is_floating_point() else torch.float64)
        return np.ascontiguousarray(blk.numpy())
    blk = d[s:e]
    if blk.dtype not in (np.float32, np.float64):
        blk = blk.astype(np.float32 if np.issubdtype(blk.dtype, np.floating) else np.float64)
    return np.ascontiguousarray(blk)


def _count_blocks(d, qp, gp, qc, gc, junk, step, ap_out, first_out) -> None:
    """The histogram evaluator (module docstring), writing AP and the 0-based rank of the
    first true match of every query with one into ``ap_out``/``first_out``."""
    nq, ng = d.shape
    # every query's same-identity gallery entries, ascending gallery index: (nq, L)
    order = np.argsort(gp, kind="stable")
    start = np.searchsorted(gp[order], qp, "left")
    n_same = np.searchsorted(gp[order], qp, "right") - start
    L = max(int(n_same.max(initial=0)), 1)
    cols = order[np.minimum(start[:, None] + np.arange(L), ng - 1)]
    inside = (np.arange(L) < n_same[:, None]) & ~junk[cols]
    pos = inside & (gc[cols] != qc[:, None])
    n_pos = pos.sum(1)
    junk_cols = np.flatnonzero(junk)
    step = min(step, nq)
    # reused by every block (a fresh large array costs a page fault per 4 KiB)
    fbuf, sbuf = np.empty(step * ng, np.float64), np.empty(step * ng, bool)
    for s in range(0, nq, step):
        e = min(s + step, nq)
        if not n_pos[s:e].any():
            continue
        blk = _float_block(d, s, e)
        res = _count_block(blk, cols[s:e], inside[s:e], pos[s:e], n_pos[s:e], junk_cols,
                           fbuf[:blk.size].reshape(blk.shape), sbuf[:blk.size])
        if res is None:  # NaN/inf, or nearly every distance tied: sort this block
            t = torch.from_numpy(blk if blk.flags.writeable else blk.copy())
            res = _sorted_block(t, *(torch.from_numpy(x) for x in (qp, gp, qc, gc, junk)), s)
        ap_out[s:e], first_out[s:e] = res


BINS_PER_ENTRY = 1 / 8  # histogram bins per gallery entry: small tables stay in L1 cache
_TWO52_BITS = int(np.array(2.0 ** 52).view(np.int64))


def _count_block(blk, cols, inside, pos, n_pos, junk_cols, fbuf, sbuf):
    """AP and first-match rank of the queries of one block of rows; None where the block
    needs the sort (a non-finite distance, or too many ties to count cheaply).  ``fbuf``
    (float64, the block's shape) and ``sbuf`` (bool, its size) are scratch space."""
    R, G = blk.shape
    lo, hi = float(blk.min()), float(blk.max())
    B = max(int(G * BINS_PER_ENTRY), 1)  # bins per row; bin B collects the junk
    if not (np.isfinite(hi - lo) and hi > lo and np.isfinite((B - 1) / (hi - lo))):
        return None
    scale = (B - 1) / (hi - lo)
    rows = np.arange(R)[:, None]
    # same-identity entries sorted by (distance, gallery index); the j-th true match sits at
    # position p[:, j] of that list, so p[:, j] same-identity entries precede it
    sd = blk[rows, cols]
    o = np.argsort(np.where(inside, sd, np.inf), axis=1, kind="stable")
    K = max(int(n_pos.max()), 1)
    p = np.argsort(~np.take_along_axis(pos, o, 1), axis=1, kind="stable")[:, :K]
    pk = np.take_along_axis(o, p, 1)
    t = np.take_along_axis(sd, pk, 1)  # (R, K) distances of the true matches, ascending
    tc = np.take_along_axis(cols, pk, 1)  # their gallery indices
    jv = np.arange(K) < n_pos[:, None]
    # a monotone map to bins 0..B-1 (d1 < d2 gives bin(d1) <= bin(d2); ties share a bin):
    # x = (d - lo) * scale lies in [0, B - 1] up to rounding; adding 2^52 + the row's first
    # bin rounds x to an integer held in the float64's low bits, read through an int64 view
    np.subtract(blk, lo, out=fbuf)
    np.multiply(fbuf, scale, out=fbuf)
    np.add(fbuf, (2.0 ** 52 + np.arange(0, R * (B + 1), B + 1))[:, None], out=fbuf)
    ibuf = fbuf.view(np.int64)
    ibuf -= _TWO52_BITS
    if len(junk_cols):  # row r owns bins r(B+1) .. r(B+1)+B, the last for its junk
        ibuf[:, junk_cols] = np.arange(B, R * (B + 1), B + 1)[:, None]
    flat = ibuf.reshape(-1)
    hist = np.bincount(flat, minlength=R * (B + 1)).reshape(R, B + 1)
    lower = (np.cumsum(hist, axis=1) - hist).reshape(-1)  # entries of its row in lower bins
    tb = ibuf[rows, tc]  # (R, K) bin of each true match
    before = lower[tb]
    # the entries sharing a bin with a true match are compared with it exactly; slot[bin] is
    # the first match j in that bin (matches are sorted, so a bin's matches are j, j+1, ...)
    tbv, jj = tb[jv], np.nonzero(jv)[1]
    new = np.r_[True, tbv[1:] != tbv[:-1]]
    n_runs = int(np.diff(np.r_[np.flatnonzero(new), len(tbv)]).max(initial=1))
    mark = np.zeros(R * (B + 1), bool)
    mark[tbv] = True
    np.take(mark, flat, out=sbuf, mode="wrap")
    nz = np.flatnonzero(sbuf)
    if len(nz) * n_runs > R * G:  # mostly ties: the sort is cheaper
        return None
    slot = np.zeros(R * (B + 1), np.int64)
    slot[tbv[new]] = jj[new]
    be = flat[nz]
    rk = nz // G * K  # row * K
    v, gg, j0 = blk.reshape(-1)[nz], nz % G, rk + slot[be]  # j0: flat index into (R, K)
    t_, tb_, tc_ = t.reshape(-1), tb.reshape(-1), tc.reshape(-1)
    for m in range(n_runs):
        j = np.minimum(j0 + m, R * K - 1)
        tj = t_[j]
        hit = (j0 + m - rk < K) & (tb_[j] == be) & ((v < tj) | ((v == tj) & (gg < tc_[j])))
        before += np.bincount(j[hit], minlength=R * K).reshape(R, K)
    j = np.arange(K)
    rank = before - p + j  # negatives before the j-th match, plus the matches before it
    ap = np.where(jv, (j + 1) / (rank + 1.0), 0.0).sum(1) / np.maximum(n_pos, 1)
    return np.where(n_pos > 0, ap, np.nan), np.where(n_pos > 0, rank[:, 0], -1)


def _sorted_block(d: torch.Tensor, qp, gp, qc, gc, junk, s: int):
    """AP and first-match rank of a block of rows (queries s, s+1, ...) by a stable sort of
    each row (any device; NaN sorts last)."""
    R = len(d)
    if not d.is_floating_point():
        d = d.double()
    same = gp[None, :] == qp[s:s + R, None]
    samecam = gc[None, :] == qc[s:s + R, None]
    match = same & ~samecam & ~junk[None, :]
    valid = ~(same & samecam) & ~junk[None, :]
    order = torch.argsort(d, dim=1, stable=True)
    m = match.gather(1, order)
    rank = valid.gather(1, order).cumsum(1) - 1  # rank among the valid entries
    k = m.sum(1)
    ap = torch.where(m, m.cumsum(1).double() / (rank + 1).double(), 0.0).sum(1) / k.clamp(min=1)
    first = rank.gather(1, m.to(torch.uint8).argmax(1, keepdim=True))[:, 0]
    ap = torch.where(k > 0, ap, torch.nan)
    first = torch.where(k > 0, first, -1)
    return ap.cpu().numpy(), first.cpu().numpy()


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
