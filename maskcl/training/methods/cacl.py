"""CACL: cluster-guided asymmetric contrastive learning between an RGB image and its grayscale copy.

Li, Li, Guo, "Cluster-guided Asymmetric Contrastive Learning for Unsupervised Person
Re-Identification", IEEE TIP 2022 (arXiv 2106.07846); official code MingkunLishigure/CACL at
``c63a31b`` (``SIC.py``; ``cacl/trainers.py`` class ``CACLSIC_USL``; ``cacl/models/hm.py``,
``resnet.py``). This module computes what the official step computes; docs/methods.md lists every
difference. Its facts (display name, switch, recipe, own keys): ``maskcl/methods/cacl.py``.

CACL is the method MaskCL grew from: MaskCL (SiCL ``Mask_CACLSIC_USL``) is CACL with the grayscale
view replaced by the person's mask, plus a fusion stream and the cluster-neighbour loss. Two
backbones without weight sharing: ``rgb`` sees the augmented RGB image, ``gray`` a grayscale copy of
the same image (``Grayscale(3)`` right after the resize, then flip, pad + crop, normalisation and
erasing drawn independently of the RGB view: ``SIC.py`` 46-67, ``preprocessor.py`` 24-37). Only
``rgb`` is exported and evaluated (``SIC.py`` 153, 330).

The method, per run and per epoch:

1. ``start`` (once): two instance memories, one entry per training image, filled from eval-mode
   features: the RGB memory through ``rgb``, the gray memory through ``gray`` from the *colour* test
   images (``memory_init: official``, ``SIC.py`` 144-151) or from their grayscale copies
   (``consistent``); never re-extracted unless ``memory_refresh``.
2. ``prepare_epoch``: cluster the RGB memory (``SIC.py`` 185-280) with Jaccard distances + DBSCAN
   (``eps``, ``min_samples``, ``k1``, ``k2``), outliers kept as singletons, always refined (a tight
   DBSCAN at ``eps - eps_gap`` and the sub-cluster test scaled by ``ratio_cluster``; CACL has no
   switch for it); both memories take the same labels (305-306).
3. ``step`` (``trainers.py`` 174-188, ``hm.py`` 66-185), all four terms with weight 1::

       loss = focal(f_rgb; M_rgb) + focal(f_gray; M_gray)
            - mean_b cos(g_rgb, sg(f_gray)) - mean_b cos(g_rgb, sg(centroid_{M_gray}(y_b)))

   f = a branch's L2-normalised BN-neck embedding, g_rgb = the RGB projection head on the pooled
   feature, sg = stop-gradient, y_b = the pseudo-label; focal(f; M) is the prototypical focal loss
   over the class means of M (logits divided by ``temp``, exponent ``focal_gamma``, ``softmax_eps``
   in the softmax denominator and the log). The gray network learns only from its focal term; the
   "asymmetric" terms reach only the RGB network and its projection head.
4. ``after_step``: M_rgb[i] takes f_rgb and M_gray[i] takes f_gray with momentum ``momentum``, sample
   by sample in (global) batch order (``hm.py`` 28-30; officially inside the memory's backward, after
   the gradient was taken from the memory as it was, which is the same).

The shared pieces are importable parts: the memories (``maskcl.models.memory``), the focal and
cross-view losses (``maskcl.training.losses``), the projection head
(``maskcl.models.maskcl_net.ProjectionHead``), the clustering step
(``maskcl.training.clustering_step``) and the grayscale training transform (MaskCL's mask transform).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Sequence, Tuple

import torch
from torch import nn
from torch.utils.data import Dataset
from torchvision import transforms as T

from ...errors import ConfigError
from ...methods.cacl import CACL
from ...models.backbone import ReIDBackbone
from ...models.bn_groups import convert_bn_groups
from ...models.images import Key, load_rgb, seeded, split_key
from ...models.maskcl_net import ProjectionHead
from ...models.memory import InstanceMemory
from .. import losses
from ..clustering_step import EpochClusters, cluster_epoch, label_stats
from ..data import TrainData
from ..settings import TrainSettings
from ..batches import View
from ..transforms import test_transform, train_transform
from .base import MethodBase, backbone_of, register_method

__all__ = ["CACLMethod", "CACLNet", "CACLOutput", "GrayPairSet", "CACL_TERMS", "MEMORY_INITS", "GRAY_SEED_SALT",
           "gray_view_transform", "gray_memory_transform", "build_cacl_module", "cacl_terms", "update_memories",
           "cacl_pseudo_labels"]

#: The loss terms of one step, in the order they are logged.
CACL_TERMS = ("proto_rgb", "proto_gray", "crossview")

#: ``train.memory_init`` values: ``official`` fills the gray memory from the gray network's features of the
#: *colour* images (``SIC.py`` 144-151: the cluster loader uses the test transform, no grayscale),
#: ``consistent`` from the grayscale images training feeds it.
MEMORY_INITS = ("official", "consistent")

#: XOR-ed into a sample's augmentation seed for its gray view, so the two views draw independently.
GRAY_SEED_SALT = 0x6AA7


# ---------------------------------------------------------------------------------------------- views
def gray_view_transform(size: Tuple[int, int], pad: int = 10, erasing: float = 0.5, flip: float = 0.5) -> T.Compose:
    """The official gray view of an RGB image (``SIC.py`` 58-67, ``train_transformer2``).

    Resize (bicubic) → Grayscale(3) → flip → pad → random crop → tensor → ImageNet normalise → random erasing
    filled with the ImageNet mean. Grayscale is torchvision's on a PIL image: PIL's ``convert("L")``,
    L = (19595·R + 38470·G + 7471·B + 2^15) >> 16, copied into 3 channels, made right after the resize and
    before every random operation; the normalisation then gives the three channels different values, and
    erasing writes the per-channel ImageNet means. This is MaskCL's mask transform, reused.
    """
    return train_transform(size, pad=pad, erasing=erasing, grayscale=True, flip=flip)


def gray_memory_transform(size: Tuple[int, int], memory_init: str = "official") -> T.Compose:
    """The transform of the images the gray memory is initialised from (through the gray network).

    ``official`` (``SIC.py`` 144-151, ``evaluators.py`` 32-36): the test transform of the colour image, no
    grayscale, while training feeds the gray network grayscale images; ``consistent``: with Grayscale(3).
    """
    if memory_init not in MEMORY_INITS:
        raise ValueError(f"train.memory_init must be one of {', '.join(MEMORY_INITS)}, got {memory_init!r}")
    return test_transform(size, grayscale=memory_init == "consistent")


class GrayPairSet(Dataset):
    """(RGB view, gray view, index) of one training image: CACL's ``Preprocessor`` (``preprocessor.py`` 24-37).

    The image is read once and both transforms are applied to it, each with its own random draws (the
    official ``transform1`` and ``transform2`` are independent): a key ``(index, seed)`` draws the RGB view
    from ``seed`` and the gray view from ``seed ^ GRAY_SEED_SALT``, so a view does not depend on the worker
    or rank loading it. ``same_draws=True`` uses one seed for both (the gray view is then the grayscale of
    the RGB view): an ablation, not the official behaviour, and not a training setting.
    """

    def __init__(self, paths: Sequence[str], rgb_transform: Callable, gray_transform: Callable, *,
                 same_draws: bool = False, reader: Callable[[str], Any] = load_rgb) -> None:
        self.paths = [str(p) for p in paths]
        self.rgb_transform = rgb_transform
        self.gray_transform = gray_transform
        self.same_draws = same_draws
        self.reader = reader

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: Key) -> Tuple[torch.Tensor, torch.Tensor, int]:
        i, seed = split_key(key)
        img = self.reader(self.paths[i])
        if seed is None:
            return self.rgb_transform(img), self.gray_transform(img), i
        gray_seed = seed if self.same_draws else seed ^ GRAY_SEED_SALT
        return seeded(self.rgb_transform, img, seed), seeded(self.gray_transform, img, gray_seed), i


# ---------------------------------------------------------------------------------------------- network
@dataclass
class CACLOutput:
    f_rgb: torch.Tensor   # B×D normalised RGB embedding (BN neck): focal loss, RGB memory update, test feature
    g_rgb: torch.Tensor   # B×D normalised RGB projection (the student of the asymmetric terms)
    f_gray: torch.Tensor  # B×D normalised gray embedding: focal loss, gray memory update, asymmetric target


class CACLNet(nn.Module):
    """The RGB and gray branches (two backbones, no weight sharing) and the RGB projection head.

    Both official models are ``models.create(arch, num_features=0, norm=True, dropout=0, num_classes=0)``
    (``SIC.py`` 104-108, 136-137): ImageNet ResNet-50, last stride 1, average pooling, BN neck with frozen
    bias. The projection head is ``full_connect`` + ``full_bn`` + L2 on the pooled feature (``resnet.py``
    71-79, 115-117), its BN bias frozen. The gray model's own head (``full_conect2``, passed to the RGB
    memory and never read: ``trainers.py`` 179, ``hm.py`` 113-114) is not built.
    """

    def __init__(self, rgb: nn.Module, gray: nn.Module) -> None:
        super().__init__()
        if rgb.dim != gray.dim:
            raise ValueError("both branches must have the same feature dimension")
        self.rgb = rgb
        self.gray = gray
        self.dim = rgb.dim
        self.proj_rgb = ProjectionHead(self.dim)

    def forward(self, x_rgb: torch.Tensor, x_gray: torch.Tensor) -> CACLOutput:
        f_r, pooled_r = self.rgb(x_rgb)
        f_g, _ = self.gray(x_gray)
        return CACLOutput(f_rgb=f_r, g_rgb=self.proj_rgb(pooled_r), f_gray=f_g)


def build_cacl_module(rgb: nn.Module, gray: nn.Module, num_samples: int, temp: float = 0.05,
                      momentum: float = 0.2) -> nn.ModuleDict:
    """Everything a CACL run trains and checkpoints: ``net`` and the memories ``mem_rgb``, ``mem_gray``.

    The official memories are two ``HybridMemory(2048, N, temp, momentum)`` (``SIC.py`` 139-142): N×D
    buffers, one entry per training image in sorted-path order, the same pseudo-labels in both (305-306).
    """
    net = CACLNet(rgb, gray)
    return nn.ModuleDict({
        "net": net,
        "mem_rgb": InstanceMemory(num_samples, net.dim, temp, momentum),
        "mem_gray": InstanceMemory(num_samples, net.dim, temp, momentum),
    })


# ---------------------------------------------------------------------------------------------- step
def cacl_terms(out: CACLOutput, mem_rgb: InstanceMemory, mem_gray: InstanceMemory, targets: torch.Tensor, *,
               focal_gamma: float = 4.0, softmax_eps: float = 1e-6, gray_loss: bool = True,
               crossview: bool = True) -> Dict[str, torch.Tensor]:
    """The loss terms of one CACL step (their sum is the loss), before any memory update.

    - ``proto_rgb`` = focal(f_rgb; M_rgb) (``trainers.py`` 179, ``hm.py`` 113-114, ``back == 0``);
    - ``proto_gray`` = focal(f_gray; M_gray) (``trainers.py`` 181, ``hm.py`` 116, first summand);
    - ``crossview`` = −mean cos(g_rgb, sg(centroid_{M_gray}(y))) − mean cos(g_rgb, sg(f_gray))
      (``hm.py`` 116: ``contrasmemotyloss`` 161-185 and ``contrasloss`` 147-158).

    focal(f; M) = mean_b −(1 − p_{y_b})^γ log(p_{y_b} + ε), p = exp(s) / (Σ_k exp(s_k) + ε),
    s_k = ⟨f, mean_{j: y_j = k} M_j⟩ / τ (``hm.py`` 92-110, 119-141). Every term is a batch mean, so DDP's
    gradient average is the global batch's gradient. ``gray_loss`` and ``crossview`` drop their terms, to
    isolate them in tests; the method always runs all of them, as the official code does.
    """
    terms: Dict[str, torch.Tensor] = {}
    f_rgb, f_gray = out.f_rgb.float(), out.f_gray.float()
    terms["proto_rgb"] = losses.prototype_focal_loss(mem_rgb.class_logits(f_rgb), targets, focal_gamma,
                                                     eps=softmax_eps)
    if gray_loss:
        terms["proto_gray"] = losses.prototype_focal_loss(mem_gray.class_logits(f_gray), targets, focal_gamma,
                                                          eps=softmax_eps)
    if crossview:
        centroids = mem_gray.centroids()[targets]  # B×D, no gradient (buffers)
        terms["crossview"] = losses.cross_view_loss(out.g_rgb.float(), f_gray, centroids)
    return terms


@torch.no_grad()
def update_memories(mem_rgb: InstanceMemory, mem_gray: InstanceMemory, indices: torch.Tensor,
                    f_rgb: torch.Tensor, f_gray: torch.Tensor) -> None:
    """M_rgb[i] ← normalise(m·M_rgb[i] + (1−m)·f_rgb), M_gray[i] likewise with f_gray, sample by sample.

    Each memory takes its own branch's BN-neck embedding (``bn_x1``, ``bn_x2``; never the projection); a
    repeated index is updated once per occurrence, in batch order (``hm.py`` 28-30).
    """
    mem_rgb.update(indices, f_rgb)
    mem_gray.update(indices, f_gray)


def cacl_pseudo_labels(rgb_memory: torch.Tensor, *, eps: float = 0.6, eps_gap: float = 0.02, min_samples: int = 4,
                       k1: int = 30, k2: int = 6, ratio: float = 1.0, knn_backend: str = "auto") -> EpochClusters:
    """One epoch's pseudo-labels: Jaccard + DBSCAN on the RGB memory, outliers as singletons, refinement.

    The official clustering (``SIC.py`` 185-280) is MaskCL's line for line, with the refinement always on.
    Labels come back contiguous (the official ones keep a gap where refinement empties a cluster; CACL's only
    softmax masks empty classes out, ``hm.py`` 104-107, so the losses are the same).
    """
    return cluster_epoch(rgb_memory.detach().cpu().float(), eps=eps, eps_gap=eps_gap, min_samples=min_samples,
                         k1=k1, k2=k2, refine=True, ratio=ratio, outliers="singleton", knn_backend=knn_backend)


# ---------------------------------------------------------------------------------------------- method
@register_method(CACL)
class CACLMethod(MethodBase):
    """RGB + gray branches, two instance memories, asymmetric terms into the RGB branch (module docstring)."""

    def __init__(self, settings: TrainSettings, data: TrainData, device: torch.device, **kw: Any) -> None:
        super().__init__(settings, data, device, **kw)
        if not 0.0 < settings.eps - settings.eps_gap:  # the start-up check covers only a `refine` switch's owner
            raise ConfigError(f"train.eps_gap ({settings.eps_gap}) must be smaller than train.eps ({settings.eps}): "
                              f"CACL's refinement always runs its tight DBSCAN at eps - eps_gap, which must be > 0")
        gray_memory_transform(self.size, settings.memory_init)  # an unknown memory_init fails here, not at start
        self.module = build_cacl_module(backbone_of(settings), backbone_of(settings), len(data), settings.temp,
                                        settings.momentum)
        convert_bn_groups(self.module["net"], settings.bn_groups)
        self._to_device(self.module)
        self._labels_dev = torch.zeros(0, dtype=torch.long)

    @property
    def net(self) -> CACLNet:
        return self.module["net"]  # type: ignore[return-value]

    def rgb_backbone(self) -> ReIDBackbone:
        return self.net.rgb

    def dataset(self) -> Dataset:
        s = self.s
        return GrayPairSet(self.data.paths, train_transform(self.size, pad=s.pad, erasing=s.erasing),
                           gray_view_transform(self.size, pad=s.pad, erasing=s.erasing))

    def views(self) -> Tuple[View, ...]:
        s = self.s
        return (View("image", pad=s.pad, erasing=s.erasing),
                View("image", grayscale=True, salt=GRAY_SEED_SALT, pad=s.pad, erasing=s.erasing))

    @torch.no_grad()
    def start(self) -> None:
        """Fill both memories once from eval-mode features (``SIC.py`` 144-151): the RGB memory through the
        RGB network, the gray memory through the gray network from the colour images (``memory_init:
        official``) or from their grayscale copies (``consistent``)."""
        self.module["mem_rgb"].init_features(self._extract_rgb(self.net.rgb))
        self.module["mem_gray"].init_features(self._extract(self.net.gray, self.data.paths,
                                                            grayscale=self.s.memory_init == "consistent"))

    def prepare_epoch(self, epoch: int) -> Dict[str, Any]:
        s = self.s
        if s.memory_refresh and epoch > 0:  # a switch: re-extract instead of trusting the momentum memories
            self.start()
        clusters: EpochClusters = self.comm.on_main(  # rank 0 clusters, every rank gets the result
            cacl_pseudo_labels, self.module["mem_rgb"].features.detach().cpu().float(), eps=s.eps,
            eps_gap=s.eps_gap, min_samples=s.min_samples, k1=s.k1, k2=s.k2, ratio=s.ratio_cluster,
            knn_backend=s.knn_backend)
        self.labels = clusters.labels
        labels_t = torch.as_tensor(self.labels, dtype=torch.long)
        for key in ("mem_rgb", "mem_gray"):
            self.module[key].set_labels(labels_t)
        self._labels_dev = labels_t.to(self.device)
        stats = clusters.stats()
        stats.update(label_stats(self.labels, self.data.pids, self.data.clothes))
        return stats

    def step(self, batch: Tuple[torch.Tensor, ...]) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        s = self.s
        x, x_gray, idx = batch
        idx = idx.to(self.device)
        out: CACLOutput = self.comm.forward(self.net, self._input(x), self._input(x_gray))
        terms = cacl_terms(out, self.module["mem_rgb"], self.module["mem_gray"], self._labels_dev[idx],
                           focal_gamma=s.focal_gamma, softmax_eps=s.softmax_eps)
        self._last = (idx, out.f_rgb.detach().float(), out.f_gray.detach().float())
        return torch.stack(list(terms.values())).sum(), terms

    @torch.no_grad()
    def after_step(self) -> None:
        # the whole (global) batch in batch order, so every rank's memories get the same updates
        idx, f_rgb, f_gray = self.comm.gather(*self._last)
        update_memories(self.module["mem_rgb"], self.module["mem_gray"], idx, f_rgb, f_gray)
        self._last = None

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        super().load_extra_state(state)
        self._labels_dev = torch.as_tensor(self.labels, dtype=torch.long, device=self.device)
