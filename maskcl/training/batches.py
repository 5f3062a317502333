"""Decoded once, augmented in batches: the same training batches as the per-sample path, bit for bit.

The per-sample path (``ImageSet`` / ``PairedImageSet`` / CACL's ``GrayPairSet`` in DataLoader workers)
decodes every image, resizes it and augments it one sample at a time, each sample's random draws taken
under ``seeded(transform, img, seed)``. Everything before the first random operation (decoding, the
bicubic resize, the grayscale) is deterministic, so it is done once at the start of a run into a uint8
cache (:class:`DecodedImages`); everything after it (flip, pad, crop, scaling to [0, 1], normalisation,
erasing with fixed values) is exact on integers and floats, so it is applied to a whole batch at once
(:func:`augment`) with each sample's draws replayed from its own seed in the per-sample order
(:func:`draw`). The batches are then equal to the per-sample path's, bit for bit (tests/test_batches.py),
and with them every number.

A method declares its batch as a tuple of :class:`View` (``MethodBase.views``); the batch is
``(*one tensor per view, indices)``, the collated per-sample batch.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from ..models.images import Key, load_rgb, split_key
from .transforms import IMAGENET_MEAN, IMAGENET_STD, RandomErasingMean

__all__ = ["View", "Draw", "DecodedImages", "CachedEval", "draw", "augment", "gray", "cache_rule", "BatchMaker"]

log = logging.getLogger(__name__)

#: The decoded cache may take at most this share of the memory available where it would live.
CACHE_SHARE = 0.5


@dataclass(frozen=True)
class View:
    """One tensor of a training batch: which cached source, grayscale or not, and its augmentation.

    ``salt``: the view draws from ``seed ^ salt`` (MaskCL's mask view ``0x5EED``, CACL's gray view
    ``GRAY_SEED_SALT``), exactly as the per-sample datasets do.
    """

    source: str = "image"      # "image" (the training images) or "mask" (their masks)
    grayscale: bool = False    # torchvision's Grayscale(3) right after the resize
    salt: int = 0
    pad: int = 10
    erasing: float = 0.5
    flip: float = 0.5


@dataclass(frozen=True)
class Draw:
    """One sample's random parameters: horizontal flip, crop offsets in the padded image, erased box."""

    flip: bool
    top: int
    left: int
    erase: Optional[Tuple[int, int, int, int]]  # (top, left, height, width) or None


def draw(view: View, seed: int, size: Tuple[int, int]) -> Draw:
    """The draws ``train_transform`` makes under ``seeded(..., seed)``, in its order.

    RandomHorizontalFlip: ``torch.rand(1) < p`` (drawn even when p is 0); RandomCrop of the padded
    image: ``torch.randint`` for the row, then the column (only with padding); erasing: Python
    ``random`` (``RandomErasingMean.draw``). Private generators seeded like the global ones give the
    same streams without touching the global state (and without ``torch.manual_seed``'s cost: about
    1 ms a call in a CUDA build of torch, which records the call for a lazy CUDA initialisation).
    """
    g = torch.Generator().manual_seed(seed)
    flip = bool(torch.rand(1, generator=g) < view.flip)
    top = left = 0
    if view.pad > 0:
        top = int(torch.randint(0, 2 * view.pad + 1, size=(1,), generator=g).item())
        left = int(torch.randint(0, 2 * view.pad + 1, size=(1,), generator=g).item())
    erase = (RandomErasingMean(probability=view.erasing).draw(*size, rng=random.Random(seed))
             if view.erasing > 0 else None)
    return Draw(flip, top, left, erase)


def gray(x: torch.Tensor) -> torch.Tensor:
    """PIL's ``convert("L")`` of uint8 RGB (..., 3): (19595 R + 38470 G + 7471 B + 2^15) >> 16, as (..., 1)."""
    xi = x.to(torch.int32)
    lum = (xi[..., 0] * 19595 + xi[..., 1] * 38470 + xi[..., 2] * 7471 + 32768) >> 16
    return lum.to(torch.uint8).unsqueeze(-1)


def augment(images: torch.Tensor, view: View, draws: Sequence[Draw], device: torch.device) -> torch.Tensor:
    """The float batch (B, 3, H, W) of uint8 resized images (B, H, W, 3) under ``view`` and ``draws``."""
    x = images.to(device, non_blocking=True)
    if view.grayscale:
        x = gray(x).expand(-1, -1, -1, 3)
    b, h, w, _ = x.shape
    flips = torch.tensor([d.flip for d in draws], device=device)
    x = torch.where(flips[:, None, None, None], x.flip(2), x)
    if view.pad > 0:
        p = view.pad
        x = torch.nn.functional.pad(x, (0, 0, p, p, p, p))  # constant 0, as T.Pad on a PIL image
        rows = torch.tensor([d.top for d in draws], device=device)[:, None] + torch.arange(h, device=device)
        cols = torch.tensor([d.left for d in draws], device=device)[:, None] + torch.arange(w, device=device)
        x = x[torch.arange(b, device=device)[:, None, None], rows[:, :, None], cols[:, None, :]]
    # ToTensor, then Normalize: the same element-wise operations, in the same order, as the per-sample path
    x = x.permute(0, 3, 1, 2).contiguous().to(torch.float32).div(255)
    mean = torch.as_tensor(IMAGENET_MEAN, dtype=torch.float32, device=device).view(-1, 1, 1)
    std = torch.as_tensor(IMAGENET_STD, dtype=torch.float32, device=device).view(-1, 1, 1)
    x = x.sub_(mean).div_(std)
    for i, d in enumerate(draws):
        if d.erase is not None:
            t, left, eh, ew = d.erase
            for c in range(3):
                x[i, c, t:t + eh, left:left + ew] = IMAGENET_MEAN[c]
    return x


