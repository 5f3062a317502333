"""ClusterContrast: unsupervised re-identification with a cluster-level contrastive memory (RGB only).

Dai et al., "Cluster Contrast for Unsupervised Person Re-Identification", arXiv 2103.11568; official
code alibaba/cluster-contrast-reid. Its facts (display name, recipe): ``maskcl/methods/clustercontrast.py``.

The method, per epoch:

1. ``prepare_epoch``: re-extract every training image's feature in eval mode, cluster them with
   Jaccard distances + DBSCAN (``eps``, ``min_samples``, ``k1``, ``k2``; no refinement), drop the
   outliers for the epoch, and initialise the cluster memory from the clusters' centroids;
2. ``step``: cross-entropy of each image's feature against the centroids (logits divided by
   ``temp``), its pseudo-label the target;
3. ``after_step``: each centroid of the batch moves towards its images' features with momentum
   ``momentum``.

The supervised upper bound (``maskcl.training.methods.supervised``) is this loop with the true
identities in place of the clusters.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ...methods.clustercontrast import CLUSTERCONTRAST
from ...models.backbone import ReIDBackbone
from ...models.bn_groups import convert_bn_groups
from ...models.images import ImageSet
from ...models.memory import ClusterMemory
from .. import losses
from ..clustering_step import cluster_epoch, label_stats
from ..data import TrainData
from ..settings import TrainSettings
from ..batches import View
from ..transforms import train_transform
from .base import MethodBase, backbone_of, register_method

__all__ = ["ClusterContrastMethod"]


@register_method(CLUSTERCONTRAST)
class ClusterContrastMethod(MethodBase):
    """One backbone and a cluster-centroid memory, relabelled every epoch (see the module docstring)."""

    def __init__(self, settings: TrainSettings, data: TrainData, device: torch.device, **kw: Any) -> None:
        super().__init__(settings, data, device, **kw)
        net = backbone_of(settings)
        convert_bn_groups(net, settings.bn_groups)
        self.module = nn.ModuleDict({"net": net, "memory": ClusterMemory(net.dim, settings.temp,
                                                                           settings.momentum)})
        self._to_device(self.module)
        self._labels_dev = torch.zeros(0, dtype=torch.long)

    def rgb_backbone(self) -> ReIDBackbone:
        return self.module["net"]  # type: ignore[return-value]

    def dataset(self) -> Dataset:
        s = self.s
        return ImageSet(self.data.paths, train_transform(self.size, pad=s.pad, erasing=s.erasing))

    def views(self) -> Tuple[View, ...]:
        return (View("image", pad=self.s.pad, erasing=self.s.erasing),)

    def _epoch_labels(self, feats: torch.Tensor) -> Tuple[np.ndarray, Dict[str, Any]]:
        s = self.s
        clusters = self.comm.on_main(cluster_epoch, feats, eps=s.eps, eps_gap=s.eps_gap, min_samples=s.min_samples,
                                     k1=s.k1, k2=s.k2, refine=False, ratio=s.ratio_cluster, outliers="drop",
                                     knn_backend=s.knn_backend)
        return clusters.labels, clusters.stats()

    def prepare_epoch(self, epoch: int) -> Dict[str, Any]:
        feats = self._extract_rgb(self.module["net"])
        labels, stats = self._epoch_labels(feats)
        keep = labels >= 0
        if not keep.any():
            raise RuntimeError("clustering produced no clusters (every sample is an outlier); "
                               "check train.eps / train.min_samples")
        lab_t = torch.as_tensor(labels[keep])
        c = int(lab_t.max()) + 1
        sums = torch.zeros(c, feats.shape[1]).index_add_(0, lab_t, feats[torch.as_tensor(keep)])
        self.module["memory"].init_centroids(sums / torch.bincount(lab_t, minlength=c).unsqueeze(1))
        self.labels = labels
        self._labels_dev = torch.as_tensor(labels, dtype=torch.long, device=self.device)
        stats.update(label_stats(labels, self.data.pids, self.data.clothes))
        return stats

    def step(self, batch: Tuple[torch.Tensor, ...]) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        x, idx = batch
        idx = idx.to(self.device)
        f, _ = self.comm.forward(self.module["net"], self._input(x))
        f = f.float()
        y = self._labels_dev[idx]
        loss = losses.cluster_contrast_loss(self.module["memory"].logits(f), y)
        self._last = (y, f)
        return loss, {"contrast": loss}

    @torch.no_grad()
    def after_step(self) -> None:
        y, f = self.comm.gather(*self._last)  # the whole (global) batch in batch order
        self.module["memory"].update(y, f)
        self._last = None

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        super().load_extra_state(state)
        self._labels_dev = torch.as_tensor(self.labels, dtype=torch.long, device=self.device)

    def load_module_state(self, state: Dict[str, torch.Tensor]) -> None:
        # the cluster memory changes size every epoch: resize the buffer before loading
        self.module["memory"].features = torch.empty_like(state["memory.features"], device=self.device)
        self.module.load_state_dict(state)
