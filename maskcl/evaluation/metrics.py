"""Ranking metrics (CMC, mAP, mINP) under the standard, clothes-changing and same-clothes rules.

For a query q and a gallery item g of the same identity (datasets-and-protocols.md §2.1):

===========  =================================================  ====================================
rule         good (true match that counts)                      junk (removed from the ranked list)
===========  =================================================  ====================================
standard     different camera                                   same camera
cc           different camera AND different clothes             same camera OR same clothes
sc           different camera AND same clothes                  same camera OR different clothes
===========  =================================================  ====================================

Items of other identities always stay as distractors. The gallery is ranked by ascending distance
with ties broken by gallery index (a stable sort), so results are deterministic. After junk removal
the good items sit at 0-based positions r_1 < ... < r_n; CMC_q(k) = [r_1 < k], AP_q = mean_j
j / (r_j + 1), INP_q = n / (r_n + 1). Queries without a good item are skipped and counted.

Nothing here sorts a gallery row: only the ranks of the query's same-identity items are computed
(see ``_kernels``), which is what makes DeepChange-size evaluation fast and memory-bounded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, Optional, Sequence, Tuple

import numpy as np

from ..errors import EvaluationError
from . import _kernels
from .distance import distance_chunks

__all__ = ["RULES", "EvaluationError", "RankingResult", "ChunkedEvaluation", "evaluate",
           "evaluate_chunks", "evaluate_features", "match_flags"]

log = logging.getLogger(__name__)

#: Matching rules, see the module docstring.
RULES: Tuple[str, ...] = ("standard", "cc", "sc")


@dataclass
class RankingResult:
    """Metrics of one query set against one gallery under one rule; values are fractions in [0, 1].

    ``result["mAP"]`` works like attribute access. Per-query arrays are NaN (AP, INP) or -1
    (``first_match``) for skipped queries.
    """

    rule: str
    mAP: float
    mINP: float
    cmc: np.ndarray            # (G,) CMC over the whole gallery length; cmc[k-1] = rank-k
    num_queries: int
    num_gallery: int
    num_valid_queries: int
    num_skipped_queries: int
    ap: np.ndarray             # (Q,) float64
    inp: np.ndarray            # (Q,) float64
    first_match: np.ndarray    # (Q,) int64, 0-based position of the first good item after junk removal
    num_good: np.ndarray       # (Q,) int64

    def __getitem__(self, key: str) -> Any:
        if key.startswith("rank") and key[4:].isdigit():
            return self.rank(int(key[4:]))
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def rank(self, k: int) -> float:
        """CMC at rank ``k`` (1-based); NaN without valid queries, capped at the gallery length."""
        if self.num_valid_queries == 0 or self.cmc.size == 0:
            return float("nan")
        return float(self.cmc[min(k, self.cmc.size) - 1])

    def to_dict(self, max_rank: int = 50, ranks: Sequence[int] = (1, 5, 10, 20)) -> Dict[str, Any]:
        """JSON-ready summary: rank-k values, the first ``max_rank`` CMC values and the counts."""
        out: Dict[str, Any] = {"rule": self.rule, "mAP": _num(self.mAP), "mINP": _num(self.mINP)}
        for k in ranks:
            out[f"rank{k}"] = _num(self.rank(k))
        out["cmc"] = [_num(v) for v in self.cmc[:max_rank]]
        out.update(num_queries=self.num_queries, num_gallery=self.num_gallery,
                   num_valid_queries=self.num_valid_queries, num_skipped_queries=self.num_skipped_queries)
        return out


def _num(x: float) -> Optional[float]:
    """JSON has no NaN: undefined metrics become null."""
    x = float(x)
    return None if np.isnan(x) else x


@dataclass
class ChunkedEvaluation:
    """Results of ``evaluate_chunks``: one ``RankingResult`` per rule, plus optional top-k lists."""

    results: Dict[str, RankingResult]
    topk: Optional[np.ndarray] = None   # (Q, k) gallery indices in ranked order (junk included)


@dataclass
class _Labels:
    pids: np.ndarray
    cams: np.ndarray
    clothes: Optional[np.ndarray]


def _labels(name: str, pids: Any, cams: Any, clothes: Any) -> _Labels:
    p = _int_array(f"{name}_pids", pids)
    c = _int_array(f"{name}_camids", cams)
    if c.shape != p.shape:
        raise EvaluationError(f"{name}_camids has {c.size} entries but {name}_pids has {p.size}")
    cl = None
    if clothes is not None:
        cl = _int_array(f"{name}_clothes", clothes)
        if cl.shape != p.shape:
            raise EvaluationError(f"{name}_clothes has {cl.size} entries but {name}_pids has {p.size}")
    return _Labels(p, c, cl)


def _int_array(name: str, x: Any) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise EvaluationError(f"{name} must be one-dimensional, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
            a = a.astype(np.int64)
        else:
            raise EvaluationError(f"{name} must hold integers, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def _check_rules(rules: Sequence[str], q: _Labels, g: _Labels) -> None:
    for r in rules:
        if r not in RULES:
            raise EvaluationError(f"unknown rule {r!r}; use one of {', '.join(RULES)}")
        if r != "standard" and (q.clothes is None or g.clothes is None):
            raise EvaluationError(f"rule {r!r} needs q_clothes and g_clothes (clothes ids of both sides)")


def _same_id_items(q: _Labels, g: _Labels) -> Tuple[np.ndarray, np.ndarray]:
    """CSR of the gallery items sharing each query's identity: (ptr (Q+1,), items ascending per row)."""
    order = np.argsort(g.pids, kind="stable")
    uniq, start, counts = np.unique(g.pids[order], return_index=True, return_counts=True)
    if uniq.size == 0:
        return np.zeros(q.pids.size + 1, np.int64), np.zeros(0, np.int64)
    loc = np.minimum(np.searchsorted(uniq, q.pids), uniq.size - 1)
    found = uniq[loc] == q.pids
    n = np.where(found, counts[loc], 0).astype(np.int64)
    s = np.where(found, start[loc], 0).astype(np.int64)
    ptr = np.zeros(q.pids.size + 1, np.int64)
    np.cumsum(n, out=ptr[1:])
    total = int(ptr[-1])
    pos = np.repeat(s - ptr[:-1], n) + np.arange(total, dtype=np.int64)
    return ptr, order[pos].astype(np.int64)


