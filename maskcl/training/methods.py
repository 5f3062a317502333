"""The training methods sharing one engine, and the untrained reference.

- ``maskcl``: RGB + mask branches, fusion, three instance memories, per-epoch clustering of a memory
  with refinement, cluster-neighbour structure from fusion centroids, prototypical focal, neighbour and
  cross-view losses (Li et al., arXiv 2305.13600; official code MingkunLishigure/SiCL).
- ``clustercontrast``: RGB only; features re-extracted every epoch, Jaccard + DBSCAN, outliers dropped,
  cluster memory initialised from centroids, cross-entropy over it (Dai et al., arXiv 2103.11568).
- ``supervised``: the ClusterContrast loop with the true identity labels instead of clusters — an
  upper bound, always labelled as supervised.
- ``untrained``: the initial network (random weights, or the shared self-supervised warm-up) exported
  without a training step — the reference row every method's gain is measured against.

Each method owns ``module`` (everything trainable plus memory buffers, saved in checkpoints) and
implements ``start`` (once, on a fresh run), ``prepare_epoch`` (pseudo-labels), ``step`` (loss) and
``after_step`` (memory updates). The process layout reaches a method as ``comm``
(``maskcl.training.comm``); the training split as ``TrainData`` (``maskcl.training.data``).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..models.backbone import ReIDBackbone, build_backbone
from ..models.bn_groups import convert_bn_groups
from ..masks.index import mask_fix
from ..models.images import ImageSet, load_rgb
from ..models.maskcl_net import MaskCLNet
from ..models.memory import ClusterMemory, InstanceMemory
from ..registry import Registry
from . import losses
from .clustering_step import EpochClusters, cluster_epoch, label_stats, neighbour_precision
from .comm import LocalComm
from .data import PairedImageSet, TrainData
from .neighbours import centroid_neighbours, curriculum_k
from .settings import TrainSettings
from .transforms import test_transform, train_transform

__all__ = ["METHODS", "MaskCLMethod", "ClusterContrastMethod", "SupervisedMethod", "UntrainedMethod"]

log = logging.getLogger(__name__)

METHODS = Registry("method")


def _backbone(s: TrainSettings) -> ReIDBackbone:
    return build_backbone(s.arch, pretrained=s.pretrained, last_stride=s.last_stride, pooling=s.pooling)


class _Base:
    name = ""
    uses_masks = False
    trains = True  # False: the engine exports the initial weights without an epoch (the untrained reference)

    def __init__(self, settings: TrainSettings, data: TrainData, device: torch.device,
                 batch_size_eval: int = 128) -> None:
        self.s = settings
        self.data = data
        self.device = device
        self.size = (settings.height, settings.width)
        self.eval_batch = batch_size_eval
        self.labels: np.ndarray = np.zeros(len(data), dtype=np.int64)
        self.module: nn.Module
        self.step_seed = 0  # set by the engine before every step
        self.comm = LocalComm()  # process layout; the engine gives each DDP rank its own (maskcl.training.comm)

    # hooks --------------------------------------------------------------------------------------
    def start(self) -> None:
        """One-time initialisation on a fresh run (not on resume)."""

    def extra_state(self) -> Dict[str, Any]:
        return {"labels": torch.as_tensor(self.labels)}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        self.labels = state["labels"].numpy()

    def load_module_state(self, state: Dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)

    def _to_device(self, m: nn.Module) -> nn.Module:
        m = m.to(self.device)
        if self.device.type == "cuda" and self.s.channels_last in ("auto", "on"):
            m = m.to(memory_format=torch.channels_last)
        return m

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.device.type == "cuda" and self.s.channels_last in ("auto", "on"):
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def rgb_backbone(self) -> ReIDBackbone:
        raise NotImplementedError

    def export(self) -> Dict[str, Any]:
        """Content of ``model.pt`` beyond what the engine adds."""
        return {"state_dict": {k: v.detach().cpu() for k, v in self.rgb_backbone().state_dict().items()}}

    def _extract(self, net: nn.Module, paths: Sequence[str], grayscale: bool = False,
                 reader: Callable[[str], Any] = load_rgb) -> torch.Tensor:
        """Raw (not normalised) eval-mode features of ``paths`` through the process layout's extractor."""
        return self.comm.extract(net, paths, test_transform(self.size, grayscale=grayscale),
                                 batch_size=self.eval_batch, device=self.device, num_workers=self.s.workers,
                                 channels_last=self.s.channels_last, normalize=False, reader=reader,
                                 log_summary=False)

    def _extract_rgb(self, net: nn.Module) -> torch.Tensor:
        return self._extract(net, self.data.paths)


# ------------------------------------------------------------------------------------------------
class MaskCLMethod(_Base):
    name = "maskcl"
    uses_masks = True

    def __init__(self, settings: TrainSettings, data: TrainData, device: torch.device, **kw: Any) -> None:
        super().__init__(settings, data, device, **kw)
        if not data.mask_paths:
            raise ValueError("maskcl needs a mask for every training image")
        net = MaskCLNet(_backbone(settings), _backbone(settings))
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


# ------------------------------------------------------------------------------------------------
class ClusterContrastMethod(_Base):
    name = "clustercontrast"

    def __init__(self, settings: TrainSettings, data: TrainData, device: torch.device, **kw: Any) -> None:
        super().__init__(settings, data, device, **kw)
        net = _backbone(settings)
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


class SupervisedMethod(ClusterContrastMethod):
    """Upper bound: the ClusterContrast loop with ground-truth identities as the 'clusters'."""

    name = "supervised"

    def _epoch_labels(self, feats: torch.Tensor) -> Tuple[np.ndarray, Dict[str, Any]]:
        _, labels = np.unique(self.data.pids, return_inverse=True)
        labels = labels.astype(np.int64)
        return labels, {"clusters": int(labels.max()) + 1, "outliers": 0, "singletons": 0}


class UntrainedMethod(_Base):
    """Reference: the network as every method starts it (same ``pretrained``, arch, pooling), never trained.

    Its row says what the initialisation alone scores, so a method's gain over it is visible; with
    ``pretrained: ssl`` it is the shared warm-up every method and the supervised bound start from.
    """

    name = "untrained"
    trains = False

    def __init__(self, settings: TrainSettings, data: TrainData, device: torch.device, **kw: Any) -> None:
        super().__init__(settings, data, device, **kw)
        self.module = nn.ModuleDict({"net": _backbone(settings)})
        self._to_device(self.module)

    def rgb_backbone(self) -> ReIDBackbone:
        return self.module["net"]  # type: ignore[return-value]


METHODS.register("maskcl", MaskCLMethod)
METHODS.register("clustercontrast", ClusterContrastMethod)
METHODS.register("supervised", SupervisedMethod)
METHODS.register("untrained", UntrainedMethod)
