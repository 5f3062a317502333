"""The k-reciprocal neighbour core shared by clustering's Jaccard distance and evaluation's re-ranking.

Both follow Zhong et al. (CVPR 2017): from stable kNN lists (self first, ties by index) build the
k-reciprocal sets R(i, k1) and R(i, round(k1/2)), expand R(i, k1) by the 2/3 rule into R*(i), and
average the weight rows of the first k2 neighbours (local query expansion). The two callers differ
only in what this module makes explicit, plus the weights, which each caller computes itself:

* the k1 slicing (``k1_slicing``): ``"clustercontrast"`` takes R(i, k1) from the first k1 kNN
  columns (ClusterContrast, SpCL and MaskCL search k1 neighbours, then slice ``[:k1 + 1]``),
  ``"paper"`` from k1 + 1 columns (Zhong et al.'s re-ranking code, used by the evaluation's
  re-ranking). R(i, round(k1/2)) uses round(k1/2) + 1 columns and query expansion k2 columns, both
  capped at k1 in the ClusterContrast variant, where only k1 columns exist;
* the weights on R*(i): clustering uses exp(-‖x_i - x_j‖²), re-ranking exp(-D(i, j) / max_j D(i, j))
  with its metric distance D; both normalise each row to sum 1 before :func:`query_expansion`.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Dict, Iterator, Optional, Tuple

import numpy as np
import scipy.sparse as sp

from ..errors import ConfigError

__all__ = ["K1_SLICINGS", "neighbour_columns", "reciprocal_sets", "expand_reciprocal",
           "k_reciprocal_support", "query_expansion", "timed"]

#: The k1 slicing conventions (module docstring).
K1_SLICINGS = ("clustercontrast", "paper")


@contextmanager
def timed(timings: Optional[Dict[str, float]], step: str) -> Iterator[None]:
    """Add the wall time of the block to ``timings[step]`` (no-op when ``timings`` is None)."""
    start = time.perf_counter()
    yield
    if timings is not None:
        timings[step] = timings.get(step, 0.0) + time.perf_counter() - start


def neighbour_columns(k1: int, k2: int, k1_slicing: str = "clustercontrast",
                      n: Optional[int] = None) -> Tuple[int, int, int]:
    """kNN columns (self included) used for R(i, k1), R(i, round(k1/2)) and query expansion.

    Parameters
    ----------
    k1, k2 : int
        The k-reciprocal and query-expansion sizes.
    k1_slicing : {"clustercontrast", "paper"}
        ``clustercontrast``: the kNN list has only k1 columns, so R(i, k1) looks at k1 neighbours
        (self included) although the code slices k1 + 1 (ClusterContrast, SpCL and MaskCL do this;
        query expansion then also sees at most k1 columns). ``paper``: k1 + 1 columns, as in the
        original re-ranking code of Zhong et al.
    n : int, optional
        The number of points; each count is capped at it (a list cannot be longer).

    Returns
    -------
    (k_recip, k_half, k_qe) : tuple of int
    """
    if k1_slicing not in K1_SLICINGS:
        raise ConfigError(f"unknown k1_slicing {k1_slicing!r}; use one of {', '.join(K1_SLICINGS)}")
    if k1 < 1 or k2 < 1:
        raise ConfigError(f"Jaccard k1 and k2 must be >= 1; got k1={k1}, k2={k2}")
    # Python's round (banker's rounding) equals np.around in the reference code.
    wanted = (k1 + 1, int(round(k1 / 2)) + 1, k2)
    if k1_slicing == "clustercontrast":
        wanted = tuple(min(w, k1) for w in wanted)
    if n is not None:
        wanted = tuple(min(w, n) for w in wanted)
    k_recip, k_half, k_qe = wanted
    return k_recip, k_half, k_qe


def reciprocal_sets(knn_indices: np.ndarray, columns: int) -> sp.csr_matrix:
    """R(i, ·) as a 0/1 int32 CSR matrix (sorted indices): j among i's first ``columns`` kNN columns
    and i among j's.

    The kNN pattern A (N x N, ``columns`` entries per row) times its transpose, element-wise.
    """
    n = knn_indices.shape[0]
    if columns > knn_indices.shape[1]:
        raise ValueError(f"{columns} kNN columns needed, the lists have {knn_indices.shape[1]}")
    fwd = np.sort(knn_indices[:, :columns], axis=1)
    knn = sp.csr_matrix((np.ones(fwd.size, dtype=np.int8), fwd.ravel().astype(np.int32),
                         np.arange(0, fwd.size + 1, fwd.shape[1])), shape=(n, n))
    mutual = knn.multiply(knn.T.tocsr()).tocsr()
    mutual.sort_indices()
    # int32 counts keep the products below cheap (float64 doubles their memory traffic)
    return sp.csr_matrix((np.ones(mutual.nnz, dtype=np.int32), mutual.indices, mutual.indptr),
                         shape=(n, n))


def expand_reciprocal(recip: sp.csr_matrix, recip_half: sp.csr_matrix) -> sp.csr_matrix:
    """R*(i): R(i) plus R(c, k1/2) for each c in R(i) with |R(c,k1/2) ∩ R(i)| > 2/3 |R(c,k1/2)|.

    Returns a canonical (sorted, duplicate-free) 0/1 int32 CSR matrix.
    """
    n = recip.shape[0]
    half_len = np.diff(recip_half.indptr)
    # overlap[i, c] = |R(i) ∩ R_half(c)| on R's pattern (> 0 there: c is in both sets).
    # R_half is symmetric (reciprocity is), so R_halfᵀ = R_half and no transpose is needed.
    overlap = (recip @ recip_half).multiply(recip).tocoo()
    accept = overlap.data > (2.0 / 3.0) * half_len[overlap.col]
    accepted = sp.csr_matrix((np.ones(int(accept.sum()), dtype=np.int32),
                              (overlap.row[accept], overlap.col[accept])), shape=(n, n))
    support = (recip + accepted @ recip_half).tocsr()
    support.sum_duplicates()
    support.data[:] = 1
    return support


def k_reciprocal_support(knn_indices: np.ndarray, k1: int, k2: int, *, k1_slicing: str,
                         timings: Optional[Dict[str, float]] = None) -> Tuple[sp.csr_matrix, int]:
    """The one k-reciprocal core: R*(i) for every point, and the query-expansion column count.

    Parameters
    ----------
    knn_indices : np.ndarray of int, shape (N, >= max(neighbour_columns(k1, k2, k1_slicing, N)))
        Stable neighbour lists, each point first in its own.
    k1, k2 : int
    k1_slicing : {"clustercontrast", "paper"}
        Explicit in every call: clustering passes its configured slicing (default
        ``clustercontrast``), re-ranking always ``paper``.
    timings : dict, optional
        Receives the seconds of the ``reciprocal`` and ``expansion`` steps.

    Returns
    -------
    (support, k_qe) : (scipy.sparse.csr_matrix, int)
        R* as a canonical 0/1 int32 CSR matrix (N x N), and the kNN columns query expansion uses.
    """
    n = knn_indices.shape[0]
    k_recip, k_half, k_qe = neighbour_columns(k1, k2, k1_slicing, n)
    with timed(timings, "reciprocal"):
        recip = reciprocal_sets(knn_indices, k_recip)
        recip_half = reciprocal_sets(knn_indices, k_half)
    with timed(timings, "expansion"):
        support = expand_reciprocal(recip, recip_half)
    return support, k_qe


def query_expansion(weights: sp.csr_matrix, knn_indices: np.ndarray, k_qe: int) -> sp.csr_matrix:
    """V_qe[i] = mean of V over rows knn_indices[i, :k_qe] (i itself first); canonical CSR."""
    n = weights.shape[0]
    k_qe = min(k_qe, knn_indices.shape[1])
    q = sp.csr_matrix((np.full(n * k_qe, 1.0 / k_qe), knn_indices[:, :k_qe].ravel(),
                       np.arange(0, n * k_qe + 1, k_qe)), shape=(n, n))
    out = (q @ weights).tocsr()
    out.sum_duplicates()  # canonical: sorted indices, no duplicates
    return out
