"""Compiled inner loops of the ranking metrics (numba).

Only the ranks of a query's same-identity gallery items matter for CMC, AP and INP, so no row is
ever sorted. The rank of item ``i`` in the stable ordering (ascending distance, ties broken by
gallery index) is

    rank(i) = #{h < i : d[h] <= d[i]} + #{h > i : d[h] < d[i]},

two branch-free counting loops that LLVM vectorises. That costs P·G comparisons per query (P
same-identity items, G gallery items); for large P a binary search of every gallery item among the
P sorted items (G·log P) is cheaper, and both give identical integers.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["same_id_ranks", "rule_metrics", "stable_topk"]

#: Above this many same-identity items per query the binary-search path is used.
LINEAR_MAX_ITEMS = 32


@njit(cache=True, nogil=True)
def _ranks_linear(row, items, out):  # pragma: no cover - compiled
    n = row.shape[0]
    for k in range(items.shape[0]):
        i = items[k]
        v = row[i]
        c = np.int32(0)  # 32-bit lanes: twice as many comparisons per vector instruction
        for h in range(i):
            c += np.int32(row[h] <= v)
        for h in range(i + 1, n):
            c += np.int32(row[h] < v)
        out[k] = c


@njit(cache=True, nogil=True)
def _ranks_bsearch(row, items, out):  # pragma: no cover - compiled
    p = items.shape[0]
    n = row.shape[0]
    vals = np.empty(p, row.dtype)
    for k in range(p):
        vals[k] = row[items[k]]
    order = np.argsort(vals, kind="mergesort")  # items ascend, so this is (distance, index) order
    sv = np.empty(p, row.dtype)
    si = np.empty(p, np.int64)
    for k in range(p):
        sv[k] = vals[order[k]]
        si[k] = items[order[k]]
    counts = np.zeros(p + 1, np.int64)
    vmax = sv[p - 1]
    imax = si[p - 1]
    for h in range(n):
        x = row[h]
        if x > vmax or (x == vmax and h > imax):
            counts[p] += 1
            continue
        # number of sorted items whose key (value, index) is below (x, h); known to be < p
        base = 0
        width = p
        while width > 1:
            half = width >> 1
            m = base + half - 1
            vm = sv[m]
            # branch-free step: the outcome is unpredictable, a mispredicted branch costs more
            base += half * ((vm < x) | ((vm == x) & (si[m] < h)))
            width -= half
        if sv[base] < x or (sv[base] == x and si[base] < h):
            base += 1
        counts[base] += 1
    acc = 0
    for k in range(p):
        acc += counts[k]
        out[order[k]] = acc - 1


@njit(cache=True, nogil=True, parallel=True)
def same_id_ranks(dist, row_offset, ptr, items, linear_max):  # pragma: no cover - compiled
    """Stable rank of every same-identity item (CSR ``ptr``/``items``) in its distance row.

    ``dist`` holds the rows ``row_offset .. row_offset + dist.shape[0]`` of the CSR structure.
    """
    nrows = dist.shape[0]
    out = np.empty(ptr[row_offset + nrows] - ptr[row_offset], np.int64)
    base = ptr[row_offset]
    for b in prange(nrows):
        lo = ptr[row_offset + b]
        hi = ptr[row_offset + b + 1]
        if hi == lo:
            continue
        seg = out[lo - base:hi - base]
        if hi - lo <= linear_max:
            _ranks_linear(dist[b], items[lo:hi], seg)
        else:
            _ranks_bsearch(dist[b], items[lo:hi], seg)
    return out


@njit(cache=True, nogil=True, parallel=True)
def rule_metrics(ptr, ranks, flags, ap, inp, first, last, ngood):  # pragma: no cover - compiled
    """Per-query AP, INP and first/last good position after junk removal.

    ``flags`` per same-identity item: 1 good, 2 junk. Positions are 0-based in the ranked list
    with junk removed; AP = mean over good items of (#good up to it) / (position + 1), summed in
    rank order so that the float result is reproducible.
    """
    nq = ptr.shape[0] - 1
    for q in prange(nq):
        lo = ptr[q]
        hi = ptr[q + 1]
        ap[q] = np.nan
        inp[q] = np.nan
        first[q] = -1
        last[q] = -1
        ngood[q] = 0
        if hi == lo:
            continue
        order = np.argsort(ranks[lo:hi])
        junk_before = 0
        n = 0
        acc = 0.0
        for t in range(hi - lo):
            k = lo + order[t]
            if flags[k] == 2:
                junk_before += 1
            elif flags[k] == 1:
                pos = ranks[k] - junk_before
                n += 1
                acc += n / (pos + 1.0)
                if n == 1:
                    first[q] = pos
                last[q] = pos
        ngood[q] = n
        if n > 0:
            ap[q] = acc / n
            inp[q] = n / (last[q] + 1.0)


@njit(cache=True, nogil=True, parallel=True)
def stable_topk(dist, k, out):  # pragma: no cover - compiled
    """Indices of the ``k`` first items of each row in (distance, index) order."""
    nrows, n = dist.shape
    for b in prange(nrows):
        row = dist[b]
        bv = np.empty(k, row.dtype)
        bi = np.empty(k, np.int64)
        size = 0
        for h in range(n):
            x = row[h]
            if size == k and x >= bv[k - 1]:
                continue
            # insert after every kept value <= x (earlier indices win ties)
            pos = size if size < k else k - 1
            while pos > 0 and bv[pos - 1] > x:
                bv[pos] = bv[pos - 1]
                bi[pos] = bi[pos - 1]
                pos -= 1
            bv[pos] = x
            bi[pos] = h
            if size < k:
                size += 1
        for t in range(k):
            out[b, t] = bi[t] if t < size else -1

