"""Text-to-image retrieval metrics for text-based person search: R@k, mAP and mINP.

Protocol (CUHK-PEDES, ICFG-PEDES, RSTPReid, as IRRA's ``utils/metrics.py::rank`` computes
it): every caption of a test image is a query, the gallery is every test image, and a
query's positives are *all* gallery images of its identity (not only the image it was
written for).  For each query the gallery is ranked by descending similarity.  R@k is the
fraction of queries with a positive among the first k; AP is the mean over the query's
positives of (positives so far / rank), mAP its mean over queries; INP is (number of
positives / rank of the last positive), mINP its mean (Ye et al.'s hardest-match measure,
which IRRA reports too).

Ties: ranked as a stable sort of the descending scores does, the lower gallery index first
(as :mod:`bench.metrics.reid` resolves them); IRRA's ``argsort`` leaves that order
unspecified.  A query without any positive in the gallery is left out (IRRA would divide
by zero) and counted; if none has one it is an error.  Queries are processed in chunks so
ICFG-PEDES's 19,848 x 19,848 similarities never sit in memory whole.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

RANKS = (1, 5, 10)


@dataclass(frozen=True)
class RetrievalResult:
    recall: dict[int, float]  # R@k in [0, 1]
    mAP: float  # in [0, 1]
    mINP: float  # in [0, 1]
    num_queries: int  # queries with at least one positive (the ones scored)
    num_skipped: int  # queries without a positive in the gallery
    ap: np.ndarray  # per scored query

    def as_dict(self) -> dict[str, float]:
        return {**{f"R@{k}": float(v) for k, v in self.recall.items()}, "mAP": float(self.mAP),
                "mINP": float(self.mINP)}


def _t(x, dtype=None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(dtype) if dtype is not None else t


def retrieval_metrics(similarity, query_pids, gallery_pids, ranks=RANKS, *,
                      chunk_elems: int = 1 << 24) -> RetrievalResult:
    """R@k, mAP and mINP of a (num_query, num_gallery) similarity matrix (larger = more
    similar) under the protocol of the module docstring."""
    s = _t(similarity)
    if s.ndim != 2:
        raise ValueError(f"similarity must be 2-D, got shape {tuple(s.shape)}")
    qp, gp = _t(query_pids, torch.int64), _t(gallery_pids, torch.int64)
    nq, ng = s.shape
    if (len(qp), len(gp)) != (nq, ng):
        raise ValueError("ids must match the similarity matrix's shape")
    if not s.is_floating_point():
        s = s.double()
    ks = [k for k in ranks]
    hits = torch.zeros(len(ks), dtype=torch.float64)
    aps, inps, skipped = [], [], 0
    pos = torch.arange(1, ng + 1, dtype=torch.float64)
    step = max(1, chunk_elems // max(ng, 1))
    for a in range(0, nq, step):
        order = torch.sort(-s[a:a + step], dim=1, stable=True).indices
        match = gp[order] == qp[a:a + step, None]
        n_pos = match.sum(1)
        keep = n_pos > 0
        skipped += int((~keep).sum())
        match, n_pos = match[keep], n_pos[keep].double()
        if not len(match):
            continue
        m = match.double()
        cum = m.cumsum(1)
        aps.append((cum / pos * m).sum(1) / n_pos)
        last = ng - 1 - m.flip(1).argmax(1)  # 0-based rank of the last positive
        inps.append(n_pos / (last + 1).double())
        first = m.argmax(1)  # 0-based rank of the first positive
        hits += torch.stack([(first < k).sum() for k in ks]).double()
    if not aps:
        raise ValueError("no query has a positive (an image of its identity) in the gallery")
    ap, inp = torch.cat(aps), torch.cat(inps)
    n = len(ap)
    return RetrievalResult(recall={k: float(h) / n for k, h in zip(ks, hits)},
                           mAP=float(ap.mean()), mINP=float(inp.mean()), num_queries=n,
                           num_skipped=skipped, ap=ap.numpy())


def chance(query_pids, gallery_pids, ranks=RANKS, draws: int = 20, seed: int = 0
           ) -> dict[str, float]:
    """The metrics of random similarities (mean of ``draws`` draws), in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    nq, ng = len(query_pids), len(gallery_pids)
    runs = [retrieval_metrics(torch.rand(nq, ng, generator=g, dtype=torch.float64), query_pids,
                              gallery_pids, ranks).as_dict() for _ in range(draws)]
    return {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
