"""Test-time image transform and the ImageNet normalisation every model of the package expects.

Lives beside the models (not in ``maskcl.training``) because reading a ``model.pt`` for evaluation
needs it; ``maskcl.training.transforms`` builds the training augmentations on top of these names.
"""

from __future__ import annotations

from typing import Tuple

from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "test_transform"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def test_transform(size: Tuple[int, int], grayscale: bool = False) -> T.Compose:
    """Resize (bicubic) → [Grayscale(3) for masks] → tensor → ImageNet normalise: no randomness."""
    ops = [T.Resize(size, interpolation=InterpolationMode.BICUBIC)]
    if grayscale:
        ops.append(T.Grayscale(num_output_channels=3))
    ops += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(ops)
