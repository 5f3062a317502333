"""Contrastive memories.

``InstanceMemory`` is MaskCL's (SpCL-style) hybrid memory: one L2-normalised entry per training image,
class prototypes = the mean of the class's entries. ``ClusterMemory`` is ClusterContrast's: one
normalised centroid per cluster. Both live in buffers (saved with ``state_dict``, moved by ``.to``)
and are updated by momentum without gradients: entry ← m·entry + (1−m)·feature, then renormalised.
Updates are applied sample by sample in batch order, as the official code does, so a class or
index that appears several times in a batch is updated several times.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["InstanceMemory", "ClusterMemory"]


def _momentum_rows(bank: torch.Tensor, rows: torch.Tensor, feats: torch.Tensor, momentum: float) -> None:
    """bank[rows[i]] ← normalise(m·bank[rows[i]] + (1−m)·feats[i]) for i in order."""
    feats = feats.detach().to(bank.dtype)
    if rows.unique().numel() == rows.numel():  # no repeats: one vectorised update is identical
        bank[rows] = F.normalize(momentum * bank[rows] + (1.0 - momentum) * feats, dim=1)
        return
    for r, f in zip(rows.tolist(), feats):
        bank[r] = F.normalize(momentum * bank[r] + (1.0 - momentum) * f, dim=0)


class InstanceMemory(nn.Module):
    """N×D instance memory with class-mean prototypes.

    Parameters
    ----------
    num_samples, dim : memory shape (N, D).
    temp : softmax temperature τ (official 0.05).
    momentum : m in entry ← m·entry + (1−m)·feature (official 0.2).
    """

    def __init__(self, num_samples: int, dim: int, temp: float = 0.05, momentum: float = 0.2) -> None:
        super().__init__()
        self.temp = temp
        self.momentum = momentum
        self.register_buffer("features", torch.zeros(num_samples, dim))
        self.register_buffer("labels", torch.zeros(num_samples, dtype=torch.long))

    @property
    def num_classes(self) -> int:
        return int(self.labels.max().item()) + 1 if self.labels.numel() else 0

    @torch.no_grad()
    def init_features(self, features: torch.Tensor) -> None:
        self.features.copy_(F.normalize(features.to(self.features), dim=1))

    @torch.no_grad()
    def set_labels(self, labels: torch.Tensor) -> None:
        """Pseudo-labels for every entry: one contiguous range 0..C−1, no outliers (−1 is refused)."""
        labels = torch.as_tensor(labels, dtype=torch.long, device=self.labels.device)
        if labels.numel() != self.labels.numel() or (labels < 0).any():
            raise ValueError("instance-memory labels must cover every sample with a non-negative label")
        counts = torch.bincount(labels)
        if (counts == 0).any():
            raise ValueError("instance-memory labels must be contiguous (relabel after refinement)")
        self.labels.copy_(labels)

    @torch.no_grad()
    def class_sums(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(C×D sum of member entries, C member counts)."""
        c = self.num_classes
        sums = torch.zeros(c, self.features.shape[1], dtype=self.features.dtype, device=self.features.device)
        sums.index_add_(0, self.labels, self.features)
        return sums, torch.bincount(self.labels, minlength=c).to(self.features.dtype)

    @torch.no_grad()
    def centroids(self) -> torch.Tensor:
        """C×D class means (not normalised), e.g. the cross-view target of MaskCL."""
        sums, counts = self.class_sums()
        return sums / counts.unsqueeze(1)

    def class_logits(self, feats: torch.Tensor) -> torch.Tensor:
        """B×C logits s_k = mean_{j∈k} ⟨f, M_j⟩ / τ (gradient flows into ``feats`` only)."""
        sums, counts = self.class_sums()
        return feats @ (sums / counts.unsqueeze(1)).t().to(feats.dtype) / self.temp

    @torch.no_grad()
    def update(self, indices: torch.Tensor, feats: torch.Tensor) -> None:
        _momentum_rows(self.features, indices.to(self.features.device), feats, self.momentum)


class ClusterMemory(nn.Module):
    """C×D cluster-centroid memory (ClusterContrast), re-initialised every epoch from centroids."""

    def __init__(self, dim: int, temp: float = 0.05, momentum: float = 0.2) -> None:
        super().__init__()
        self.temp = temp
        self.momentum = momentum
        self.register_buffer("features", torch.zeros(0, dim))

    @torch.no_grad()
    def init_centroids(self, centroids: torch.Tensor) -> None:
        self.features = F.normalize(centroids.detach().to(self.features.device, self.features.dtype), dim=1)

    def logits(self, feats: torch.Tensor) -> torch.Tensor:
        """B×C logits ⟨f, c_k⟩ / τ."""
        return feats @ self.features.t().to(feats.dtype) / self.temp

    @torch.no_grad()
    def update(self, targets: torch.Tensor, feats: torch.Tensor) -> None:
        _momentum_rows(self.features, targets.to(self.features.device), feats, self.momentum)
