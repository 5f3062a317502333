"""SpCL: self-paced contrastive learning with a hybrid memory, purely unsupervised (USL) setting.

Ge et al., "Self-paced Contrastive Learning with Hybrid Memory for Domain Adaptive Object Re-ID",
NeurIPS 2020 (arXiv 2006.02713); official code yxgeee/SpCL at ``01a486e`` (``examples/spcl_train_usl.py``,
below "usl"; ``spcl/models/hm.py``, "hm"; ``spcl/trainers.py`` ``SpCLTrainer_USL``). Its facts (display
name, recipe, own keys): ``maskcl/methods/spcl.py``; where this module differs from the official code:
docs/methods.md.

One instance memory, one loss, and a pseudo-labelling that keeps only reliable clusters:

1. ``start`` (once, fresh runs only): the **hybrid memory**, one entry per training image, filled with the
   eval-mode features of the training images, L2-normalised (usl 133-137), and never re-extracted.
2. ``prepare_epoch``: the **self-paced criterion** clusters the memory entries themselves (usl 154), not
   re-extracted features: one k-reciprocal Jaccard distance (``k1``, ``k2``, ``knn_backend``) and three
   DBSCANs (``min_samples``) at ``eps``, ``eps - eps_gap`` (tight) and ``eps + eps_gap`` (loose); outliers
   become singleton classes. Per sample, r_comp = 1 - IoU(its cluster, its tight cluster) and
   r_indep = 1 - IoU(its cluster, its loose cluster) (usl 193-199); a cluster's scores are its members'
   minima. The independence threshold is fixed once, by the first epoch (the official epoch 0) at the
   0.9-quantile position of the clusters' r_indep, and checkpointed; a sample keeps its label iff its
   cluster's r_indep passes it and its own r_comp equals its cluster's best, every other sample becomes a
   singleton (usl 212-226). The labels (one contiguous range) go to the memory and to the PK sampler.
3. ``step``: the batch's L2-normalised training features f against the memory: class score
   s_k = mean over k's entries of <f, M_j> / ``temp``, softmax over the classes with ``softmax_eps`` in
   its denominator and inside the log, loss = batch mean of -log(p_y + eps) (hm 51-74). No gradient
   reaches the memory.
4. ``after_step``: every row of the global batch, in batch order, moves its entry:
   M_i <- normalise(``momentum`` * M_i + (1 - ``momentum``) * f) (hm 28-30).

Under DDP each rank's loss is the mean over its slice of the batch (DDP's gradient averaging gives the
global-batch mean), ``after_step`` gathers the global batch in order so every rank's memory takes the
same updates, and the criterion runs on rank 0 while every rank records the threshold.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ...clustering import apply_outlier_policy, cluster_with_distances, dbscan
from ...errors import ConfigError, MaskCLError
from ...methods.spcl import SPCL
from ...models.backbone import ReIDBackbone
from ...models.bn_groups import convert_bn_groups
from ...models.images import ImageSet
from ...models.memory import InstanceMemory
from ..clustering_step import label_stats
from ..data import TrainData
from ..losses import memory_log_probs
from ..settings import TrainSettings
from ..batches import View
from ..transforms import train_transform
from .base import MethodBase, backbone_of, register_method

__all__ = ["SpCLMethod", "HybridMemory", "hybrid_memory_loss", "MultiScaleLabels", "multi_scale_dbscan",
           "ReliabilityScores", "reliability_scores", "independence_threshold", "SelfPacedLabels",
           "select_reliable", "self_paced_labels", "SelfPacedCriterion", "INDEP_QUANTILE"]

#: The independence threshold's position in the first epoch's distribution (usl 214, hard-coded there).
INDEP_QUANTILE = 0.9


@register_method(SPCL)
class SpCLMethod(MethodBase):
    """One backbone, the hybrid memory and the self-paced criterion (see the module docstring)."""

    def __init__(self, settings: TrainSettings, data: TrainData, device: torch.device, **kw: Any) -> None:
        super().__init__(settings, data, device, **kw)
        s = settings
        if not (0.0 < s.eps - s.eps_gap and s.eps + s.eps_gap < 1.0):
            raise ConfigError(f"train.eps_gap ({s.eps_gap}) is too wide for train.eps ({s.eps}): SpCL's tight and "
                              f"loose DBSCANs run at eps - eps_gap and eps + eps_gap, which must lie in (0, 1)")
        net = backbone_of(s)
        convert_bn_groups(net, s.bn_groups)
        self.module = nn.ModuleDict({"net": net, "memory": HybridMemory(len(data), net.dim, s.temp, s.momentum,
                                                                         eps=s.softmax_eps)})
        self._to_device(self.module)
        self.criterion = SelfPacedCriterion(eps=s.eps, eps_gap=s.eps_gap, min_samples=s.min_samples, k1=s.k1,
                                            k2=s.k2, knn_backend=s.knn_backend)
        self._last: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    @property
    def memory(self) -> "HybridMemory":
        return self.module["memory"]  # type: ignore[return-value]

    def rgb_backbone(self) -> ReIDBackbone:
        return self.module["net"]  # type: ignore[return-value]

    def dataset(self) -> Dataset:
        s = self.s
        return ImageSet(self.data.paths, train_transform(self.size, pad=s.pad, erasing=s.erasing))

    def views(self) -> Tuple[View, ...]:
        return (View("image", pad=self.s.pad, erasing=self.s.erasing),)

    @torch.no_grad()
    def start(self) -> None:
        """Fill the memory once from eval-mode features (usl 133-137); it is never re-extracted."""
        self.memory.init_features(self._extract_rgb(self.rgb_backbone()))

    def prepare_epoch(self, epoch: int) -> Dict[str, Any]:
        feats = self.memory.features.detach().cpu().float().numpy()  # usl 154: the memory entries
        result = self.comm.on_main(self.criterion.compute, feats)  # rank 0 clusters, every rank gets it
        self.criterion.adopt(result, epoch)  # every rank records the threshold the first time there is one
        self.labels = result.labels
        self.memory.set_labels(torch.as_tensor(self.labels, dtype=torch.long))
        stats = result.stats()
        stats["indep_fixed_at_epoch"] = (-1 if self.criterion.fixed_at_epoch is None
                                         else self.criterion.fixed_at_epoch + 1)  # 1-based, as the log's epochs
        stats.update(label_stats(self.labels, self.data.pids, self.data.clothes))
        return stats

    def step(self, batch: Tuple[torch.Tensor, ...]) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        x, idx = batch
        idx = idx.to(self.device)
        f, _ = self.comm.forward(self.rgb_backbone(), self._input(x))
        f = f.float()
        loss = self.memory.loss(f, idx)  # mean over this process's rows
        self._last = (idx, f.detach())
        return loss, {"contrast": loss}

    @torch.no_grad()
    def after_step(self) -> None:
        idx, f = self.comm.gather(*self._last)  # the whole (global) batch in batch order
        self.memory.update(idx, f)
        self._last = None

    def extra_state(self) -> Dict[str, Any]:
        return {**super().extra_state(), "spcl_criterion": self.criterion.state_dict()}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        if "spcl_criterion" not in state:
            raise MaskCLError("the SpCL training state has no independence threshold (spcl_criterion); it cannot "
                              "be resumed without changing the run: delete the state folder to train afresh")
        super().load_extra_state(state)
        self.criterion.load_state_dict(state["spcl_criterion"])


# ------------------------------------------------------------------------------------------- memory
def hybrid_memory_loss(feats: torch.Tensor, bank: torch.Tensor, labels: torch.Tensor, indexes: torch.Tensor,
                       temp: float = 0.05, eps: float = 1e-6) -> torch.Tensor:
    """SpCL's memory loss (``hm.py`` 51-74): mean_b −log(p_b(y_b) + ε) over class-mean logits.

    feats: B×D batch features (L2-normalised by the network); bank: N×D memory (no gradient reaches it:
    ``hm.py`` 24-25 returns the gradient of the inputs only); labels: N pseudo-labels of the memory entries,
    every entry labelled (outliers as singletons), gaps allowed; indexes: B memory rows of the batch, whose
    labels are the targets (``hm.py`` 63).

    s_k = (Σ_{j: labels_j = k} ⟨f, M_j⟩ / τ) / n_k (``hm.py`` 16, 54, 66-71: the logits are summed per class,
    then divided by the member count), p = exp(s) / (Σ_{k non-empty} exp(s_k) + ε) (``masked_softmax``,
    57-61; an empty class is masked out, 70-73, so dropping it here changes nothing), loss
    ``F.nll_loss(log(p + ε), y)`` (74). Computed without overflow (:func:`memory_log_probs`).
    """
    labels = labels.to(feats.device)
    classes, inv = torch.unique(labels, return_inverse=True)  # the non-empty classes, in label order
    logits = feats @ bank.detach().to(feats.device, feats.dtype).t() / temp  # B×N
    sums = torch.zeros(feats.shape[0], classes.numel(), dtype=logits.dtype, device=logits.device)
    sums = sums.index_add(1, inv, logits)
    nums = torch.bincount(inv, minlength=classes.numel()).to(logits.dtype)
    return F.nll_loss(memory_log_probs(sums / nums, eps), inv[indexes.to(feats.device)])


class HybridMemory(InstanceMemory):
    """SpCL's hybrid memory, USL setting: an :class:`InstanceMemory` scored with :func:`hybrid_memory_loss`.

    Inherited and identical to the official semantics: ``init_features`` (the one-time initialisation,
    L2-normalised: usl 137) and ``update`` (entry ← normalise(m·entry + (1−m)·f), one sample
    at a time in batch order, so a repeated index is updated twice: ``hm.py`` 28-30). ``set_labels`` wants the
    contiguous labels of :class:`SelfPacedLabels` (``labels``); the official gaps change no loss value.
    """

    def __init__(self, num_samples: int, dim: int, temp: float = 0.05, momentum: float = 0.2,
                 eps: float = 1e-6) -> None:
        super().__init__(num_samples, dim, temp, momentum)
        self.eps = eps

    def loss(self, feats: torch.Tensor, indexes: torch.Tensor) -> torch.Tensor:
        """The batch's memory loss (the official ``HybridMemory.forward``); call ``update`` after the step."""
        return hybrid_memory_loss(feats, self.features, self.labels, indexes, self.temp, self.eps)


