"""Loss terms of MaskCL and ClusterContrast, each a pure function of logits/embeddings.

MaskCL's memory softmax is the official one by default (SiCL ``maskcl/models/hm.py``): ε = 1e-6 is added to
the softmax denominator (``masked_softmax``, lines 67-71 and 117-121) and inside the log of the focal and
neighbour losses (lines 108 and 133); ``eps=0`` gives the exact softmax. The neighbour loss has the official
reduction (``reduction="official"``) and the per-sample one the paper's formula implies. Every difference
from the official code is listed in docs/training.md.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["NEIGHBOUR_REDUCTIONS", "memory_log_probs", "prototype_focal_loss", "neighbour_loss",
           "neighbour_rank_weights", "cross_view_loss", "cluster_contrast_loss"]

#: Values of ``train.neighbour_reduction``.
NEIGHBOUR_REDUCTIONS = ("official", "per_sample")


def memory_log_probs(logits: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """B×C log(p + ε) with p = exp(s) / (Σ_k exp(s_k) + ε) (official ``masked_softmax`` and its log).

    Computed without overflow: log Σ exp(s) + ε = logaddexp(logsumexp(s), log ε). ``eps=0`` is
    ``log_softmax``. Below p ≈ ε the value saturates at log ε, as the official loss does.
    """
    if eps <= 0:
        return F.log_softmax(logits, dim=1)
    log_den = torch.logaddexp(torch.logsumexp(logits, dim=1, keepdim=True),
                              torch.full_like(logits[:, :1], math.log(eps)))
    p = torch.exp(logits - log_den)
    return torch.log(p + eps)


def prototype_focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 4.0,
                         eps: float = 0.0) -> torch.Tensor:
    """Mean over the batch of −(1−p_y)^γ·log(p_y + ε) (softmax over class prototypes; official γ = 4, ε = 1e-6).

    logits: B×C, targets: B. ``eps=0`` is the exact softmax and log; then γ = 0 is cross-entropy.
    """
    logp = memory_log_probs(logits, eps).gather(1, targets.view(-1, 1)).squeeze(1)  # log(p_y + ε)
    p = logp.exp() - eps
    weight = (1.0 - p).clamp(min=0.0).pow(gamma)
    return -(weight * logp).mean()


def neighbour_rank_weights(weights: torch.Tensor, gates: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The official reduction's per-rank factors c_r = mean_b(w_{b,r}·d_{b,r}) (k values, no gradient).

    Under DDP they are computed on the global batch and passed to :func:`neighbour_loss`, so every rank
    scales its slice's NLL by the same factor the one-process step uses.
    """
    w = weights.detach().float()
    if gates is not None:
        w = w * gates.detach().float()
    return w.mean(dim=0)


def neighbour_loss(logits: torch.Tensor, neighbours: torch.Tensor, weights: torch.Tensor,
                   gates: Optional[torch.Tensor] = None, *, reduction: str = "official", eps: float = 0.0,
                   rank_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Cluster-level neighbour loss for neighbour classes c_{b,1..k}, weights w_{b,r}, gates d_{b,r} ∈ {0,1}.

    With NLL_{b,r} = −log(p_b(c_{b,r}) + ε):

    - ``official`` (``hm.py`` lines 104-110): (1/(k+1))·Σ_r [mean_b NLL_{b,r}]·[mean_b w_{b,r}·d_{b,r}] —
      ``F.nll_loss`` averages over the batch before the weights and gates scale it, and the divisor counts
      an unused self column; ``rank_weights`` gives the second factor (default: from this batch);
    - ``per_sample``: mean_b (1/k)·Σ_r w_{b,r}·d_{b,r}·NLL_{b,r}.

    logits: B×C; neighbours, weights, gates: B×k. k = 0 gives a zero loss.
    """
    if reduction not in NEIGHBOUR_REDUCTIONS:
        raise ValueError(f"train.neighbour_reduction must be one of {', '.join(NEIGHBOUR_REDUCTIONS)}, "
                         f"got {reduction!r}")
    if neighbours.numel() == 0 or neighbours.shape[1] == 0:
        return logits.sum() * 0.0
    k = neighbours.shape[1]
    nll = -memory_log_probs(logits, eps).gather(1, neighbours)  # B×k
    if reduction == "official":
        c = rank_weights if rank_weights is not None else neighbour_rank_weights(weights, gates)
        return (nll.mean(dim=0) * c.to(nll)).sum() / (k + 1)
    w = weights.to(nll.dtype)
    if gates is not None:
        w = w * gates.to(nll.dtype)
    return (w * nll).sum(dim=1).div(k).mean()


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
