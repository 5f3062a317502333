"""MaskCL: unsupervised clothes-changing re-identification, contrastive learning driven by semantic masks.

Li et al., "MaskCL: Semantic Mask-Driven Contrastive Learning for Unsupervised Person
Re-Identification with Clothes Change", arXiv 2305.13600; official code MingkunLishigure/SiCL.
This module computes what the official step computes (docs/training.md lists every difference).
Its facts (display name, component switches and their official values): ``maskcl/methods/maskcl.py``.

The method, per run and per epoch:

1. ``start`` (once): three instance memories, one feature per training image for the RGB, the mask
   and the fused stream, filled from eval-mode features (``memory_init``) and never re-extracted
   unless ``memory_refresh``.
2. ``prepare_epoch``: cluster one memory (``cluster_on``: rgb, fused, or both concatenated) with
   Jaccard distances + DBSCAN (``eps``, ``min_samples``, ``k1``, ``k2``), outliers kept as
   singletons, optionally refined (``refine``: a tight DBSCAN at ``eps - eps_gap`` and a sub-cluster
   test); each cluster's nearest clusters by the fused memory's centroids, their number k growing
   over the schedule (``allknn``; none without ``neighbour_loss``).
3. ``step``: the two-branch network (``MaskCLNet``: an RGB and a mask backbone, fused) scores each
   stream against its memory's clusters; the loss sums a prototypical focal loss per stream
   (``focal_gamma``; the mask stream with ``mask_loss``, the fused one with ``fusion_loss``), the
   cluster-neighbour loss on RGB and mask, each neighbour gated by a Bernoulli draw of its weight
   (``neighbour_weights``, ``neighbour_reduction``), and the two cross-view losses pulling the RGB
   branch's projection towards the (detached) mask feature and its mask cluster's centroid
   (``crossview_loss``).
4. ``after_step``: every memory takes the whole batch's features with momentum ``momentum``.

Logits are divided by ``temp``; the shared pieces are importable parts: the memories
(``maskcl.models.memory``), the losses (``maskcl.training.losses``), the clustering step
(``maskcl.training.clustering_step``) and the neighbours (``maskcl.training.neighbours``).
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch
from torch import nn
from torch.utils.data import Dataset

from ...masks.index import mask_fix
from ...methods.maskcl import MASKCL
from ...models.backbone import ReIDBackbone
from ...models.bn_groups import convert_bn_groups
from ...models.maskcl_net import MaskCLNet
from ...models.memory import InstanceMemory
from .. import losses
from ..clustering_step import EpochClusters, cluster_epoch, label_stats, neighbour_precision
from ..data import MASK_SEED_SALT, PairedImageSet, TrainData
from ..neighbours import centroid_neighbours, curriculum_k
from ..settings import TrainSettings
from ..batches import View
from ..transforms import train_transform
from .base import MethodBase, backbone_of, register_method

__all__ = ["MaskCLMethod"]


@register_method(MASKCL)
class MaskCLMethod(MethodBase):
    """RGB + mask branches, three instance memories, clusters and their neighbours (see the module docstring)."""

    def __init__(self, settings: TrainSettings, data: TrainData, device: torch.device, **kw: Any) -> None:
        super().__init__(settings, data, device, **kw)
        if not data.mask_paths:
            raise ValueError(f"{self.facts.name} needs a mask for every training image")
        net = MaskCLNet(backbone_of(settings), backbone_of(settings))
        convert_bn_groups(net, settings.bn_groups)
        n, d = len(data), net.dim
        self.module = nn.ModuleDict({
            "net": net,
            "mem_rgb": InstanceMemory(n, d, settings.temp, settings.momentum),
            "mem_mask": InstanceMemory(n, d, settings.temp, settings.momentum),
            "mem_fused": InstanceMemory(n, d, settings.temp, settings.momentum),
        })
        self._to_device(self.module)
        self.k_epoch = 0
        self.nbr_idx = torch.zeros(0, 0, dtype=torch.long)
        self.nbr_sim = torch.zeros(0, 0)
        self._labels_dev = torch.zeros(0, dtype=torch.long)

    @property
    def net(self) -> MaskCLNet:
        return self.module["net"]  # type: ignore[return-value]

    def rgb_backbone(self) -> ReIDBackbone:
        return self.net.rgb

    def export(self) -> Dict[str, Any]:
        out = super().export()
        out["mask_state_dict"] = {k: v.detach().cpu() for k, v in self.net.mask.state_dict().items()}
        return out

    def dataset(self) -> Dataset:
        s = self.s
        return PairedImageSet(self.data.paths, self.data.mask_paths,
                              train_transform(self.size, pad=s.pad, erasing=s.erasing),
                              train_transform(self.size, pad=s.pad, erasing=s.erasing, grayscale=True),
                              kind=self.data.mask_kind, fix=mask_fix(self.data.mask_index))

    def views(self) -> Tuple[View, ...]:
        s = self.s
        return (View("image", pad=s.pad, erasing=s.erasing),
                View("mask", grayscale=True, salt=MASK_SEED_SALT, pad=s.pad, erasing=s.erasing))

    @torch.no_grad()
    def start(self) -> None:
        """Initialise the three memories once from eval-mode features (never re-extracted).

        ``memory_init: official`` does what ``CMC.py`` lines 242-253 do: the mask memory from the masks
        through the test transform (no grayscale, unlike training) and the fusion memory from the *RGB*
        features; ``consistent`` feeds the mask memory grayscale masks, as training does, and the fusion
        memory fused features.
        """
        net = self.net
        official = self.s.memory_init == "official"
        f_r = self._extract_rgb(net.rgb)
        f_m = self._extract(net.mask, self.data.mask_paths, grayscale=not official, reader=self.data.mask_reader())
        if official:
            f_f = f_r
        else:
            net.fusion.eval()
            f_f = net.fusion(f_r.to(self.device), f_m.to(self.device)).cpu()
        self.module["mem_rgb"].init_features(f_r)
        self.module["mem_mask"].init_features(f_m)
        self.module["mem_fused"].init_features(f_f)

    def _cluster_features(self) -> torch.Tensor:
        mem = self.module
        if self.s.cluster_on == "rgb":
            return mem["mem_rgb"].features
        if self.s.cluster_on == "fused":
            return mem["mem_fused"].features
        if self.s.cluster_on == "concat":
            return torch.nn.functional.normalize(
                torch.cat([mem["mem_rgb"].features, mem["mem_mask"].features], dim=1), dim=1)
        raise ValueError(f"train.cluster_on must be rgb, fused or concat, got {self.s.cluster_on!r}")

    def prepare_epoch(self, epoch: int) -> Dict[str, Any]:
        s = self.s
        if s.memory_refresh and epoch > 0:  # optional: re-extract instead of trusting the momentum memory
            self.start()
        clusters: EpochClusters = self.comm.on_main(  # rank 0 clusters, every rank gets the result
            cluster_epoch, self._cluster_features().detach().cpu().float(), eps=s.eps, eps_gap=s.eps_gap,
            min_samples=s.min_samples, k1=s.k1, k2=s.k2, refine=s.refine, ratio=s.ratio_cluster,
            outliers="singleton", knn_backend=s.knn_backend)
        self.labels = clusters.labels
        labels_t = torch.as_tensor(self.labels, dtype=torch.long)
        for key in ("mem_rgb", "mem_mask", "mem_fused"):
            self.module[key].set_labels(labels_t)
        self._labels_dev = labels_t.to(self.device)
        self.k_epoch = curriculum_k(s.allknn, epoch, s.epochs) if s.neighbour_loss else 0
        if self.k_epoch > 0:
            cents = self.module["mem_fused"].centroids()
            self.nbr_idx, self.nbr_sim = centroid_neighbours(cents, self.k_epoch, weights=s.neighbour_weights)
        stats = clusters.stats()
        stats["neighbours_k"] = self.k_epoch
        stats.update(label_stats(self.labels, self.data.pids, self.data.clothes))
        if self.k_epoch > 0:  # does the neighbour structure link clusters of the same person? (logging only)
            stats["nbr_precision_id"] = neighbour_precision(self.labels, self.nbr_idx, self.data.pids)
            stats["nbr_precision_clothes"] = neighbour_precision(self.labels, self.nbr_idx, self.data.clothes)
        return stats

    def step(self, batch: Tuple[torch.Tensor, ...]) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        s = self.s
        x, xm, idx = batch
        idx = idx.to(self.device)
        self._gate_draws: List[int] = []
        out = self.comm.forward(self.net, self._input(x), self._input(xm))
        y = self._labels_dev[idx]
        terms: Dict[str, torch.Tensor] = {}
        feats = {"rgb": out.f_rgb.float(), "mask": out.f_mask.float(), "fused": out.f_fused.float()}
        streams = ["rgb"] + (["mask"] if s.mask_loss or s.crossview_loss else []) + (
            ["fused"] if s.fusion_loss else [])
        for stream in streams:
            mem: InstanceMemory = self.module[f"mem_{stream}"]  # type: ignore[assignment]
            logits = mem.class_logits(feats[stream])
            if stream != "mask" or s.mask_loss:
                terms[f"proto_{stream}"] = losses.prototype_focal_loss(logits, y, s.focal_gamma, eps=s.softmax_eps)
                if self.k_epoch > 0 and stream in ("rgb", "mask"):
                    nb, w = self.nbr_idx[y], self.nbr_sim[y]
                    gates, rank_w = self._gates(w)
                    terms[f"nbr_{stream}"] = losses.neighbour_loss(
                        logits, nb, w, gates, reduction=s.neighbour_reduction, eps=s.softmax_eps,
                        rank_weights=rank_w)
            if stream == "mask" and s.crossview_loss:
                cents = mem.centroids()[y]
                terms["crossview"] = losses.cross_view_loss(out.g_rgb.float(), feats["mask"], cents)
        total = torch.stack(list(terms.values())).sum()
        self._last = (idx, feats)
        return total, terms

    def _gates(self, w: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Bernoulli(w) gates drawn for the global batch from a generator seeded per step, then this
        process's rows kept (identical on every layout: one process or DDP ranks), and the official
        reduction's per-rank factors mean_b(w·d) over the global batch.

        The probability is w clamped to [0, 1]: the official ``torch.bernoulli`` (``hm.py`` line 107)
        raises on a negative weight, which its dot-product weights allow."""
        gen = torch.Generator().manual_seed(self.step_seed + len(self._gate_draws))
        self._gate_draws.append(1)
        w_all = self.comm.gather(w.detach().float())[0].cpu()
        gates = torch.bernoulli(w_all.clamp(0.0, 1.0), generator=gen)
        rank_w = losses.neighbour_rank_weights(w_all, gates)
        return self.comm.local_part(gates).to(w.device), rank_w.to(w.device)

    @torch.no_grad()
    def after_step(self) -> None:
        idx, feats = self._last
        streams = ("rgb", "mask", "fused")
        # the whole (global) batch in batch order, so every rank's memories get the same updates
        idx, *fs = self.comm.gather(idx, *(feats[k].detach() for k in streams))
        for stream, f in zip(streams, fs):
            self.module[f"mem_{stream}"].update(idx, f)
        self._last = None

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        super().load_extra_state(state)
        self._labels_dev = torch.as_tensor(self.labels, dtype=torch.long, device=self.device)