# ------------------------------------------------------------------------------ three-scale DBSCAN
@dataclass(frozen=True)
class MultiScaleLabels:
    """DBSCAN labels (−1 for noise) of one feature set at eps, eps − gap and eps + gap."""

    main: np.ndarray
    tight: np.ndarray
    loose: np.ndarray
    eps: float
    eps_gap: float
    timings: Dict[str, float] = field(default_factory=dict)


def multi_scale_dbscan(features: Any, *, eps: float = 0.6, eps_gap: float = 0.02, min_samples: int = 4,
                       k1: int = 30, k2: int = 6, knn_backend: str = "auto") -> MultiScaleLabels:
    """The three DBSCANs of usl 155-171 on one k-reciprocal Jaccard distance.

    ``features``: N×D memory entries (L2-normalised; line 154 clusters ``memory.features``). One sparse
    Jaccard computation serves all three: it stores every pair up to eps + gap (``max_distance``), so the
    loose DBSCAN sees every pair it can use, and :func:`maskcl.clustering.dbscan` gives sklearn's labels
    (the official ``DBSCAN(metric='precomputed')``, min_samples 4).
    """
    eps_tight, eps_loose = eps - eps_gap, eps + eps_gap  # lines 160-162
    res = cluster_with_distances(features, eps=eps, min_samples=min_samples, k1=k1, k2=k2, outliers="drop",
                                 tight_eps=eps_tight, max_distance=eps_loose, backend=knn_backend)
    timings = dict(res.timings)
    t0 = time.perf_counter()
    loose = dbscan(res.distances, eps_loose, min_samples)
    timings["dbscan_loose"] = time.perf_counter() - t0
    assert res.tight_labels is not None
    return MultiScaleLabels(main=res.dbscan_labels, tight=res.tight_labels, loose=loose, eps=eps,
                            eps_gap=eps_gap, timings=timings)