def match_flags(rule: str, same_cam: np.ndarray, same_clothes: Optional[np.ndarray]) -> np.ndarray:
    """Flag same-identity items: 1 = good, 2 = junk (§2.1)."""
    if rule == "standard":
        good = ~same_cam
    elif rule == "cc":
        good = ~same_cam & ~same_clothes
    elif rule == "sc":
        good = ~same_cam & same_clothes
    else:
        raise EvaluationError(f"unknown rule {rule!r}; use one of {', '.join(RULES)}")
    return np.where(good, 1, 2).astype(np.int8)


def _as_rows(block: Any) -> np.ndarray:
    if hasattr(block, "detach"):  # torch tensor
        block = block.detach().cpu().numpy()
    a = np.asarray(block)
    if a.dtype not in (np.float32, np.float64):
        if not np.issubdtype(a.dtype, np.number):
            raise EvaluationError(f"distances must be numeric, got dtype {a.dtype}")
        a = a.astype(np.float32 if a.dtype.itemsize <= 4 else np.float64)
    return np.ascontiguousarray(a)


def evaluate_chunks(chunks: Iterable[Tuple[int, Any]], q_pids: Any, g_pids: Any, q_camids: Any,
                    g_camids: Any, q_clothes: Any = None, g_clothes: Any = None, *,
                    rules: Sequence[str] = ("standard",), topk: int = 0) -> ChunkedEvaluation:
    """Evaluate a query × gallery distance matrix delivered as consecutive row blocks.

    Parameters
    ----------
    chunks : iterable of (row0, block)
        Blocks of shape (B, G) covering the query rows 0..Q-1 in order, each starting at ``row0``.
        Only one block needs to be in memory at a time.
    q_pids, g_pids, q_camids, g_camids : array-like of int, shapes (Q,) and (G,)
    q_clothes, g_clothes : array-like of int or None
        Clothes ids; required by the ``cc`` and ``sc`` rules.
    rules : sequence of str
        Rules to evaluate from the same distances (``standard``, ``cc``, ``sc``).
    topk : int
        If > 0, also return the first ``topk`` gallery indices of every query's full ranked list
        (junk items included), in stable order.

    Returns
    -------
    ChunkedEvaluation

    Raises
    ------
    EvaluationError
        Inconsistent shapes, blocks out of order or incomplete, non-finite distances, an unknown
        rule, or a clothes rule without clothes ids.
    """
    q = _labels("q", q_pids, q_camids, q_clothes)
    g = _labels("g", g_pids, g_camids, g_clothes)
    rules = list(dict.fromkeys(rules))
    _check_rules(rules, q, g)
    nq, ng = q.pids.size, g.pids.size
    ptr, items = _same_id_items(q, g)
    ranks = np.empty(items.size, np.int64)
    k = int(min(topk, ng))
    top = np.full((nq, k), -1, np.int64) if k > 0 else None
    expected = 0
    for row0, block in chunks:
        a = _as_rows(block)
        if a.ndim != 2 or a.shape[1] != ng:
            raise EvaluationError(f"distance block has shape {a.shape}; expected (rows, {ng}) "
                                  f"(one column per gallery item)")
        if row0 != expected:
            raise EvaluationError(f"distance blocks out of order: got rows from {row0}, expected {expected}")
        if expected + a.shape[0] > nq:
            raise EvaluationError(f"distance blocks hold more than the {nq} query rows")
        bad = _first_nonfinite_row(a)
        if bad >= 0:
            raise EvaluationError(f"non-finite distance in query row {bad + row0}; check the features for NaN/inf")
        if a.shape[0]:
            lo, hi = ptr[row0], ptr[row0 + a.shape[0]]
            ranks[lo:hi] = _kernels.same_id_ranks(a, row0, ptr, items, _kernels.LINEAR_MAX_ITEMS)
            if top is not None:
                _kernels.stable_topk(a, k, top[row0:row0 + a.shape[0]])
        expected += a.shape[0]
    if expected != nq:
        raise EvaluationError(f"distance blocks covered {expected} of {nq} query rows")

    qrow = np.repeat(np.arange(nq), np.diff(ptr))
    same_cam = q.cams[qrow] == g.cams[items]
    same_clothes = (q.clothes[qrow] == g.clothes[items]) if q.clothes is not None and g.clothes is not None else None
    results = {r: _summarise(r, ptr, ranks, match_flags(r, same_cam, same_clothes), nq, ng) for r in rules}
    return ChunkedEvaluation(results=results, topk=top)


