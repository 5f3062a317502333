"""Pseudo-label quality against ground truth, for training logs only (never used for training).

Outliers (-1) are scored as singleton clusters, so a labelling and the same labelling with its
outliers made singletons get identical scores: the metrics describe the partition, not the outlier
policy. Against clothes labels, *high* agreement means clusters follow outfits (the failure mode
of clothes-changing re-id), so both views are logged side by side.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Optional

import numpy as np

from ..errors import ConfigError

__all__ = ["LabelAgreement", "PseudoLabelQuality", "pseudo_label_quality", "label_agreement"]


@dataclass(frozen=True)
class LabelAgreement:
    """Agreement of a partition with reference labels; each value in [0, 1] (ARI may be < 0)."""

    nmi: float
    ari: float
    purity: float


@dataclass(frozen=True)
class PseudoLabelQuality:
    """Counts and agreement scores of one epoch's pseudo-labels.

    Attributes
    ----------
    num_samples : int
    num_clusters : int
        Labels (not -1) with at least two members.
    num_singletons : int
        Labels (not -1) with exactly one member.
    num_outliers : int
        Samples labelled -1.
    identity : LabelAgreement
    clothes : LabelAgreement or None
        When clothes labels were given.
    """

    num_samples: int
    num_clusters: int
    num_singletons: int
    num_outliers: int
    identity: LabelAgreement
    clothes: Optional[LabelAgreement] = None

    def as_dict(self) -> Dict[str, float]:
        """Flat ``{name: value}`` for a training-log row (``identity_nmi``, ``clothes_ari``...)."""
        out: Dict[str, float] = {"num_samples": self.num_samples,
                                 "num_clusters": self.num_clusters,
                                 "num_singletons": self.num_singletons,
                                 "num_outliers": self.num_outliers}
        for name in ("identity", "clothes"):
            agreement = getattr(self, name)
            if agreement is not None:
                out.update({f"{name}_{k}": v for k, v in asdict(agreement).items()})
        return out


def _as_partition(labels: np.ndarray) -> np.ndarray:
    """-1 -> fresh labels after the largest one, so each outlier is its own cluster."""
    out = labels.copy()
    noise = out < 0
    out[noise] = out.max(initial=-1) + 1 + np.arange(int(noise.sum()))
    return out


def label_agreement(predicted: np.ndarray, reference: np.ndarray) -> LabelAgreement:
    """NMI (arithmetic normalisation), ARI and purity of ``predicted`` against ``reference``.

    Purity is Σ_clusters max_class |cluster ∩ class| / N. ``predicted`` may hold -1 (outliers,
    scored as singletons); ``reference`` labels are any integers.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    from sklearn.metrics.cluster import contingency_matrix

    predicted = _as_partition(np.asarray(predicted, dtype=np.int64))
    reference = np.asarray(reference)
    table = contingency_matrix(predicted, reference, sparse=True).tocsr()
    purity = float(table.max(axis=1).toarray().sum()) / predicted.size
    return LabelAgreement(nmi=float(normalized_mutual_info_score(reference, predicted)),
                          ari=float(adjusted_rand_score(reference, predicted)),
                          purity=purity)


def pseudo_label_quality(labels: np.ndarray, identities: np.ndarray,
                         clothes: Optional[np.ndarray] = None) -> PseudoLabelQuality:
    """Cluster counts plus NMI / ARI / purity against identity (and clothes) labels.

    Parameters
    ----------
    labels : np.ndarray, shape (N,)
        Pseudo-labels; -1 marks an outlier.
    identities : np.ndarray, shape (N,)
        Ground-truth person ids of the same samples.
    clothes : np.ndarray, shape (N,), optional
        Ground-truth clothes ids (e.g. the manifest's ``clothes_id``).

    Returns
    -------
    PseudoLabelQuality

    Raises
    ------
    ConfigError
        If the arrays are empty or their lengths differ.

    Examples
    --------
    >>> q = pseudo_label_quality(np.array([0, 0, 1, -1]), np.array([7, 7, 8, 8]))
    >>> q.num_clusters, q.num_singletons, q.num_outliers, q.identity.purity
    (1, 1, 1, 1.0)
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = labels.size
    for name, arr in (("identities", identities), ("clothes", clothes)):
        if arr is not None and np.asarray(arr).shape != (n,):
            raise ConfigError(f"pseudo-label quality: {name} has shape {np.asarray(arr).shape}; "
                              f"expected ({n},) like the labels")
    if n == 0:
        raise ConfigError("pseudo-label quality needs at least one sample")
    counts = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(0, np.int64)
    return PseudoLabelQuality(
        num_samples=n,
        num_clusters=int((counts >= 2).sum()),
        num_singletons=int((counts == 1).sum()),
        num_outliers=int((labels < 0).sum()),
        identity=label_agreement(labels, identities),
        clothes=None if clothes is None else label_agreement(labels, clothes),
    )