# ------------------------------------------------------------------------------ reliability scores
def _one_minus_iou(labels: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Per sample i, 1 − |{j: labels_j = labels_i} ∩ {j: other_j = other_i}| / |… ∪ …|, in float32.

    The official code (lines 194-199) builds N×N 0/1 float32 matrices and divides their row sums of the
    element-wise min and max; those sums are the integers |∩| and |∪| = |A| + |B| − |∩|, so the same
    float32 division and subtraction give bit-identical values from counts.
    """
    _, joint_inv, joint_n = np.unique(labels * (int(other.max(initial=0)) + 1) + other, return_inverse=True,
                                      return_counts=True)
    inter = joint_n[joint_inv]
    union = np.bincount(labels)[labels] + np.bincount(other)[other] - inter
    return np.float32(1.0) - inter.astype(np.float32) / union.astype(np.float32)


@dataclass(frozen=True)
class ReliabilityScores:
    """The official per-sample and per-cluster scores of one epoch (outliers as singleton labels).

    ``r_comp`` / ``r_indep`` are the official variables ``R_comp`` / ``R_indep`` (1 − IoU with the tight /
    loose cluster); ``cluster_r_*`` are their minimum over each label's members, indexed by label.
    """

    labels: np.ndarray            # main DBSCAN labels, outliers → singletons (lines 177-190)
    tight: np.ndarray
    loose: np.ndarray
    r_comp: np.ndarray            # float32, per sample
    r_indep: np.ndarray
    cluster_r_comp: np.ndarray    # float32, per label
    cluster_r_indep: np.ndarray
    cluster_sizes: np.ndarray     # members per label
    num_clusters: int             # DBSCAN clusters at eps (labels below this came from DBSCAN)


def reliability_scores(main: np.ndarray, tight: np.ndarray, loose: np.ndarray) -> ReliabilityScores:
    """r_comp, r_indep per sample and their per-cluster minima from three DBSCAN labelings (−1 = noise).

    Outliers become singletons numbered C, C+1, … in sample order in each labeling (the official
    ``generate_pseudo_labels``, lines 177-190, = ``apply_outlier_policy(·, "singleton")``).
    """
    main_raw = np.asarray(main, dtype=np.int64)
    lab = apply_outlier_policy(main_raw, "singleton")
    lab_t = apply_outlier_policy(np.asarray(tight, dtype=np.int64), "singleton")
    lab_l = apply_outlier_policy(np.asarray(loose, dtype=np.int64), "singleton")
    if not (lab.shape == lab_t.shape == lab_l.shape):
        raise ValueError(f"the three labelings differ in length: {lab.shape}, {lab_t.shape}, {lab_l.shape}")
    r_comp = _one_minus_iou(lab, lab_t)   # line 198
    r_indep = _one_minus_iou(lab, lab_l)  # line 199
    n_labels = int(lab.max(initial=-1)) + 1
    cl_comp = np.full(n_labels, np.inf, dtype=np.float32)
    cl_indep = np.full(n_labels, np.inf, dtype=np.float32)
    np.minimum.at(cl_comp, lab, r_comp)    # lines 203-211: min over the label's members
    np.minimum.at(cl_indep, lab, r_indep)
    return ReliabilityScores(labels=lab, tight=lab_t, loose=lab_l, r_comp=r_comp, r_indep=r_indep,
                             cluster_r_comp=cl_comp, cluster_r_indep=cl_indep,
                             cluster_sizes=np.bincount(lab, minlength=n_labels),
                             num_clusters=int(main_raw.max(initial=-1)) + 1)


def independence_threshold(cluster_r_indep: np.ndarray, cluster_sizes: np.ndarray,
                           quantile: float = INDEP_QUANTILE) -> Optional[float]:
    """The official threshold on a cluster's r_indep (usl 212-214), fixed at epoch 0.

    Over the labels with more than one member (``ReliabilityScores.cluster_r_indep`` and
    ``cluster_sizes``), sorted ascending: the value at position min(n − 1, round(0.9·n)) (numpy's round,
    half to even: n = 25 → 22). So about 90 % of the clusters, plus one, pass at epoch 0; with n ≤ 10 all
    of them. None when no label has two members, where the official code raises an ``IndexError``.
    """
    vals = np.sort(np.asarray(cluster_r_indep, dtype=np.float64)[np.asarray(cluster_sizes) > 1])
    if vals.size == 0:
        return None
    return float(vals[min(vals.size - 1, int(np.round(vals.size * quantile)))])


# ------------------------------------------------------------------------------------ selection
@dataclass(frozen=True)
class SelfPacedLabels:
    """One epoch's SpCL pseudo-labels and what the criterion decided."""

    labels: np.ndarray            # contiguous 0..C−1, every sample (for the memory and the sampler)
    official_labels: np.ndarray   # the official numbering (lines 216-226), gaps where a cluster emptied
    kept: np.ndarray              # bool: the sample kept its (main) label
    indep_threshold: Optional[float]
    scores: ReliabilityScores

    @property
    def ejected(self) -> np.ndarray:
        """Members of a DBSCAN cluster made singletons by the criterion."""
        return ~self.kept & (self.scores.labels < self.scores.num_clusters)

    def stats(self) -> Dict[str, Any]:
        """The keys of ``EpochClusters.stats`` (clusters = DBSCAN's) plus what the official log prints
        (line 233-234): ``reliable_clusters`` (labels of > 1 member after selection) and the IoU threshold
        1 − threshold (NaN while unset)."""
        s = self.scores
        counts = np.bincount(self.labels)
        kept_per_cluster = np.bincount(self.official_labels[self.official_labels < s.num_clusters],
                                       minlength=s.num_clusters)
        return {"clusters": s.num_clusters, "outliers": int((s.labels >= s.num_clusters).sum()),
                "ejected": int(self.ejected.sum()), "classes": int(counts.size),
                "singletons": int((counts == 1).sum()), "reliable_clusters": int((counts > 1).sum()),
                "emptied_clusters": int((kept_per_cluster == 0).sum()),
                "indep_iou_threshold": (float("nan") if self.indep_threshold is None
                                        else 1.0 - self.indep_threshold)}


def select_reliable(scores: ReliabilityScores, indep_threshold: Optional[float]) -> SelfPacedLabels:
    """Keep or eject every sample (usl 216-226).

    A sample keeps its label iff cluster_r_indep[label] ≤ threshold and r_comp ≤ cluster_r_comp[label]
    (line 221; the second is an equality test with the cluster's best member). The others get
    len(labels) + 0, 1, … in sample order (223-226). A ``None`` threshold (no multi-member cluster yet)
    passes every cluster. Comparisons are in float64, as the official Python floats are.
    """
    lab = scores.labels
    indep = scores.cluster_r_indep.astype(np.float64)[lab]
    indep_ok = np.ones(lab.size, dtype=bool) if indep_threshold is None else indep <= float(indep_threshold)
    comp_ok = scores.r_comp.astype(np.float64) <= scores.cluster_r_comp.astype(np.float64)[lab]
    kept = indep_ok & comp_ok
    official = lab.copy()
    official[~kept] = scores.cluster_sizes.size + np.arange(int((~kept).sum()))
    _, contiguous = np.unique(official, return_inverse=True)
    return SelfPacedLabels(labels=contiguous.astype(np.int64), official_labels=official, kept=kept,
                           indep_threshold=indep_threshold, scores=scores)


def self_paced_labels(scales: MultiScaleLabels, indep_threshold: Optional[float],
                      quantile: float = INDEP_QUANTILE) -> SelfPacedLabels:
    """One epoch's labels from its three labelings; a ``None`` threshold is computed from this epoch's
    clusters (the official epoch 0, lines 213-214) and returned in ``SelfPacedLabels.indep_threshold``."""
    scores = reliability_scores(scales.main, scales.tight, scales.loose)
    if indep_threshold is None:
        indep_threshold = independence_threshold(scores.cluster_r_indep, scores.cluster_sizes, quantile)
    return select_reliable(scores, indep_threshold)


class SelfPacedCriterion:
    """SpCL's per-epoch pseudo-labelling, with its one piece of state: the independence threshold.

    The official code fixes the threshold at epoch 0 (line 213) and keeps it; here it is fixed by the
    first epoch that has a multi-member cluster (epoch 0 whenever the official code runs) and must be saved
    with the training state (``state_dict``) so that a resumed run uses the same value.

    ``compute`` is pure (under DDP: ``r = comm.on_main(crit.compute, feats)`` on rank 0), ``adopt`` records
    the threshold on every rank; ``__call__`` does both.
    """

    def __init__(self, *, eps: float = 0.6, eps_gap: float = 0.02, min_samples: int = 4, k1: int = 30,
                 k2: int = 6, quantile: float = INDEP_QUANTILE, knn_backend: str = "auto") -> None:
        self.eps, self.eps_gap, self.min_samples = eps, eps_gap, min_samples
        self.k1, self.k2, self.quantile, self.knn_backend = k1, k2, quantile, knn_backend
        self.indep_threshold: Optional[float] = None
        self.fixed_at_epoch: Optional[int] = None

    def compute(self, features: Any) -> SelfPacedLabels:
        """Cluster the memory ``features`` (N×D) at three scales and select the reliable labels."""
        scales = multi_scale_dbscan(features, eps=self.eps, eps_gap=self.eps_gap, min_samples=self.min_samples,
                                    k1=self.k1, k2=self.k2, knn_backend=self.knn_backend)
        return self.labels_from(scales)

    def labels_from(self, scales: MultiScaleLabels) -> SelfPacedLabels:
        """:func:`self_paced_labels` with the current threshold (no state change)."""
        return self_paced_labels(scales, self.indep_threshold, self.quantile)

    def adopt(self, result: SelfPacedLabels, epoch: int) -> SelfPacedLabels:
        """Fix the threshold from ``result`` if it is not fixed yet; returns ``result``."""
        if self.indep_threshold is None and result.indep_threshold is not None:
            self.indep_threshold, self.fixed_at_epoch = result.indep_threshold, epoch
        return result

    def __call__(self, features: Any, epoch: int) -> SelfPacedLabels:
        return self.adopt(self.compute(features), epoch)

    def state_dict(self) -> Dict[str, Any]:
        return {"indep_threshold": self.indep_threshold, "fixed_at_epoch": self.fixed_at_epoch}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.indep_threshold = state.get("indep_threshold")
        self.fixed_at_epoch = state.get("fixed_at_epoch")
