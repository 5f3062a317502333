"""CACL's own parts: the grayscale view, the two-branch network, its two memories and its step's losses.

CACL (Li, Li, Guo, "Cluster-guided Asymmetric Contrastive Learning for Unsupervised Person
Re-Identification", TIP 2022; official code ``MingkunLishigure/CACL`` at c63a31b: ``SIC.py``,
``cacl/trainers.py`` class ``CACLSIC_USL``, ``cacl/models/hm.py``, ``cacl/models/resnet.py``) is the
method MaskCL grew from: MaskCL (SiCL ``Mask_CACLSIC_USL``) is CACL with the grayscale view replaced by
the person's mask, plus a fusion stream and the cluster-neighbour loss. Everything CACL computes that
MaskCL also computes is reused from the MaskCL port, unchanged:

============================================  ====================================================
CACL (official file:line at c63a31b)          here
============================================  ====================================================
gray view: Resize(bicubic) → Grayscale(3) →   :func:`gray_view_transform` = ``train_transform(...,
flip → Pad(10) → RandomCrop → ToTensor →      grayscale=True)``, the MaskCL mask transform, applied
Normalize → RandomErasing (``SIC.py`` 58-67)  to the RGB image (:class:`GrayPairSet`)
backbone, BN neck, projection head            ``ReIDBackbone`` and ``ProjectionHead``
(``models/resnet.py`` 33-34, 58-79, 87-119)   (identical to SiCL's ``models/resnet.py``)
two instance memories (``hm.py`` 9-59)        two ``InstanceMemory`` (class-mean prototypes, update
                                              entry ← m·entry + (1−m)·f, renormalised, in batch order)
focal prototype loss (``hm.py`` 119-141)      ``losses.prototype_focal_loss`` (γ 4, ε 1e-6)
asymmetric losses (``hm.py`` 116, 147-185)    ``losses.cross_view_loss`` on the gray memory
Jaccard + DBSCAN + refinement (``SIC.py``     ``clustering_step.cluster_epoch(refine=True,
185-280)                                      outliers="singleton")``
============================================  ====================================================

What differs from :class:`maskcl.models.maskcl_net.MaskCLNet`: no fusion module (CACL has no fusion
stream or memory), the second branch is called ``gray`` and sees the grayscale copy of the RGB image, not a
mask. The official gray model also builds and runs its own projection head, whose output
(``full_conect2``) is passed to the RGB memory and never read (``trainers.py`` 179, ``hm.py`` 113-114,
``back == 0``); it is not built here, as MaskCL's unused mask head is not (it changes no number: Adam
skips parameters without a gradient).

The step (``trainers.py`` 169-188, ``hm.py`` 66-185), all four terms with weight 1::

    loss = focal(f_rgb; M_rgb) + focal(f_gray; M_gray)
         − mean_b cos(g_rgb, sg(f_gray)) − mean_b cos(g_rgb, sg(centroid_{M_gray}(y_b)))

f = the L2-normalised BN-neck embedding of a branch, g_rgb = the RGB projection head's output,
sg = stop-gradient, y_b = the sample's pseudo-label (the same labels in both memories). The gray network is
trained only by its own focal term; the cross-view ("asymmetric") terms reach only the RGB network and its
projection head. After the backward pass M_rgb[i] is updated with f_rgb and M_gray[i] with f_gray (the
official update runs inside the memory's backward, ``hm.py`` 28-30, after the gradient is taken from the
memory as it was in the forward).

Docs for whoever wires the method into the engine: /work/notes/methods/cacl.md (the repository recipe,
the loop step by step, every difference from the MaskCL port and from the official code).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Sequence, Tuple

import torch
from torch import nn
from torch.utils.data import Dataset
from torchvision import transforms as T

from ..models.images import Key, load_rgb, seeded, split_key
from ..models.maskcl_net import ProjectionHead
from ..models.memory import InstanceMemory
from . import losses
from .clustering_step import EpochClusters, cluster_epoch
from .transforms import test_transform, train_transform

__all__ = ["CACL_RECIPE", "CACL_TERMS", "MEMORY_INITS", "GRAY_SEED_SALT", "CACLNet", "CACLOutput", "GrayPairSet",
           "gray_view_transform", "gray_memory_transform", "build_cacl_module", "cacl_terms",
           "update_memories", "cacl_pseudo_labels"]

#: The repository defaults (``SIC.py`` argparse, lines 354-406; ``create_model`` 104-108), as ``TrainSettings``
#: keys. ``features 0`` / ``norm True`` / ``dropout 0`` (the 2048-d BN-neck embedding, L2-normalised) and
#: ``min_samples 4`` (hard-coded, 195-197) are our backbone's and clustering's defaults. The refinement has no
#: switch in CACL: it always runs (227-280). Model selection, evaluation period (``--eval-step 5``) and the
#: GPU count are not training settings (notes: "Official quirks").
CACL_RECIPE: Dict[str, Any] = {
    "arch": "resnet50", "pretrained": "imagenet", "pooling": "avg", "last_stride": 1,
    "height": 256, "width": 128, "pad": 10, "erasing": 0.5,
    "epochs": 80, "iters": 400, "batch_size": 64, "num_instances": 4, "sampler_replacement": "official",
    "lr": 3.5e-4, "weight_decay": 5e-4, "step_size": 20, "gamma": 0.1,
    "temp": 0.05, "momentum": 0.2, "focal_gamma": 4.0, "softmax_eps": 1e-6,
    "eps": 0.6, "eps_gap": 0.02, "min_samples": 4, "k1": 30, "k2": 6, "refine": True, "ratio_cluster": 1.0,
    "memory_init": "official", "memory_refresh": False, "cluster_on": "rgb", "amp": "off",
}

#: The loss terms of one step, in the order they are logged.
CACL_TERMS = ("proto_rgb", "proto_gray", "crossview")

#: ``train.memory_init`` values: ``official`` initialises the gray memory from the gray network's features
#: of the *colour* images (``SIC.py`` 144-151: the cluster loader uses the test transform, no grayscale),
#: ``consistent`` from the grayscale images training feeds it.
MEMORY_INITS = ("official", "consistent")

#: XOR-ed into a sample's augmentation seed for its gray view, so the two views draw independently.
GRAY_SEED_SALT = 0x6AA7


# ---------------------------------------------------------------------------------------------- views
def gray_view_transform(size: Tuple[int, int], pad: int = 10, erasing: float = 0.5, flip: float = 0.5) -> T.Compose:
    """The official gray view of an RGB image (``SIC.py`` 58-67, ``train_transformer2``).

    Resize (bicubic) → Grayscale(3) → flip → pad → random crop → tensor → ImageNet normalise → random erasing
    filled with the ImageNet mean. Grayscale is torchvision's on a PIL image: PIL's ``convert("L")``,
    L = (19595·R + 38470·G + 7471·B + 2^15) >> 16 (ITU-R 601-2 luma in 16-bit fixed point, rounded),
    copied into 3 identical channels, made right after the resize and before every random operation. The
    normalisation then gives the three channels different values ((L/255 − mean_c)/std_c), and erasing
    writes the per-channel ImageNet means, so an erased patch is not gray. This is MaskCL's mask transform
    (``maskcl.training.transforms.train_transform(grayscale=True)``), reused.
    """
    return train_transform(size, pad=pad, erasing=erasing, grayscale=True, flip=flip)


def gray_memory_transform(size: Tuple[int, int], memory_init: str = "official") -> T.Compose:
    """The transform of the images the gray memory is initialised from (through the gray network).

    ``official`` (``SIC.py`` 144-151, ``evaluators.py`` 32-36): the test transform of the colour image, no
    grayscale, while training feeds the gray network grayscale images (the analogue of MaskCL's colour-mask
    initialisation, docs/training.md row 7); ``consistent``: the test transform with Grayscale(3).
    """
    if memory_init not in MEMORY_INITS:
        raise ValueError(f"train.memory_init must be one of {', '.join(MEMORY_INITS)}, got {memory_init!r}")
    return test_transform(size, grayscale=memory_init == "consistent")


class GrayPairSet(Dataset):
    """(RGB view, gray view, index) of one training image: CACL's ``Preprocessor`` (``preprocessor.py`` 24-37).

    The image is read once and both transforms are applied to it, each with its own random draws (the
    official ``transform1`` and ``transform2`` are independent, so the two views have different flips, crops
    and erasing): a key ``(index, seed)`` draws the RGB view from ``seed`` and the gray view from
    ``seed ^ GRAY_SEED_SALT``. ``same_draws=True`` uses one seed for both (the gray view is then the
    grayscale of the RGB view before normalisation and erasing): an ablation, not the official behaviour.
    The batch layout is :class:`maskcl.training.data.PairedImageSet`'s, so a method's ``step`` reads
    ``x_rgb, x_gray, idx`` as MaskCL reads ``x, x_mask, idx``.
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

    ``rgb`` and ``gray`` are :class:`maskcl.models.backbone.ReIDBackbone` s (or anything with ``dim``
    returning ``(normalised neck feature, pooled feature)`` in training mode). Both official models are
    ``models.create(arch, num_features=0, norm=True, dropout=0, num_classes=0)`` (``SIC.py`` 104-108, 136-137):
    ImageNet ResNet-50, last stride 1, average pooling, BN neck with frozen bias. The projection head is
    ``full_connect`` + ``full_bn`` + L2 on the pooled feature (``resnet.py`` 71-79, 115-117), bias of its BN
    frozen: :class:`maskcl.models.maskcl_net.ProjectionHead`. At test time only ``rgb`` runs
    (``SIC.py`` 153, 330).
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

    The official memories are two ``HybridMemory(2048, N, temp, momentum)`` (``SIC.py`` 139-142): N×D buffers,
    one entry per training image in sorted-path order, the same pseudo-labels in both (305-306). The keys
    follow MaskCL's module (``net``, ``mem_rgb``) so checkpoints and exports look alike.
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
      (``hm.py`` 116: ``contrasmemotyloss`` 161-185 and ``contrasloss`` 147-158, both on ``old_inputs =
      bn_x2`` detached and ``another_inputs = full_conect1``).

    focal(f; M) = mean_b −(1 − p_{y_b})^γ log(p_{y_b} + ε) with p = exp(s) / (Σ_k exp(s_k) + ε) and
    s_k = ⟨f, mean_{j: y_j = k} M_j⟩ / τ (``hm.py`` 92-110, 119-141: γ = 4, ε = 1e-6; the prototype is the mean
    of the class's memory entries, not normalised). The centroid of the asymmetric term is the same class mean
    of the gray memory, normalised in the cosine. ``gray_loss=False`` drops ``proto_gray`` and ``crossview=False``
    drops ``crossview`` (ablations; both are on in the official code).

    out : the network's output on the batch; targets : B pseudo-labels (contiguous, as the memories hold).
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

    The official update (``hm.py`` 28-30) runs in each memory's backward with that memory's input: the
    BN-neck embeddings ``bn_x1`` and ``bn_x2`` (never the projection); a repeated index is updated once per
    occurrence, in batch order. Under DDP pass the gathered global batch, in rank order.
    """
    mem_rgb.update(indices, f_rgb)
    mem_gray.update(indices, f_gray)


def cacl_pseudo_labels(rgb_memory: torch.Tensor, *, eps: float = 0.6, eps_gap: float = 0.02, min_samples: int = 4,
                       k1: int = 30, k2: int = 6, ratio: float = 1.0, knn_backend: str = "auto") -> EpochClusters:
    """One epoch's pseudo-labels: Jaccard + DBSCAN on the RGB memory, outliers as singletons, refinement.

    The official clustering (``SIC.py`` 185-280) is MaskCL's line for line (SiCL ``CMC.py`` 121-163 and
    280-343): k-reciprocal Jaccard (k1 30, k2 6) on ``memory1.features``, DBSCAN at eps and at eps − gap
    (min_samples 4), each noise sample a new label, the tight sub-cluster test with ``ratio_cluster``. In CACL
    the refinement has no switch (MaskCL's ``--cr``): it always runs. Labels come back contiguous (the
    official ones keep a gap where refinement empties a cluster; for CACL that changes nothing, since its only
    softmax masks empty classes out, ``hm.py`` 104-107).
    """
    return cluster_epoch(rgb_memory.detach().cpu().float(), eps=eps, eps_gap=eps_gap, min_samples=min_samples,
                         k1=k1, k2=k2, refine=True, ratio=ratio, outliers="singleton", knn_backend=knn_backend)

