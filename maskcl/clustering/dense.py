"""The published k-reciprocal Jaccard distance with dense N × N arrays, step by step: the reference.

Zhong et al. 2017 as ClusterContrast's ``faiss_rerank.py`` computes it, written for reading, not for
speed (O(N²) memory, Python loops): the tests check the sparse implementation (``jaccard.py``)
against it and the clustering benchmark times the two. ``initial_rank`` defaults to the full sort of
each row by (squared distance, not-self, index); ClusterContrast keeps its first k1 columns.
"""

from __future__ import annotations

import time
from typing import Dict, Optional

import numpy as np

__all__ = ["dense_initial_rank", "dense_jaccard"]


def dense_initial_rank(x: np.ndarray, k1: int, slicing: str = "clustercontrast") -> np.ndarray:
    """Each row's neighbours by (squared distance, not-self, index); ``clustercontrast`` keeps k1 columns."""
    x = x.astype(np.float64)
    n = len(x)
    sq = (x * x).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
    np.fill_diagonal(d2, 0.0)
    idx = np.broadcast_to(np.arange(n), (n, n))
    rank = np.lexsort((idx, idx != np.arange(n)[:, None], d2), axis=-1)
    return rank[:, :k1] if slicing == "clustercontrast" else rank


def dense_jaccard(x: np.ndarray, k1: int = 30, k2: int = 6, *, slicing: str = "clustercontrast",
                  initial_rank: Optional[np.ndarray] = None, dtype: type = np.float64,
                  times: Optional[Dict[str, float]] = None) -> np.ndarray:
    """The N × N Jaccard distance of the L2-normalised rows of ``x`` (``times``, if given, gets each phase's seconds)."""
    ranks = dense_initial_rank(x, k1, slicing) if initial_rank is None else initial_rank
    x = x.astype(dtype)
    n = len(x)
    clock = time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal clock
        if times is not None:
            now = time.perf_counter()
            times[phase] = now - clock
            clock = now

    def k_reciprocal(i: int, k: int) -> np.ndarray:
        forward = ranks[i, :k + 1]
        backward = ranks[forward, :k + 1]
        return forward[np.where(backward == i)[0]]

    v = np.zeros((n, n), dtype=dtype)
    for i in range(n):
        recip = k_reciprocal(i, k1)
        expansion = recip
        for candidate in recip:
            cand = k_reciprocal(candidate, int(np.around(k1 / 2)))
            if len(np.intersect1d(cand, recip)) > 2 / 3 * len(cand):
                expansion = np.append(expansion, cand)
        expansion = np.unique(expansion)
        weight = np.exp(-(2.0 - 2.0 * x[i] @ x[expansion].T))
        v[i, expansion] = weight / weight.sum()
    lap("reciprocal+expansion+weights")
    if k2 != 1:
        v = np.stack([v[ranks[i, :k2]].mean(axis=0) for i in range(n)])
    lap("query_expansion")
    inverted = [np.flatnonzero(v[:, j]) for j in range(n)]  # the rows holding each column, as the official invIndex
    dist = np.zeros((n, n), dtype=dtype)
    for i in range(n):
        shared = np.zeros(n, dtype=dtype)
        for j in np.flatnonzero(v[i]):
            rows = inverted[j]
            shared[rows] += np.minimum(v[i, j], v[rows, j])
        dist[i] = 1.0 - shared / (2.0 - shared)
    dist[dist < 0] = 0.0
    lap("inverted_index+jaccard")
    return dist
