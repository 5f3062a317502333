"""The supervised upper bound: the ClusterContrast loop trained with the true identity labels.

Every epoch's "clusters" are the training identities (relabelled 0..N-1), so the loop, memory,
loss and recipe are ClusterContrast's and only the labels differ: what an unsupervised method
could reach, always labelled as an upper bound. Its facts: ``maskcl/methods/supervised.py``.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np
import torch

from ...methods.supervised import SUPERVISED
from .base import register_method
from .clustercontrast import ClusterContrastMethod

__all__ = ["SupervisedMethod"]


@register_method(SUPERVISED)
class SupervisedMethod(ClusterContrastMethod):
    """Upper bound: the ClusterContrast loop with ground-truth identities as the 'clusters'."""

    def _epoch_labels(self, feats: torch.Tensor) -> Tuple[np.ndarray, Dict[str, Any]]:
        _, labels = np.unique(self.data.pids, return_inverse=True)
        labels = labels.astype(np.int64)
        return labels, {"clusters": int(labels.max()) + 1, "outliers": 0, "singletons": 0}
