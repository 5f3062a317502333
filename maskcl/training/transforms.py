"""Augmentations of the official MaskCL/ClusterContrast training loaders.

RGB: resize (bicubic) → horizontal flip 0.5 → pad → random crop → tensor → ImageNet normalise →
random erasing (p 0.5, area 0.02–0.4, aspect ≥ 0.3, filled with the ImageNet mean *after*
normalisation, as the official custom class does). Masks: the same with Grayscale(3) right after the
resize. RGB and mask draw their random parameters independently (official behaviour).

The test transform and the ImageNet statistics live in ``maskcl.models.transforms`` (evaluation
reads them with ``model.pt``); they are re-exported here for the training code.
"""

from __future__ import annotations

import math
import random
from typing import Any, Optional, Sequence, Tuple

import torch
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from ..models.transforms import IMAGENET_MEAN, IMAGENET_STD, test_transform

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "RandomErasingMean", "train_transform", "test_transform"]


class RandomErasingMean:
    """Random erasing filled with fixed per-channel values (the official ``RandomErasing``).

    Uses Python's ``random`` module, which DataLoader workers seed deterministically.
    """

    def __init__(self, probability: float = 0.5, sl: float = 0.02, sh: float = 0.4, r1: float = 0.3,
                 mean: Sequence[float] = IMAGENET_MEAN) -> None:
        self.probability, self.sl, self.sh, self.r1 = probability, sl, sh, r1
        self.mean = tuple(mean)

    def draw(self, h: int, w: int, rng: Any = random) -> Optional[Tuple[int, int, int, int]]:
        """The box (top, left, height, width) to erase in an h×w image, or None: Python ``random``'s draws.

        The one copy of the official draw order, shared by the per-sample transform (the module's global
        generator, which DataLoader workers and ``seeded`` seed) and the batched path
        (``maskcl.training.batches``: its own ``random.Random(seed)``, the same stream).
        """
        if rng.uniform(0, 1) >= self.probability:
            return None
        area = h * w
        for _ in range(100):
            target = rng.uniform(self.sl, self.sh) * area
            aspect = rng.uniform(self.r1, 1 / self.r1)
            eh = int(round(math.sqrt(target * aspect)))
            ew = int(round(math.sqrt(target / aspect)))
            if ew < w and eh < h:
                top = rng.randint(0, h - eh)
                left = rng.randint(0, w - ew)
                return top, left, eh, ew
        return None

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        _, h, w = img.shape
        box = self.draw(h, w)
        if box is not None:
            top, left, eh, ew = box
            for c in range(img.shape[0]):
                img[c, top:top + eh, left:left + ew] = self.mean[c]
        return img


def train_transform(size: Tuple[int, int], pad: int = 10, erasing: float = 0.5, grayscale: bool = False,
                    flip: float = 0.5) -> T.Compose:
    """Training augmentation for an RGB image (``grayscale=False``) or a mask (``grayscale=True``)."""
    ops = [T.Resize(size, interpolation=InterpolationMode.BICUBIC)]
    if grayscale:
        ops.append(T.Grayscale(num_output_channels=3))
    ops += [T.RandomHorizontalFlip(p=flip)]
    if pad > 0:
        ops += [T.Pad(pad), T.RandomCrop(size)]
    ops += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if erasing > 0:
        ops.append(RandomErasingMean(probability=erasing, mean=IMAGENET_MEAN))
    return T.Compose(ops)
