"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) with sparse neighbourhoods.

Definition (datasets-and-protocols.md §3.6), over the N = Q + G query and gallery features:

1. D = the metric distance (squared Euclidean or 1 − cos) between all N items; D'(i, ·) = D(i, ·)
   divided by its row maximum. Neighbour lists rank D's rows stably (ties by index).
2. R(i, k) = the items j among i's first k + 1 neighbours that have i among their own first k + 1
   (Zhong et al.'s slicing, ``k1_slicing="paper"`` of the k-reciprocal core shared with clustering,
   ``maskcl.clustering.reciprocal``; steps 2, 3 and 5 are that core).
3. R*(i) = R(i, k1) plus R(c, round(k1/2)) for every c in R(i, k1) with
   |R(c, round(k1/2)) ∩ R(i, k1)| > 2/3 · |R(c, round(k1/2))|.
4. V(i, j) = exp(−D'(i, j)) / Σ_{j' ∈ R*(i)} exp(−D'(i, j')) for j ∈ R*(i), 0 elsewhere.
5. Local query expansion (k2 > 1): V(i) ← mean of V over i's first k2 neighbours.
6. Jaccard: d_J(i, j) = 1 − S / (2 − S) with S = Σ_k min(V(i, k), V(j, k)).
7. Final (query rows × gallery columns): (1 − λ) · d_J + λ · D'.

Only the N × (k1 + 1) neighbour lists and the sparse V are kept (a few hundred non-zeros per row);
the N × N distances are streamed in row blocks, and the output comes as query row blocks, so no
(Q + G)² matrix is ever held. The official code squares its input distance once more (and
cluster-contrast passes squared distances, giving a 4th power); here the metric distance is used
as is.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional, Tuple

import numpy as np
import scipy.sparse as sp
import torch

from . import _kernels
from .distance import ROW_BLOCK, DistanceComputer, as_tensor
from ..clustering.reciprocal import k_reciprocal_support, neighbour_columns, query_expansion
from ..config import section_defaults
from ..errors import EvaluationError

__all__ = ["k_reciprocal_rerank", "rerank_chunks", "RERANK_DEFAULTS"]

#: Zhong et al.'s values (also cluster-contrast's and fast-reid's defaults), read from the schema's
#: ``evaluate.rerank_k1/k2/lambda`` so that they are written once.
RERANK_DEFAULTS = {"k1": section_defaults("evaluate")["rerank_k1"], "k2": section_defaults("evaluate")["rerank_k2"],
                   "lambda_value": section_defaults("evaluate")["rerank_lambda"]}

#: Upper bound of (query non-zero, gallery non-zero) pairs expanded at once in the Jaccard step.
_PAIR_BUDGET = 1 << 23


def _check(k1: int, k2: int, lambda_value: float) -> None:
    if k1 < 1:
        raise EvaluationError(f"rerank k1 must be >= 1, got {k1}")
    if not 1 <= k2 <= k1 + 1:
        raise EvaluationError(f"rerank k2 must be in 1..k1+1 = {k1 + 1}, got {k2}")
    if not 0.0 <= lambda_value <= 1.0:
        raise EvaluationError(f"rerank lambda must be in [0, 1], got {lambda_value}")


