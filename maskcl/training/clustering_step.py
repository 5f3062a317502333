"""One epoch's pseudo-labels for a training method, on top of ``maskcl.clustering``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import numpy as np
import torch

from ..clustering import cluster_with_distances, refine_clusters

__all__ = ["EpochClusters", "cluster_epoch", "label_stats"]


@dataclass
class EpochClusters:
    """Labels for the sampler and memories, plus what the clustering found (for the log)."""

    labels: np.ndarray        # contiguous 0..C-1; -1 marks dropped outliers (outliers="drop")
    clusters: int             # DBSCAN clusters (≥ min_samples core)
    outliers: int             # DBSCAN noise points
    ejected: int              # samples made singletons by refinement
    seconds: Dict[str, float]

    def stats(self) -> Dict[str, Any]:
        c = np.bincount(self.labels[self.labels >= 0]) if (self.labels >= 0).any() else np.zeros(0)
        return {"clusters": self.clusters, "outliers": self.outliers, "ejected": self.ejected,
                "classes": int(len(c)), "singletons": int((c == 1).sum())}


def cluster_epoch(features: torch.Tensor, *, eps: float, eps_gap: float, min_samples: int, k1: int, k2: int,
                  refine: bool, ratio: float, outliers: str, knn_backend: str = "auto") -> EpochClusters:
    """Jaccard + DBSCAN on ``features`` (N×D, normalised), then MaskCL's refinement when asked.

    With ``outliers="singleton"`` every sample gets a label (MaskCL); with ``"drop"`` noise is −1
    (ClusterContrast). Labels are always one contiguous range.
    """
    feats = torch.nn.functional.normalize(features.float(), dim=1).numpy()
    res = cluster_with_distances(feats, eps=eps, min_samples=min_samples, k1=k1, k2=k2, outliers=outliers,
                                 tight_eps=(eps - eps_gap) if refine else None, backend=knn_backend)
    labels = res.labels
    ejected = 0
    if refine:
        ref = refine_clusters(res.distances, res.labels, tight_labels=res.tight_labels, ratio=ratio)
        labels = ref.labels
        ejected = int(ref.ejected.sum())
    return EpochClusters(labels=np.asarray(labels, dtype=np.int64), clusters=res.num_clusters,
                         outliers=res.num_outliers, ejected=ejected, seconds=dict(res.timings))


def label_stats(labels: np.ndarray, pids: np.ndarray, clothes: np.ndarray) -> Dict[str, float]:
    """NMI / ARI / purity of the pseudo-labels against identities and against clothes (logging only)."""
    from ..clustering import label_agreement

    out: Dict[str, float] = {}
    for name, truth in (("id", pids), ("clothes", clothes)):
        q = label_agreement(labels, truth)  # dropped outliers (−1) count as singletons
        out[f"nmi_{name}"] = q.nmi
        out[f"ari_{name}"] = q.ari
        out[f"purity_{name}"] = q.purity
    return out


def neighbour_precision(labels: np.ndarray, nbr_idx: torch.Tensor, truth: np.ndarray) -> float:
    """Share of (class, neighbour class) pairs whose majority ground-truth label agrees (logging only).

    Measures whether MaskCL's cluster-neighbour structure links clusters of the same person; only
    classes with at least two members count.
    """
    labels = np.asarray(labels)
    keep = labels >= 0
    c = int(labels[keep].max()) + 1 if keep.any() else 0
    if c == 0 or nbr_idx.numel() == 0:
        return float("nan")
    _, t = np.unique(np.asarray(truth)[keep], return_inverse=True)
    table = np.zeros((c, int(t.max()) + 1), dtype=np.int64)
    np.add.at(table, (labels[keep], t), 1)
    majority = table.argmax(1)
    sizes = table.sum(1)
    nb = nbr_idx.cpu().numpy()
    rows = np.nonzero(sizes >= 2)[0]
    if len(rows) == 0:
        return float("nan")
    return float((majority[nb[rows]] == majority[rows, None]).mean())