def _first_nonfinite_row(a: np.ndarray) -> int:
    # small slices keep the boolean temporary in cache instead of page-faulting a block-sized one
    step = max(1, (1 << 20) // max(a.shape[1], 1))
    for r in range(0, a.shape[0], step):
        ok = np.isfinite(a[r:r + step])
        if not ok.all():
            return r + int(np.argwhere(~ok)[0, 0])
    return -1


def _summarise(rule: str, ptr: np.ndarray, ranks: np.ndarray, flags: np.ndarray, nq: int, ng: int) -> RankingResult:
    ap = np.empty(nq, np.float64)
    inp = np.empty(nq, np.float64)
    first = np.empty(nq, np.int64)
    last = np.empty(nq, np.int64)
    ngood = np.empty(nq, np.int64)
    _kernels.rule_metrics(ptr, ranks, flags, ap, inp, first, last, ngood)
    valid = ngood > 0
    nvalid = int(valid.sum())
    if nvalid:
        hist = np.bincount(first[valid], minlength=ng)
        cmc = np.cumsum(hist[:ng]) / nvalid
        mAP, mINP = float(np.mean(ap[valid])), float(np.mean(inp[valid]))
    else:
        log.warning("rule %s: no query has a good gallery item; metrics are undefined", rule)
        cmc = np.full(ng, np.nan)
        mAP = mINP = float("nan")
    return RankingResult(rule=rule, mAP=mAP, mINP=mINP, cmc=cmc, num_queries=nq, num_gallery=ng,
                         num_valid_queries=nvalid, num_skipped_queries=nq - nvalid, ap=ap, inp=inp,
                         first_match=first, num_good=ngood)


def _row_blocks(dist: np.ndarray, rows: int) -> Iterator[Tuple[int, np.ndarray]]:
    for r in range(0, dist.shape[0], rows):
        yield r, dist[r:r + rows]


def evaluate(distmat: Any, q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any,
             q_clothes: Any = None, g_clothes: Any = None, rule: str = "standard") -> RankingResult:
    """Rank every query's gallery by distance and score it under ``rule`` (module docstring).

    Parameters
    ----------
    distmat : array-like, shape (Q, G)
        Distances (smaller = more similar); numpy array or torch tensor, float32 or float64.
    q_pids, q_camids : array-like of int, shape (Q,)
    g_pids, g_camids : array-like of int, shape (G,)
    q_clothes, g_clothes : array-like of int, shapes (Q,), (G,), optional
        Required by ``rule="cc"`` and ``rule="sc"``.
    rule : {"standard", "cc", "sc"}

    Returns
    -------
    RankingResult
        ``mAP``, ``mINP``, ``cmc`` (length G), counts of valid and skipped queries, per-query
        ``ap``/``inp``/``first_match``.

    Raises
    ------
    EvaluationError
        Shape mismatch, non-finite distance, unknown rule, or missing clothes ids.

    Examples
    --------
    >>> r = evaluate(np.array([[0.1, 0.5]]), [1], [1, 2], [0], [1, 1])
    >>> r["mAP"], r.rank(1)
    (1.0, 1.0)
    """
    d = _as_rows(distmat)
    if d.ndim != 2:
        raise EvaluationError(f"distmat must be 2-D (queries × gallery), got shape {d.shape}")
    nq = np.asarray(q_pids).shape[0] if np.ndim(q_pids) else -1
    if d.shape[0] != nq:
        raise EvaluationError(f"distmat has {d.shape[0]} rows but there are {nq} query labels")
    rows = max(1, (1 << 24) // max(d.shape[1], 1))
    return evaluate_chunks(_row_blocks(d, rows), q_pids, g_pids, q_camids, g_camids, q_clothes, g_clothes,
                           rules=(rule,)).results[rule]


def evaluate_features(qf: Any, gf: Any, q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any,
                      q_clothes: Any = None, g_clothes: Any = None, *, rule: str = "standard",
                      metric: str = "euclidean", chunk_size: Optional[int] = None,
                      device: Any = "cpu") -> RankingResult:
    """``evaluate`` on features, computing the distance matrix block by block over the queries.

    Gives exactly the numbers of ``evaluate(pairwise_distance(qf, gf, metric), ...)`` for every
    ``chunk_size``, while holding only ``chunk_size`` distance rows at a time (the full float32
    matrix of DeepChange-test would take 4.07 GiB).

    Parameters
    ----------
    qf : array-like, shape (Q, d)
    gf : array-like, shape (G, d)
    metric : {"euclidean", "cosine"}
        See ``maskcl.evaluation.distance.pairwise_distance``.
    chunk_size : int, optional
        Query rows per block (rounded up to a multiple of 64); by default about 128 MiB of distances.
    device : str or torch.device
        Where the distance blocks are computed; metrics are computed on the CPU.
    Other parameters as in ``evaluate``.

    Returns
    -------
    RankingResult

    Raises
    ------
    EvaluationError
        As ``evaluate``; also for mismatched feature shapes or an unknown metric.
    """
    chunks = distance_chunks(qf, gf, metric=metric, chunk_size=chunk_size, device=device)
    return evaluate_chunks(chunks, q_pids, g_pids, q_camids, g_camids, q_clothes, g_clothes,
                           rules=(rule,)).results[rule]
