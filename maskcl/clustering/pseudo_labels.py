"""Pseudo-labels by DBSCAN on the sparse Jaccard distance (the ClusterContrast / MaskCL recipe).

``cluster`` is the one call a trainer makes per epoch: kNN search, the Jaccard graph, the pairs
DBSCAN needs, DBSCAN itself and the outlier policy. ``cluster_with_distances`` returns the
distances too, already holding every pair MaskCL's refinement reads (all pairs inside each
cluster), so refinement never recomputes anything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from ..errors import ConfigError
from .jaccard import JaccardGraph, build_jaccard_graph, distance_from_similarity, similarity_threshold
from .knn import KNNResult
from .reciprocal import timed

__all__ = ["ClusteringResult", "cluster", "cluster_with_distances", "dbscan",
           "apply_outlier_policy", "OUTLIER_POLICIES"]

logger = logging.getLogger(__name__)

OUTLIER_POLICIES = ("drop", "singleton")

# Above this many same-cluster pairs per sample, completion lists only overlapping pairs.
_DIRECT_PAIRS_PER_SAMPLE = 64


@dataclass(frozen=True)
class ClusteringResult:
    """One epoch's clustering.

    Attributes
    ----------
    labels : np.ndarray, shape (N,), int64
        Pseudo-labels after the outlier policy: clusters are 0..C-1 in DBSCAN's order; outliers
        are -1 (``drop``) or C, C+1, ... in sample order (``singleton``).
    dbscan_labels : np.ndarray, shape (N,), int64
        DBSCAN's labels, -1 for noise.
    distances : scipy.sparse.csr_matrix, shape (N, N)
        Jaccard distances: every pair with d_J <= ``max_distance`` plus every overlapping pair
        inside a cluster (loose, and tight when ``tight_eps`` was given); explicit zeros kept.
    tight_labels : np.ndarray or None
        DBSCAN's labels at ``tight_eps`` (-1 for noise), for MaskCL's refinement.
    eps, min_samples, tight_eps, max_distance :
        The settings used.
    knn_backend : str
        The kNN backend that ran.
    timings : dict
        Seconds per step: knn, reciprocal, expansion, weights, query_expansion, jaccard, dbscan,
        completion.
    """

    labels: np.ndarray
    dbscan_labels: np.ndarray
    distances: sp.csr_matrix
    tight_labels: Optional[np.ndarray]
    eps: float
    min_samples: int
    tight_eps: Optional[float]
    max_distance: float
    knn_backend: str
    timings: Dict[str, float] = field(default_factory=dict)

    @property
    def num_clusters(self) -> int:
        """Clusters found by DBSCAN (outliers excluded)."""
        return int(self.dbscan_labels.max(initial=-1)) + 1

    @property
    def num_outliers(self) -> int:
        """Samples DBSCAN left as noise."""
        return int((self.dbscan_labels < 0).sum())


def _check_eps(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ConfigError(f"{name} must lie in (0, 1) for the Jaccard distance; got {value}")


def dbscan(distances: sp.spmatrix, eps: float = 0.6, min_samples: int = 4) -> np.ndarray:
    """DBSCAN on a sparse, symmetric precomputed distance matrix; labels identical to sklearn's.

    Stored entries <= eps are neighbours (stored zeros included), missing entries are not; a
    sample is its own neighbour when its diagonal (stored, or 0 when missing) is <= eps, as in
    ``sklearn.cluster.DBSCAN(metric="precomputed")``. Instead of sklearn's per-sample Python
    loops: core samples are those with >= min_samples neighbours, clusters are the connected
    components of the core-core graph numbered by their smallest core index (the order sklearn
    discovers them in), and a border sample joins the lowest-numbered cluster among its core
    neighbours (the first to reach it in sklearn's cluster-by-cluster expansion).

    Parameters
    ----------
    distances : scipy.sparse matrix, shape (N, N)
        Symmetric distances; missing entries are "not neighbours".
    eps : float
        Neighbourhood radius, in (0, 1).
    min_samples : int
        Neighbours (self included) that make a core sample.

    Returns
    -------
    np.ndarray, shape (N,), int64
        Cluster ids 0..C-1 in sklearn's order, -1 for noise.
    """
    _check_eps("eps", eps)
    if min_samples < 1:
        raise ConfigError(f"min_samples must be >= 1; got {min_samples}")
    n = distances.shape[0]
    csr = sp.csr_matrix(distances)  # no copy for a CSR input
    if not csr.has_canonical_format:
        csr = csr.copy()
        csr.sum_duplicates()  # as sklearn's CSR conversion does
    row_of = np.repeat(np.arange(n, dtype=np.int64), np.diff(csr.indptr))
    near = (csr.data <= eps) & (row_of != csr.indices)
    rows, cols = row_of[near], csr.indices[near].astype(np.int64)  # sorted by row
    counts = np.bincount(rows, minlength=n) + (csr.diagonal() <= eps)
    core = counts >= min_samples
    labels = np.full(n, -1, dtype=np.int64)
    core_idx = np.flatnonzero(core)
    if core_idx.size == 0:
        return labels
    both = core[rows] & core[cols]
    graph = sp.csr_matrix((np.ones(int(both.sum()), dtype=np.int8), cols[both],
                           np.concatenate(([0], np.cumsum(np.bincount(rows[both], minlength=n))))),
                          shape=(n, n))
    _, component = connected_components(graph, directed=True, connection="weak")
    comp_of_core = component[core_idx]
    comps, first = np.unique(comp_of_core, return_index=True)
    rank = np.empty(int(component.max()) + 1, dtype=np.int64)
    rank[comps[np.argsort(first)]] = np.arange(comps.size)
    labels[core_idx] = rank[comp_of_core]
    # Border samples: reached from a core row; take the lowest cluster id among those.
    edge = core[rows] & ~core[cols]
    border, via = cols[edge], labels[rows[edge]]
    best = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(best, border, via)
    reached = best < np.iinfo(np.int64).max
    labels[reached] = best[reached]
    return labels


def apply_outlier_policy(labels: np.ndarray, outliers: str = "drop") -> np.ndarray:
    """``drop``: keep -1 (ClusterContrast trains without them). ``singleton``: give each outlier
    a fresh label C, C+1, ... in sample order (MaskCL/SpCL train them as instances)."""
    if outliers not in OUTLIER_POLICIES:
        raise ConfigError(f"unknown outlier policy {outliers!r}; use one of "
                          f"{', '.join(OUTLIER_POLICIES)}")
    labels = np.asarray(labels, dtype=np.int64).copy()
    if outliers == "singleton":
        noise = labels < 0
        labels[noise] = labels.max(initial=-1) + 1 + np.arange(int(noise.sum()))
    return labels


def _pair_keys(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    return a.astype(np.int64) * n + b


def _same_group_pairs(groups: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Every pair a < b with groups[a] == groups[b] >= 0, sorted by a within each group."""
    members = np.flatnonzero(groups >= 0)
    members = members[np.argsort(groups[members], kind="stable")]  # grouped, index order kept
    g = groups[members]
    starts = np.flatnonzero(np.concatenate(([True], g[1:] != g[:-1])))
    ends = np.append(starts[1:], members.size)
    group_end = np.repeat(ends, ends - starts)
    later = group_end - np.arange(members.size) - 1  # members after this one in its group
    first = np.repeat(np.arange(members.size), later)
    offset = np.arange(first.size) - np.repeat(np.cumsum(later) - later, later)
    return members[first], members[first + 1 + offset]


def _complete_groups(graph: JaccardGraph, known: np.ndarray, *groupings: np.ndarray
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """Pairs a < b inside a group, with overlapping supports, whose keys are not in ``known``.

    Small groups: every pair inside them is listed and scored (S = 0 pairs dropped later). Large
    groups (an early-epoch giant cluster): only the overlapping pairs are listed, as the pattern
    of a product over (column, group) virtual columns, so the cost stays bounded by the overlap.
    """
    n = graph.n
    parts = []
    for groups in groupings:
        sizes = np.bincount(groups[groups >= 0])
        if int((sizes * (sizes - 1) // 2).sum()) <= _DIRECT_PAIRS_PER_SAMPLE * n:
            a, b = _same_group_pairs(groups)
        else:
            a, b = graph.group_pairs(groups)
        parts.append(_pair_keys(a, b, n))
    keys = np.sort(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)
    keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))] if keys.size else keys
    if known.size and keys.size:
        pos = np.minimum(np.searchsorted(known, keys), known.size - 1)
        keys = keys[known[pos] != keys]
    return keys // n, keys % n


def cluster_with_distances(features: Any, eps: float = 0.6, min_samples: int = 4, k1: int = 30,
                           k2: int = 6, outliers: str = "drop", *,
                           tight_eps: Optional[float] = None, max_distance: Optional[float] = None,
                           k1_slicing: str = "clustercontrast", backend: str = "auto",
                           device: Optional[str] = None,
                           knn: Optional[KNNResult] = None) -> ClusteringResult:
    """Jaccard distance + DBSCAN, returning labels and the distances for reuse.

    Only the pairs DBSCAN can use (d_J <= eps) are searched for, exactly (see
    :mod:`maskcl.clustering.jaccard`); afterwards every overlapping pair inside a cluster is added,
    so that :func:`maskcl.clustering.refine_clusters` on ``result.distances`` is exact.

    Parameters
    ----------
    features : array-like or torch.Tensor, shape (N, d)
        L2-normalised features, one row per training image.
    eps : float
        DBSCAN radius on the Jaccard distance (ClusterContrast / MaskCL: 0.6).
    min_samples : int
        DBSCAN core size, self included (4).
    k1, k2 : int
        Jaccard parameters (30, 6).
    outliers : {"drop", "singleton"}
        See :func:`apply_outlier_policy`.
    tight_eps : float, optional
        Also run DBSCAN at this radius (MaskCL: eps - 0.02) and keep its labels and pairs.
    max_distance : float, optional
        Store every pair up to this distance (default ``eps``; 1 stores all overlapping pairs,
        which costs far more time and memory at large N).
    k1_slicing, backend, device :
        See :func:`maskcl.clustering.jaccard_distance`.
    knn : KNNResult, optional
        Neighbours already searched (e.g. shared with another step); ``backend`` and ``device``
        are then unused.

    Returns
    -------
    ClusteringResult

    Raises
    ------
    ConfigError
        Out-of-range eps, tight_eps, max_distance, min_samples or an unknown policy or backend.
    """
    _check_eps("eps", eps)
    if tight_eps is not None:
        _check_eps("tight_eps", tight_eps)
        if tight_eps > eps:
            raise ConfigError(f"tight_eps ({tight_eps}) must not exceed eps ({eps})")
    keep = eps if max_distance is None else float(max_distance)
    if keep < eps:
        raise ConfigError(f"max_distance ({keep}) must be >= eps ({eps}): DBSCAN needs those pairs")
    if outliers not in OUTLIER_POLICIES:
        raise ConfigError(f"unknown outlier policy {outliers!r}; use one of "
                          f"{', '.join(OUTLIER_POLICIES)}")
    timings: Dict[str, float] = {}
    graph = build_jaccard_graph(features, k1, k2, k1_slicing=k1_slicing, knn=knn,
                                backend=backend, device=device, timings=timings)
    n = graph.n
    with timed(timings, "jaccard"):
        if keep >= 1.0:
            full = graph.distances(1.0)
        else:
            a, b = graph.candidate_pairs(similarity_threshold(keep))
            d = distance_from_similarity(graph.pair_similarity(a, b))
            ok = d <= keep
            a, b, d = a[ok], b[ok], d[ok]
            full = graph.assemble(a, b, d)
    with timed(timings, "dbscan"):
        labels = dbscan(full, eps, min_samples)
        tight = dbscan(full, tight_eps, min_samples) if tight_eps is not None else None
    with timed(timings, "completion"):
        if keep < 1.0:
            groupings = [labels] + ([tight] if tight is not None else [])
            ea, eb = _complete_groups(graph, _pair_keys(a, b, n), *groupings)
            es = graph.pair_similarity(ea, eb)
            overlap = es > 0.0
            if overlap.any():
                full = graph.assemble(np.concatenate((a, ea[overlap])),
                                      np.concatenate((b, eb[overlap])),
                                      np.concatenate((d, distance_from_similarity(es[overlap]))))
    result = ClusteringResult(labels=apply_outlier_policy(labels, outliers), dbscan_labels=labels,
                              distances=full, tight_labels=tight, eps=eps,
                              min_samples=min_samples, tight_eps=tight_eps, max_distance=keep,
                              knn_backend=graph.knn_backend, timings=timings)
    logger.info("DBSCAN eps=%.3f min_samples=%d: %d clusters, %d outliers (%s); %d stored pairs; "
                "%.2fs (%s)", eps, min_samples, result.num_clusters, result.num_outliers, outliers,
                full.nnz, sum(timings.values()),
                ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()))
    return result


def cluster(features: Any, eps: float = 0.6, min_samples: int = 4, k1: int = 30, k2: int = 6,
            outliers: str = "drop", **kwargs: Any) -> np.ndarray:
    """Pseudo-labels by DBSCAN on the k-reciprocal Jaccard distance.

    Parameters
    ----------
    features : array-like or torch.Tensor, shape (N, d)
        L2-normalised features, one row per training image (memory index order).
    eps, min_samples, k1, k2, outliers :
        See :func:`cluster_with_distances`.
    **kwargs :
        ``tight_eps``, ``max_distance``, ``k1_slicing``, ``backend``, ``device``, ``knn``.

    Returns
    -------
    np.ndarray, shape (N,), int64
        Labels 0..C-1, outliers -1 (``drop``) or fresh singleton labels (``singleton``).

    Examples
    --------
    >>> labels = cluster(features, eps=0.6, outliers="singleton")  # doctest: +SKIP
    """
    return cluster_with_distances(features, eps, min_samples, k1, k2, outliers, **kwargs).labels