class _Decode(Dataset):
    """(resized image uint8 (H, W, 3), resized mask uint8 or an empty tensor) per training image."""

    def __init__(self, paths: Sequence[str], size: Tuple[int, int],
                 mask_paths: Optional[Sequence[str]] = None,
                 mask_reader: Optional[Callable[..., Image.Image]] = None) -> None:
        self.paths, self.mask_paths, self.mask_reader = list(paths), mask_paths, mask_reader
        self.resize = T.Resize(size, interpolation=InterpolationMode.BICUBIC)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, torch.Tensor]:
        img = load_rgb(self.paths[i])
        mask = torch.zeros(0, dtype=torch.uint8)
        if self.mask_paths is not None:
            m = self.mask_reader(self.mask_paths[i], image_size=img.size, image=self.paths[i])
            mask = torch.from_numpy(np.asarray(self.resize(m.convert("RGB")), dtype=np.uint8).copy())
        return torch.from_numpy(np.asarray(self.resize(img), dtype=np.uint8).copy()), mask


def _host_available() -> Optional[int]:
    """Bytes of host memory available (``MemAvailable``), or None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def cache_rule(nbytes: int, device: torch.device) -> Tuple[Optional[str], str]:
    """Where a cache of ``nbytes`` lives (``device``, ``cpu`` or None: read from disk) and the rule, in words.

    The rule: on the training device when it takes at most ``CACHE_SHARE`` of the device's free
    memory, else in host memory under the same share of the host's available memory, else not at all.
    """
    gb = nbytes / 2 ** 30
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
        if nbytes <= CACHE_SHARE * free:
            return "device", f"{gb:.2f} GiB <= {CACHE_SHARE:g} x {free / 2 ** 30:.1f} GiB free on {device}"
    host = _host_available()
    if host is None:
        return None, f"{gb:.2f} GiB, host memory available unknown: reading from disk per sample"
    if nbytes <= CACHE_SHARE * host:
        return "cpu", f"{gb:.2f} GiB <= {CACHE_SHARE:g} x {host / 2 ** 30:.1f} GiB of host memory available"
    return None, (f"{gb:.2f} GiB > {CACHE_SHARE:g} x {host / 2 ** 30:.1f} GiB of host memory available"
                  f"{' (and of the free GPU memory)' if device.type == 'cuda' else ''}: reading from disk per sample")


@dataclass
class DecodedImages:
    """The training split decoded and resized once: ``image`` (N, H, W, 3) uint8 and ``mask`` likewise or None."""

    image: torch.Tensor
    mask: Optional[torch.Tensor] = None

    @property
    def nbytes(self) -> int:
        return sum(t.numel() for t in (self.image, self.mask) if t is not None)

    @classmethod
    def build(cls, paths: Sequence[str], size: Tuple[int, int], *, mask_paths: Optional[Sequence[str]] = None,
              mask_reader: Optional[Callable[..., Image.Image]] = None, where: str = "cpu",
              device: torch.device = torch.device("cpu"), workers: int = 0) -> DecodedImages:
        """Decode and resize every image (and mask) once, ``workers`` DataLoader processes reading."""
        # its own generator: building the cache leaves the global random state as it found it
        loader = DataLoader(_Decode(paths, size, mask_paths, mask_reader), batch_size=64, shuffle=False,
                            num_workers=workers, generator=torch.Generator().manual_seed(0))
        images: List[torch.Tensor] = []
        masks: List[torch.Tensor] = []
        for img, mask in loader:
            images.append(img)
            if mask_paths is not None:
                masks.append(mask)
        target = device if where == "device" else torch.device("cpu")
        image = torch.cat(images).to(target)
        mask = torch.cat(masks).to(target) if mask_paths is not None else None
        return cls(image, mask)


class BatchMaker:
    """Keys → the batch the per-sample dataset would collate: ``(*views, indices)``."""

    def __init__(self, cache: DecodedImages, views: Sequence[View], size: Tuple[int, int],
                 device: torch.device) -> None:
        self.cache, self.views, self.size = cache, tuple(views), size
        self.device = device if cache.image.device.type == "cuda" else torch.device("cpu")
        self.sources: Dict[str, torch.Tensor] = {"image": cache.image}
        if cache.mask is not None:
            self.sources["mask"] = cache.mask

    def __call__(self, keys: Sequence[Key]) -> Tuple[torch.Tensor, ...]:
        parsed = [split_key(k) for k in keys]
        idx = torch.tensor([i for i, _ in parsed], dtype=torch.long)
        out = []
        for view in self.views:
            src = self.sources[view.source]
            draws = [draw(view, s ^ view.salt, self.size) for _, s in parsed]
            out.append(augment(src[idx.to(src.device)], view, draws, self.device))
        return (*out, idx)


class CachedEval(Dataset):
    """(test-transformed tensor, index) of cached images: ``test_transform`` without decoding or resizing again.

    The per-epoch feature extraction of the training split reads this instead of the files; the tensors
    are the ones ``test_transform`` (resize, [Grayscale(3)], ToTensor, Normalize) gives, bit for bit.
    """

    def __init__(self, images: torch.Tensor, grayscale: bool = False) -> None:
        self.images, self.grayscale = images, grayscale
        self.mean = torch.as_tensor(IMAGENET_MEAN, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.as_tensor(IMAGENET_STD, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int]:
        x = self.images[i].cpu()
        if self.grayscale:
            x = gray(x).expand(-1, -1, 3)
        x = x.permute(2, 0, 1).contiguous().to(torch.float32).div(255)
        return x.sub_(self.mean).div_(self.std), i
