"""ISE: ClusterContrast with implicit sample extension (support features and the label-preserving loss).

Zhang et al., "Implicit Sample Extension for Unsupervised Person Re-Identification", CVPR 2022; official
code zhangxinyu-xyz/ISE-ReID (HEAD ``3e55527``, a fork of ClusterContrast). Its facts (display name, switches,
recipe): ``maskcl/methods/ise.py``. Line numbers below are of that commit; ``trainers_support.py`` is
``clustercontrast/trainers_support.py``, ``cm.py`` ``clustercontrast/models/cm.py``, ``lp_loss.py``
``clustercontrast/losses/lp_loss.py``.

The method is ClusterContrast's loop (``maskcl.training.methods.clustercontrast``) plus three things, all at
feature level (no extra network, no second forward):

1. ``start``: nothing (ClusterContrast's).
2. ``prepare_epoch(epoch)``: ClusterContrast's: re-extract every training image in eval mode, Jaccard +
   DBSCAN (``eps``, ``min_samples``, ``k1``, ``k2``), drop the outliers, a cluster memory from the centroids
   (``temp``, ``momentum``); then check there are at least ``ise_topk`` + 1 clusters and restart the step count.
3. ``step``: the L2-normalised features f of the batch and, per sample, ``ise_topk`` **supports**
   s = normalise(f + 0.5 · λ_t · (c_other − c_own)) towards its nearest other centroids of the memory as it
   is now (:func:`support_features`), with λ_t = 0.5 · ``ise_lambda_base`` · ln((e − 1) · t + 1) and t the
   global step over ``epochs`` · ``iters`` (:func:`support_lambda`, a function of the epoch and the step in it,
   so a resumed run continues it exactly); loss = cross-entropy over the memory of [f; s] (the supports only
   with ``ise_use_support``, :func:`support_memory_loss`) + ``ise_lp_weight`` · the **label-preserving loss**
   (temperature ``ise_lp_temp``, negatives ``ise_lp_negatives`` with chunks of ``ise_topk`` · ``num_instances``,
   :func:`label_preserving_loss`), which compares each sample with the supports of the whole batch (under DDP
   all ranks' supports, gathered with their gradient: ``comm.gather_with_grad``).
4. ``after_step``: the memory update on the global batch, [samples; supports] in batch order
   (``ise_memory_update``: ``hard`` each centroid once towards its least similar input, ``ori`` every input in
   turn; the supports only with ``ise_use_support`` and ``ise_supports_update``, :func:`update_memory`).

The functions below are the official step as functions of tensors:

- :func:`support_lambda`: the progressive interpolation degree, per iteration
  (``clustercontrast/trainers_support.py`` line 30):
  λ_t = 0.5 · base · ln((e − 1) · (epoch · iters + i) / (iters · epochs) + 1), rising from 0 towards 0.5 · base.
- :func:`support_features`: for every sample its ``topk`` nearest *other* centroids of the current cluster
  memory (by dot product with the detached feature, the sample's own label excluded, lines 115-125) and
  one support per centroid, s = normalise(f + 0.5 · λ_t · (c_other − c_own)) (lines 99-113). A support keeps
  its sample's label (line 44) and is not detached: the gradient reaches the encoder through it.
- :func:`support_memory_loss`: cross-entropy over the cluster memory (τ = the memory's temperature) of the
  samples and their supports together, one mean over all B · (1 + topk) rows (lines 47-48; ``models/cm.py``
  lines 89-100).
- :func:`label_preserving_loss`: per sample −log(p / (p + Σ n + ε) + ε) with p the exp-similarity
  (temperature 0.6) of its hardest positive support and n the hardest negative supports
  (``clustercontrast/losses/lp_loss.py`` lines 14-45); how the negatives are picked is ``negatives``.
- :func:`update_memory` / :func:`hard_update`: the memory update of ``models/cm.py``: ``hard`` (lines 48-69,
  the Market-1501 script) moves each cluster's entry towards its least similar input of the batch,
  ``ori`` (lines 20-31, the MSMT17 script) towards every input in turn; the supports are inputs of the
  memory, so officially they take part in the update (``supports_update=False`` keeps them out).
- :func:`ise_step`: the two losses weighted as line 51 and 55 do: ``loss_weight`` · memory + ``lp_weight`` · LP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from ...errors import MaskCLError
from ...methods.ise import ISE
from ...models.memory import ClusterMemory
from .. import losses
from .base import register_method
from .clustercontrast import ClusterContrastMethod

__all__ = ["ISEMethod", "LP_NEGATIVES", "SAMPLE_TYPES", "ISEStep", "support_lambda", "nearest_other_centroids",
           "support_features", "support_memory_loss", "label_preserving_loss", "hard_update", "update_memory",
           "ise_step"]

#: How the label-preserving loss picks its negatives: ``official`` cuts a sample's negative supports, in
#: batch order, into chunks of topk · num_instances and takes each chunk's hardest (one per identity when
#: the batch is P aligned blocks of K), or sums all negatives when their count is not a multiple of the
#: chunk; ``per_label`` takes the hardest support of every other label, whatever the batch layout.
LP_NEGATIVES = ("official", "per_label")

#: The cluster-memory update (``models/cm.py``): ``hard`` each entry once, with its batch's least similar
#: input; ``ori`` with every input in batch order (what ``ClusterMemory.update`` does).
SAMPLE_TYPES = ("hard", "ori")


def support_lambda(epoch: int, it: int, iters: int, epochs: int, base: float = 1.0) -> float:
    """λ_t = 0.5 · base · ln((e − 1) · t + 1), t = (epoch · iters + it) / (iters · epochs) (0-based epoch, it).

    ``trainers_support.py`` line 30 with ``train_iters`` = iterations per epoch and ``args.epochs`` the whole
    schedule; the support is then moved by 0.5 · λ_t of the centroid difference (line 110), so the two
    halvings are separate factors and the displacement never exceeds a quarter of it (base 1).
    """
    if iters < 1 or epochs < 1:
        raise ValueError(f"support_lambda needs iters >= 1 and epochs >= 1, got {iters} and {epochs}")
    t = (epoch * iters + it) / (iters * epochs)
    return math.log((math.e - 1.0) * t + 1.0) * base * 0.5


def nearest_other_centroids(feats: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor,
                            topk: int = 1) -> torch.Tensor:
    """B × topk indices of the most similar centroids other than the sample's own, most similar first.

    Similarity is the dot product of the detached feature with the memory entry (``trainers_support.py``
    lines 117-123): the own label is removed from the sorted row, not position 0, so a sample closer to
    another centroid than to its own still gets the nearest *other* one.
    """
    c = centroids.shape[0]
    if not 1 <= topk <= c - 1:
        raise ValueError(f"ISE needs topk between 1 and the number of clusters - 1 = {c - 1}, got topk={topk}: "
                         "every sample moves towards its topk nearest other clusters")
    sims = feats.detach() @ centroids.detach().t().to(feats.dtype)
    own = F.one_hot(labels.to(sims.device), c).bool()
    return sims.masked_fill(own, float("-inf")).topk(topk, dim=1).indices


def support_features(feats: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor, lam: float,
                     topk: int = 1) -> Tuple[torch.Tensor, torch.Tensor]:
    """(B · topk) × D supports s = normalise(f + 0.5 · λ · (c_other − c_own)) and their labels (the sample's).

    ``trainers_support.py`` lines 99-113 and 44: ``centroids`` is the cluster memory as it is at this step
    (momentum-updated, not the epoch's initial centroids), ``feats`` the L2-normalised training features;
    sample b's topk supports are rows b · topk … b · topk + topk − 1 (``repeat_interleave``). Only the
    centroids are constants: the supports carry the gradient of ``feats``.
    """
    nearest = nearest_other_centroids(feats, labels, centroids, topk)
    cent = centroids.detach().to(feats.dtype)
    own = cent[labels].unsqueeze(1)  # B × 1 × D
    other = cent[nearest]  # B × topk × D
    moved = feats.unsqueeze(1) + (other - own) * (lam * 0.5)
    supports = F.normalize(moved.reshape(-1, feats.shape[1]), dim=1)
    return supports, labels.repeat_interleave(topk)


def support_memory_loss(memory: ClusterMemory, feats: torch.Tensor, labels: torch.Tensor,
                        supports: Optional[torch.Tensor] = None,
                        support_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Cross-entropy over the cluster memory of [feats; supports] with labels [labels; support_labels].

    One mean over all rows (``trainers_support.py`` line 48 concatenates before ``ClusterMemory.forward``,
    ``cm.py`` lines 91-99, which L2-normalises its inputs and divides by the memory temperature), so with topk
    supports per sample a support weighs as much as a sample. Without supports it is ClusterContrast's loss.
    """
    if supports is not None:
        if support_labels is None:
            raise ValueError("support_memory_loss: supports need their labels")
        feats = torch.cat([feats, supports.to(feats.dtype)])
        labels = torch.cat([labels, support_labels.to(labels.device)])
    return losses.cluster_contrast_loss(memory.logits(F.normalize(feats, dim=1)), labels)


def label_preserving_loss(feats: torch.Tensor, labels: torch.Tensor, supports: torch.Tensor,
                          support_labels: torch.Tensor, *, temp: float = 0.6, group_size: Optional[int] = None,
                          negatives: str = "official", eps: float = 1e-6, reduction: str = "mean") -> torch.Tensor:
    """ISE's label-preserving loss (``lp_loss.py`` lines 14-45).

    With e_j = exp(⟨f_b, s_j⟩ / τ) over the supports s_j: p = min over the supports of f_b's label (the
    hardest positive, its own support included), N = the negatives as ``negatives`` picks them (see
    :data:`LP_NEGATIVES`; ``official`` needs ``group_size`` = topk · num_instances), and
    loss_b = −log(p / (p + Σ N + ε) + ε), averaged over the batch (``reduction="none"``: per sample).

    ``feats`` are the anchors and ``supports`` the candidates in batch order; they need not be the same
    batch (under DDP: this rank's anchors against the global batch's supports). The exponentials are
    shifted by each row's largest logit, with ε scaled alike, which is the official quotient without its
    overflow for small τ.
    """
    if negatives not in LP_NEGATIVES:
        raise ValueError(f"ISE lp negatives must be one of {', '.join(LP_NEGATIVES)}, got {negatives!r}")
    if negatives == "official" and (group_size is None or group_size < 1):
        raise ValueError("label_preserving_loss(negatives='official') needs group_size = topk * num_instances")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    support_labels = support_labels.to(labels.device)
    logits = feats @ supports.t().to(feats.dtype) / temp  # B × N
    shift = logits.detach().max(dim=1, keepdim=True).values
    ex = torch.exp(logits - shift)
    eps_row = eps * torch.exp(-shift.squeeze(1))
    n_cols = supports.shape[0]
    parts, rows_all = [], []
    for lab in labels.unique():
        rows = (labels == lab).nonzero().squeeze(1)
        is_pos = support_labels == lab
        if not is_pos.any():
            raise ValueError(f"label_preserving_loss: label {int(lab)} has no support among the candidates")
        e = ex[rows]
        pos = e[:, is_pos].min(dim=1).values  # the hardest positive
        neg = e[:, ~is_pos]  # the negatives, in batch order
        if negatives == "official":
            g = int(group_size)  # type: ignore[arg-type]
            if n_cols % g == 0 and neg.shape[1] % g == 0:  # lp_loss.py 35-37: one maximum per chunk
                neg_sum = neg.reshape(len(rows), -1, g).max(dim=2).values.sum(dim=1)
            else:  # lp_loss.py 38-43: the reshape fails, every negative counts
                neg_sum = neg.sum(dim=1)
        else:
            _, group = torch.unique(support_labels[~is_pos], return_inverse=True)
            n_groups = int(group.max()) + 1 if group.numel() else 0
            hardest = neg.new_zeros(len(rows), n_groups).scatter_reduce(
                1, group.unsqueeze(0).expand(len(rows), -1), neg, reduce="amax", include_self=False)
            neg_sum = hardest.sum(dim=1)
        parts.append(-torch.log(pos / (pos + neg_sum + eps_row[rows]) + eps))
        rows_all.append(rows)
    per_sample = torch.cat(parts).new_zeros(len(labels)).index_put((torch.cat(rows_all),), torch.cat(parts))
    return per_sample.mean() if reduction == "mean" else per_sample


@torch.no_grad()
def hard_update(memory: ClusterMemory, targets: torch.Tensor, feats: torch.Tensor) -> None:
    """Each cluster of the batch once: entry ← normalise(m · entry + (1 − m) · x*), x* its least similar input.

    ``cm.py`` lines 55-67: inputs grouped by target, similarity ⟨x, entry⟩ with the entry before its update,
    the first minimum in batch order (``np.argmin``); clusters absent from the batch are untouched.
    """
    bank = memory.features
    targets = targets.to(bank.device)
    feats = feats.detach().to(bank)
    sims = (feats * bank[targets]).sum(dim=1)
    uniq, inv = torch.unique(targets, return_inverse=True)
    n = len(targets)
    lowest = sims.new_full((len(uniq),), float("inf")).scatter_reduce(0, inv, sims, reduce="amin")
    position = torch.arange(n, device=bank.device)
    first = torch.full((len(uniq),), n, dtype=torch.long, device=bank.device).scatter_reduce(
        0, inv, torch.where(sims == lowest[inv], position, n), reduce="amin")
    memory.update(uniq, feats[first])


@torch.no_grad()
def update_memory(memory: ClusterMemory, labels: torch.Tensor, feats: torch.Tensor,
                  support_labels: Optional[torch.Tensor] = None, supports: Optional[torch.Tensor] = None, *,
                  sample_type: str = "hard", supports_update: bool = True) -> None:
    """The memory update of one step, on the inputs of the memory loss in their order [feats; supports].

    Officially the update runs in the backward of the memory's autograd function on exactly what the
    memory loss saw (``cm.py`` lines 26-29 or 55-67), so the supports move the centroids too
    (``supports_update=True``, the default); ``False`` updates with the samples alone. Pass ``supports=None``
    when the memory loss had none (``use_support`` off). Inputs are L2-normalised first, as ``cm.py`` line 91.
    """
    if sample_type not in SAMPLE_TYPES:
        raise ValueError(f"ISE sample_type must be one of {', '.join(SAMPLE_TYPES)}, got {sample_type!r}")
    if supports is not None and supports_update:
        if support_labels is None:
            raise ValueError("update_memory: supports need their labels")
        feats = torch.cat([feats.detach(), supports.detach().to(feats.dtype)])
        labels = torch.cat([labels, support_labels.to(labels.device)])
    feats = F.normalize(feats.detach(), dim=1)
    if sample_type == "hard":
        hard_update(memory, labels, feats)
    else:
        memory.update(labels, feats)


@dataclass
class ISEStep:
    """One step's loss, its logged terms and the supports (for the memory update after the optimiser step)."""

    total: torch.Tensor
    terms: Dict[str, torch.Tensor]
    supports: torch.Tensor
    support_labels: torch.Tensor


def ise_step(memory: ClusterMemory, feats: torch.Tensor, labels: torch.Tensor, lam: float, *,
             num_instances: int, topk: int = 1, use_support: bool = True, loss_weight: float = 1.0,
             lp_weight: float = 0.1, lp_temp: float = 0.6, lp_negatives: str = "official",
             gather: Optional[Callable[[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]] = None
             ) -> ISEStep:
    """``trainers_support.py`` lines 40-55: supports, memory loss over samples (+ supports), LP loss.

    total = loss_weight · memory loss + lp_weight · LP loss. The LP loss is computed (and logged) whatever
    ``use_support`` says, as officially; ``use_support`` only decides whether the supports enter the memory
    loss. Defaults are the official argument defaults, which the Market-1501 script keeps (``topk`` 1,
    ``temp_lp_loss`` 0.6, ``lp_loss_weight`` 0.1; MSMT17's script uses 0.01). ``gather`` maps this batch's
    (supports, their labels) to the whole batch's, the candidates of the LP loss (under DDP: every rank's, in
    rank order, with the gradient of every rank's loss reaching this rank's supports); default this batch.
    """
    supports, support_labels = support_features(feats, labels, memory.features, lam, topk)
    if use_support:
        contrast = support_memory_loss(memory, feats, labels, supports, support_labels)
    else:
        contrast = support_memory_loss(memory, feats, labels)
    cand, cand_labels = (supports, support_labels) if gather is None else gather(supports, support_labels)
    lp = label_preserving_loss(feats, labels, cand, cand_labels, temp=lp_temp,
                               group_size=topk * num_instances, negatives=lp_negatives)
    total = contrast * loss_weight + lp * lp_weight
    return ISEStep(total, {"contrast": contrast, "lp": lp}, supports, support_labels)


# ------------------------------------------------------------------------------------------------ the method
@register_method(ISE)
class ISEMethod(ClusterContrastMethod):
    """ClusterContrast's backbone, clustering and memory, with supports and the LP loss (see the module docstring).

    ``start``, ``dataset``, ``rgb_backbone``, ``export`` and the resume hooks (labels; the memory resized to
    its checkpointed number of clusters) are ClusterContrast's: λ_t is a function of (epoch, step in epoch)
    and the engine checkpoints at epoch ends, so nothing else needs saving.
    """

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        s = self.s
        if s.ise_memory_update not in SAMPLE_TYPES:
            raise ValueError(f"train.ise_memory_update must be one of {', '.join(SAMPLE_TYPES)}, "
                             f"got {s.ise_memory_update!r}")
        if s.ise_lp_negatives not in LP_NEGATIVES:
            raise ValueError(f"train.ise_lp_negatives must be one of {', '.join(LP_NEGATIVES)}, "
                             f"got {s.ise_lp_negatives!r}")
        self._epoch = 0
        self._it = 0

    def prepare_epoch(self, epoch: int) -> Dict[str, Any]:
        stats = super().prepare_epoch(epoch)
        clusters = int(self.module["memory"].features.shape[0])
        if clusters < self.s.ise_topk + 1:  # the official step fails with a shape error (trainers_support.py 111)
            raise MaskCLError(f"ISE epoch {epoch + 1}: {clusters} cluster(s), but every sample needs "
                              f"train.ise_topk = {self.s.ise_topk} other cluster(s) to move towards; "
                              f"raise train.eps, lower train.min_samples or lower train.ise_topk")
        self._epoch, self._it = epoch, 0
        return stats

    def lam(self) -> float:
        """λ_t of the coming step (0-based epoch and step in it, as ``trainers_support.py`` line 30)."""
        s = self.s
        return support_lambda(self._epoch, self._it, s.iters, s.epochs, s.ise_lambda_base)

    def _gather_supports(self, supports: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.comm.gather_with_grad(supports), self.comm.gather(labels)[0]

    def step(self, batch: Tuple[torch.Tensor, ...]) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        s = self.s
        x, idx = batch
        idx = idx.to(self.device)
        f, _ = self.comm.forward(self.module["net"], self._input(x))
        f = f.float()
        y = self._labels_dev[idx]
        out = ise_step(self.module["memory"], f, y, self.lam(), num_instances=s.num_instances, topk=s.ise_topk,
                       use_support=s.ise_use_support, lp_weight=s.ise_lp_weight, lp_temp=s.ise_lp_temp,
                       lp_negatives=s.ise_lp_negatives, gather=self._gather_supports)
        self._last = (y, f.detach(), out.support_labels, out.supports.detach())
        return out.total, out.terms

    @torch.no_grad()
    def after_step(self) -> None:
        s = self.s
        y, f, ys, sup = self.comm.gather(*self._last)  # samples, then supports, each in global batch order
        self._last = None
        if s.ise_use_support:
            update_memory(self.module["memory"], y, f, ys, sup, sample_type=s.ise_memory_update,
                          supports_update=s.ise_supports_update)
        else:
            update_memory(self.module["memory"], y, f, sample_type=s.ise_memory_update)
        self._it += 1
