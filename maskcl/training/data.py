"""Training and inference datasets over manifest rows.

Images are addressed by index into the sorted training table, which is also the memory index, so a
batch carries the indices its features update. Training items are requested as ``(index, seed)``:
the augmentation of every sample is drawn from its own seed, so a sample's augmented view depends
only on (run seed, epoch, iteration, position in the batch) — not on the number of DataLoader
workers, the process layout (one process or several DDP ranks) or an interruption and resume.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence, Tuple, Union

import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import DatasetError

__all__ = ["ImageSet", "PairedImageSet", "load_rgb", "seeded"]

Key = Union[int, Tuple[int, int]]


def load_rgb(path: str) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read image {path}: {e}; re-run the download/parse stage") from None


def seeded(transform: Callable, img: Image.Image, seed: int) -> torch.Tensor:
    """Apply ``transform`` with python's and torch's global RNGs seeded by ``seed``, then restore them."""
    py_state, torch_state = random.getstate(), torch.random.get_rng_state()
    random.seed(seed)
    torch.random.manual_seed(seed)
    try:
        return transform(img)
    finally:
        random.setstate(py_state)
        torch.random.set_rng_state(torch_state)


def _split(key: Key) -> Tuple[int, int | None]:
    if isinstance(key, (tuple, list)):
        return int(key[0]), int(key[1])
    return int(key), None


class ImageSet(Dataset):
    """(image tensor, index) for a list of paths; keys are an index or (index, augmentation seed)."""

    def __init__(self, paths: Sequence[str], transform: Callable) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: Key):
        i, seed = _split(key)
        img = load_rgb(self.paths[i])
        return (self.transform(img) if seed is None else seeded(self.transform, img, seed)), i


class PairedImageSet(Dataset):
    """(RGB tensor, mask tensor, index): an image and its mask, augmented independently."""

    def __init__(self, paths: Sequence[str], mask_paths: Sequence[str], rgb_transform: Callable,
                 mask_transform: Callable) -> None:
        if len(paths) != len(mask_paths):
            raise ValueError("one mask per image is required")
        self.paths = list(paths)
        self.mask_paths = list(mask_paths)
        self.rgb_transform = rgb_transform
        self.mask_transform = mask_transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: Key):
        i, seed = _split(key)
        img, mask = load_rgb(self.paths[i]), load_rgb(self.mask_paths[i])
        if seed is None:
            return self.rgb_transform(img), self.mask_transform(mask), i
        # independent draws for the two views (the official code does not synchronise them)
        return seeded(self.rgb_transform, img, seed), seeded(self.mask_transform, mask, seed ^ 0x5EED), i
