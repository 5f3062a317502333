"""Loss terms of MaskCL and ClusterContrast, each a pure function of logits/embeddings.

Deviations from the official MaskCL code (documented in docs/training.md):
- the neighbour loss is reduced per sample (each sample's own gate and weight scale its own NLL;
  the official code scales the batch-mean NLL) and divided by the number of neighbours used, k,
  rather than k+1 (the official divisor counts an unused self column);
- the Bernoulli gate uses the similarity clamped to [0, 1] (the official ``torch.bernoulli`` fails on
  a negative similarity).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["prototype_focal_loss", "neighbour_loss", "cross_view_loss", "cluster_contrast_loss"]


def prototype_focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 4.0) -> torch.Tensor:
    """Mean over the batch of −(1−p_y)^γ·log p_y (softmax over class prototypes; official γ = 4).

    logits: B×C, targets: B.
    """
    logp = F.log_softmax(logits, dim=1).gather(1, targets.view(-1, 1)).squeeze(1)  # B
    weight = (1.0 - logp.exp()).clamp(min=0.0).pow(gamma)
    return -(weight * logp).mean()


def neighbour_loss(logits: torch.Tensor, neighbours: torch.Tensor, weights: torch.Tensor,
                   gates: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Cluster-level neighbour loss, reduced per sample.

    For each sample b with neighbour classes c_{b,1..k} (similarities w_{b,r}, gates d_{b,r} ∈ {0,1}):
    loss_b = (1/k)·Σ_r w_{b,r}·d_{b,r}·(−log p_b(c_{b,r})); the result is the batch mean.

    logits: B×C; neighbours, weights, gates: B×k. k = 0 gives a zero loss.
    """
    if neighbours.numel() == 0 or neighbours.shape[1] == 0:
        return logits.sum() * 0.0
    logp = F.log_softmax(logits, dim=1).gather(1, neighbours)  # B×k
    w = weights.to(logp.dtype)
    if gates is not None:
        w = w * gates.to(logp.dtype)
    return -(w * logp).sum(dim=1).div(neighbours.shape[1]).mean()


def cross_view_loss(g_rgb: torch.Tensor, f_mask: torch.Tensor, mask_centroids: torch.Tensor) -> torch.Tensor:
    """−mean cos(sg(f_mask), g_rgb) − mean cos(sg(centroid_mask[y]), g_rgb).

    The targets are detached, so the gradient reaches only the RGB network and its projection head.
    g_rgb, f_mask, mask_centroids: B×D (mask_centroids = mask-memory centroid of each sample's class).
    """
    inst = F.cosine_similarity(g_rgb, f_mask.detach(), dim=1).mean()
    cent = F.cosine_similarity(g_rgb, mask_centroids.detach(), dim=1).mean()
    return -(inst + cent)


def cluster_contrast_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """ClusterContrast's memory loss: cross-entropy over cluster-centroid logits."""
    return F.cross_entropy(logits, targets)