def _pair_distances(comp: DistanceComputer, allf: torch.Tensor, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """D(i, j) for the given pairs, with the metric's formula (on the device of ``comp``)."""
    out = np.empty(rows.size, np.float64)
    step = 1 << 18
    with torch.inference_mode():
        f = allf.to(comp.device, torch.float64)
        if comp.metric == "cosine":
            f = torch.nn.functional.normalize(f, dim=1)
        sq = (f * f).sum(1)
        for s in range(0, rows.size, step):
            i = torch.from_numpy(rows[s:s + step]).to(comp.device)
            j = torch.from_numpy(cols[s:s + step]).to(comp.device)
            dot = (f[i] * f[j]).sum(1)
            d = 1.0 - dot if comp.metric == "cosine" else (sq[i] + sq[j] - 2.0 * dot).clamp_(min=0.0)
            out[s:s + step] = d.cpu().numpy()
    return out


def rerank_chunks(qf: Any, gf: Any, *, metric: str = "euclidean", k1: int = RERANK_DEFAULTS["k1"],
                  k2: int = RERANK_DEFAULTS["k2"], lambda_value: float = RERANK_DEFAULTS["lambda_value"],
                  chunk_size: Optional[int] = None,
                  device: Any = "cpu") -> Iterator[Tuple[int, np.ndarray]]:
    """Yield re-ranked query × gallery distance blocks ``(row0, block)`` (module docstring).

    Parameters
    ----------
    qf : array-like, shape (Q, d)
    gf : array-like, shape (G, d)
    metric : {"euclidean", "cosine"}
    k1, k2 : int
        Neighbourhood sizes (paper: 20 and 6); ``k2 = 1`` turns query expansion off.
    lambda_value : float
        Weight of the original distance in the final mix (paper: 0.3).
    chunk_size : int, optional
        Rows per block, for both the N × N streaming pass and the output.
    device : str or torch.device
        Where the distance products run.

    Returns
    -------
    iterator of (int, np.ndarray of shape (B, G), float64)

    Raises
    ------
    EvaluationError
        Bad parameters or feature shapes.
    """
    _check(int(k1), int(k2), float(lambda_value))
    q, g = as_tensor("query features", qf), as_tensor("gallery features", gf)
    if q.shape[1] != g.shape[1]:
        raise EvaluationError(f"query features have dim {q.shape[1]} but gallery features {g.shape[1]}")
    nq = q.shape[0]
    allf = torch.cat([q.to(torch.float64), g.to(torch.float64)]) if q.dtype != g.dtype else torch.cat([q, g])
    n = allf.shape[0]
    comp = DistanceComputer(allf, allf, metric=metric, device=device)
    rows = chunk_size or max(ROW_BLOCK, (1 << 24) // max(n, 1))
    rows = -(-int(rows) // ROW_BLOCK) * ROW_BLOCK
    kk = max(neighbour_columns(int(k1), int(k2), "paper", n))   # = min(k1 + 1, n): k2 <= k1 + 1

    # 1. neighbour lists and row maxima, streaming D in row blocks
    knn = np.empty((n, kk), np.int64)
    rowmax = np.empty(n, np.float64)
    for r in range(0, n, rows):
        block = comp.rows(r, r + rows)
        _kernels.stable_topk(block, kk, knn[r:r + block.shape[0]])
        rowmax[r:r + block.shape[0]] = block.max(axis=1)
    rowmax[rowmax <= 0] = 1.0

    # 2.-3. k-reciprocal sets and their expansion (the shared core, with the reference slicing)
    rstar, k_qe = k_reciprocal_support(knn, int(k1), int(k2), k1_slicing="paper")

    # 4. Gaussian weights on the normalised distance, rows summing to 1
    pr = np.repeat(np.arange(n), np.diff(rstar.indptr))
    w = np.exp(-_pair_distances(comp, allf, pr, rstar.indices) / rowmax[pr])
    w /= np.bincount(pr, weights=w, minlength=n)[pr]
    v = sp.csr_matrix((w, rstar.indices.copy(), rstar.indptr.copy()), shape=(n, n))

    # 5. local query expansion over the first k2 neighbours
    if k2 > 1:
        v = query_expansion(v, knn, k_qe)

    # 6.-7. Jaccard of query rows against gallery rows, mixed with the original distance
    gal_by_col = v[nq:].T.tocsr()                 # column k → gallery items j with V(j, k) > 0
    col_len = np.diff(gal_by_col.indptr)
    return _final_blocks(comp, v, gal_by_col, col_len, rowmax, nq, n - nq, rows, float(lambda_value))


def _final_blocks(comp: DistanceComputer, v: sp.csr_matrix, gal_by_col: sp.csr_matrix, col_len: np.ndarray,
                  rowmax: np.ndarray, nq: int, ng: int, rows: int, lam: float) -> Iterator[Tuple[int, np.ndarray]]:
    for r0 in range(0, nq, rows):
        r1 = min(r0 + rows, nq)
        s = np.zeros((r1 - r0) * ng, np.float64)
        sub = v[r0:r1]
        sub_rows = np.repeat(np.arange(r1 - r0), np.diff(sub.indptr))
        pairs_per_row = np.bincount(sub_rows, weights=col_len[sub.indices], minlength=r1 - r0).astype(np.int64)
        a = 0
        while a < r1 - r0:                        # groups of query rows within the pair budget
            b, total = a + 1, int(pairs_per_row[a])
            while b < r1 - r0 and total + pairs_per_row[b] <= _PAIR_BUDGET:
                total += int(pairs_per_row[b])
                b += 1
            _jaccard_min_sums(sub, a, b, gal_by_col, col_len, ng, s)
            a = b
        s = s.reshape(r1 - r0, ng)
        jac = 1.0 - s / (2.0 - s)
        orig = comp.rows(r0, r1)[:, nq:].astype(np.float64) / rowmax[r0:r1, None]
        yield r0, (1.0 - lam) * jac + lam * orig


def _jaccard_min_sums(sub: sp.csr_matrix, a: int, b: int, gal_by_col: sp.csr_matrix, col_len: np.ndarray,
                      ng: int, out: np.ndarray) -> None:
    """Add Σ_k min(V(i, k), V(j, k)) into ``out`` (flat (rows, G)) for the query rows a..b-1 of ``sub``."""
    lo, hi = sub.indptr[a], sub.indptr[b]
    if hi == lo:
        return
    qrow = np.repeat(np.arange(a, b), np.diff(sub.indptr[a:b + 1]))
    cols, vals = sub.indices[lo:hi], sub.data[lo:hi]
    lens = col_len[cols]
    total = int(lens.sum())
    if total == 0:
        return
    e = np.repeat(np.arange(cols.size), lens)
    start = np.repeat(gal_by_col.indptr[cols] - np.r_[0, np.cumsum(lens)[:-1]], lens)
    pos = start + np.arange(total)
    j = gal_by_col.indices[pos]
    m = np.minimum(vals[e], gal_by_col.data[pos])
    out[a * ng:b * ng] += np.bincount((qrow[e] - a) * ng + j, weights=m, minlength=(b - a) * ng)


def k_reciprocal_rerank(qf: Any, gf: Any, *, metric: str = "euclidean", k1: int = RERANK_DEFAULTS["k1"],
                        k2: int = RERANK_DEFAULTS["k2"], lambda_value: float = RERANK_DEFAULTS["lambda_value"],
                        chunk_size: Optional[int] = None,
                        device: Any = "cpu") -> np.ndarray:
    """Re-ranked query × gallery distance matrix, shape (Q, G), float64 (see ``rerank_chunks``)."""
    blocks = [blk for _, blk in rerank_chunks(qf, gf, metric=metric, k1=k1, k2=k2, lambda_value=lambda_value,
                                              chunk_size=chunk_size, device=device)]
    ng = as_tensor("gallery features", gf).shape[0]
    return np.concatenate(blocks) if blocks else np.zeros((0, ng), np.float64)
