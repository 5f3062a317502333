"""MaskCL's cluster refinement (``cluster_finement_new`` in the official ``CMC.py``), made sparse.

A second, tighter DBSCAN (eps - eps_gap) splits some loose clusters into tight sub-clusters. For
every loose cluster c, A_c is its mean pairwise Jaccard distance (n_c² pairs, diagonal included).
For every sample i, s_i = Σ_{j ∈ P_i} D_ij / max(|P_i|, 1)², where P_i are the samples in i's
loose cluster but another tight cluster, and a tight cluster t scores S_t = Σ_{i ∈ t} s_i. A sample
stays in its loose cluster when ratio · S_{T_i} <= A_{L_i}; otherwise it becomes a singleton.

The dense reference has D_ij = 1 for every pair without shared support, so here a pair missing
from the sparse matrix counts as 1.0, and the sums are n - Σ_stored (1 - D_ij). Outliers (-1) are
singletons in both labelings, as in the official code.

Deviations from the official code, on purpose:

* Labels are relabelled to one contiguous range 0..C-1 (sorted by old label: loose clusters,
  then loose outliers, then ejected samples in sample order). The official code appends ejected
  samples after ``max label + 1`` and leaves a gap wherever a loose cluster is emptied, which
  puts later class indices out of step with its neighbour lists (report §8 item 10).
* ``pair_rule="intended"`` (default) takes P_i literally: same loose, different tight cluster.
  The official code builds P_i as ``same_loose == 1 - same_tight`` on 0/1 matrices, which also
  counts pairs in *different* loose but the *same* tight cluster (possible only through border
  points DBSCAN assigns differently); ``pair_rule="official"`` reproduces that.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np
import scipy.sparse as sp

from ..errors import ConfigError
from .pseudo_labels import dbscan

__all__ = ["RefinementResult", "refine_clusters", "PAIR_RULES"]

logger = logging.getLogger(__name__)

PAIR_RULES = ("intended", "official")


@dataclass(frozen=True)
class RefinementResult:
    """Refined pseudo-labels and what the test decided.

    Attributes
    ----------
    labels : np.ndarray, shape (N,), int64
        Contiguous 0..C-1; every sample has a label (outliers and ejected samples as singletons).
    ejected : np.ndarray, shape (N,), bool
        Samples moved out of their loose cluster by the test.
    cluster_score : np.ndarray, shape (N,), float64
        A_{L_i}, the mean intra-distance of i's loose cluster.
    tight_score : np.ndarray, shape (N,), float64
        S_{T_i}, the score of i's tight cluster.
    tight_labels : np.ndarray, shape (N,), int64
        The tight labels used (-1 for noise).
    """

    labels: np.ndarray
    ejected: np.ndarray
    cluster_score: np.ndarray
    tight_score: np.ndarray
    tight_labels: np.ndarray

    @property
    def num_clusters(self) -> int:
        """Refined labels with at least two members."""
        return int((np.bincount(self.labels) >= 2).sum())

    @property
    def num_singletons(self) -> int:
        return int((np.bincount(self.labels) == 1).sum())


def _unique_outliers(labels: np.ndarray) -> np.ndarray:
    """-1 -> C, C+1, ... in sample order (the official ``generate_pseudo_labels``)."""
    out = labels.copy()
    noise = out < 0
    out[noise] = out.max(initial=-1) + 1 + np.arange(int(noise.sum()))
    return out


def refine_clusters(distances: sp.spmatrix, loose_labels: np.ndarray, *,
                    tight_labels: Optional[np.ndarray] = None, eps: float = 0.6,
                    eps_gap: float = 0.02, min_samples: int = 4, ratio: float = 1.0,
                    pair_rule: str = "intended") -> RefinementResult:
    """MaskCL's refinement: dissolve tight sub-clusters that sit far from their loose cluster.

    Parameters
    ----------
    distances : scipy.sparse matrix, shape (N, N)
        Symmetric Jaccard distances; a missing pair counts as 1.0 and the diagonal as 0. Exact when
        every overlapping pair inside a loose cluster is stored (and, for ``pair_rule="official"``,
        inside a tight cluster): ``jaccard_distance(...)`` or ``cluster_with_distances(...,
        tight_eps=...).distances``.
    loose_labels : np.ndarray, shape (N,)
        DBSCAN labels at ``eps``; -1 or singleton labels for outliers.
    tight_labels : np.ndarray, shape (N,), optional
        DBSCAN labels at ``eps - eps_gap``; computed from ``distances`` when omitted.
    eps, eps_gap, min_samples :
        The tight DBSCAN (official: 0.6, 0.02, 4), used only when ``tight_labels`` is omitted.
    ratio : float
        ``ratio_cluster``: a sample stays when ratio · S_t <= A_c (official default 1.0).
    pair_rule : {"intended", "official"}
        Which pairs form P_i (see the module docstring).

    Returns
    -------
    RefinementResult

    Raises
    ------
    ConfigError
        Mismatched shapes, bad ratio or pair rule.
    """
    if pair_rule not in PAIR_RULES:
        raise ConfigError(f"unknown pair_rule {pair_rule!r}; use one of {', '.join(PAIR_RULES)}")
    if not ratio > 0:
        raise ConfigError(f"refinement ratio must be > 0; got {ratio}")
    n = distances.shape[0]
    loose_raw = np.asarray(loose_labels, dtype=np.int64)
    if distances.shape != (n, n) or loose_raw.shape != (n,):
        raise ConfigError(f"refinement needs an (N, N) distance matrix and N loose labels; got "
                          f"{distances.shape} and {loose_raw.shape}")
    if tight_labels is None:
        tight_raw = dbscan(distances, eps - eps_gap, min_samples)
    else:
        tight_raw = np.asarray(tight_labels, dtype=np.int64)
        if tight_raw.shape != (n,):
            raise ConfigError(f"tight_labels has shape {tight_raw.shape}; expected ({n},)")
    loose = _unique_outliers(loose_raw)
    tight = _unique_outliers(tight_raw)

    n_loose = np.bincount(loose).astype(np.float64)
    n_tight = np.bincount(tight).astype(np.float64)
    _, joint_inv, joint_count = np.unique(loose * (tight.max() + 1) + tight, return_inverse=True,
                                          return_counts=True)
    n_joint = joint_count[joint_inv].astype(np.float64)  # |same loose and same tight| per sample

    coo = sp.coo_matrix(distances)
    off = coo.row != coo.col  # the diagonal is 0 whatever is stored
    r, c = coo.row[off].astype(np.int64), coo.col[off].astype(np.int64)
    closeness = 1.0 - coo.data[off]  # how far below the implicit 1.0 each stored pair is
    same_loose = loose[r] == loose[c]
    same_tight = tight[r] == tight[c]

    # A_c = (n_c² - n_c - Σ_{i != j in c, stored} (1 - D_ij)) / n_c²
    close_sum = np.bincount(loose[r[same_loose]], weights=closeness[same_loose],
                            minlength=n_loose.size)
    cluster_avg = (n_loose**2 - n_loose - close_sum) / n_loose**2

    if pair_rule == "intended":
        in_p = same_loose & ~same_tight
        m = n_loose[loose] - n_joint
    else:
        in_p = same_loose != same_tight
        m = (n_loose[loose] - n_joint) + (n_tight[tight] - n_joint)
    p_close = np.bincount(r[in_p], weights=closeness[in_p], minlength=n)
    s = (m - p_close) / np.maximum(m, 1.0) ** 2
    tight_sum = np.bincount(tight, weights=s, minlength=n_tight.size)

    cluster_score = cluster_avg[loose]
    tight_score = tight_sum[tight]
    ejected = ratio * tight_score > cluster_score
    refined = loose.copy()
    refined[ejected] = loose.max() + 1 + np.arange(int(ejected.sum()))
    _, contiguous = np.unique(refined, return_inverse=True)
    result = RefinementResult(labels=contiguous.astype(np.int64), ejected=ejected,
                              cluster_score=cluster_score, tight_score=tight_score,
                              tight_labels=tight_raw)
    logger.info("cluster refinement (%s pairs, ratio %.2f): %d samples ejected; %d clusters, "
                "%d singletons", pair_rule, ratio, int(ejected.sum()), result.num_clusters,
                result.num_singletons)
    return result
