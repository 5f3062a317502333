"""The training split and its datasets.

:class:`TrainData` is the training split in manifest order (= memory index); a batch carries the
indices its features update. Single images are read by ``maskcl.models.images.ImageSet`` (shared
with evaluation); :class:`PairedImageSet` adds the image's mask as a second, independently augmented
view. Training items are requested as ``(index, seed)``: the augmentation of every sample is drawn
from its own seed, so a sample's augmented view depends only on (run seed, epoch, iteration,
position in the batch) — not on the number of DataLoader workers, the process layout (one process or
several DDP ranks) or an interruption and resume.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from ..errors import DatasetError
from ..models.images import Key, load_rgb, seeded, split_key

__all__ = ["PairedImageSet", "TrainData", "train_data_from_manifest"]


@dataclass
class TrainData:
    """The training split: one entry per image, in manifest order (= memory index)."""

    paths: List[str]
    pids: np.ndarray
    camids: np.ndarray
    clothes: np.ndarray
    mask_paths: Optional[List[str]] = None

    def __len__(self) -> int:
        return len(self.paths)

    def digest(self) -> str:
        h = hashlib.sha256()
        for p in self.paths:
            h.update(p.encode())
        for arr in (self.pids, self.camids, self.clothes):
            h.update(np.asarray(arr, dtype=np.int64).tobytes())
        if self.mask_paths:
            for p in self.mask_paths:
                h.update(p.encode())
        return h.hexdigest()[:16]


def train_data_from_manifest(manifest: pd.DataFrame, mask_index: Optional[pd.DataFrame] = None,
                             mask_mode: str = "silhouette", split: str = "train") -> TrainData:
    """The training split in manifest order, with each image's mask path when an index is given."""
    rows = manifest[manifest["split"] == split]
    if rows.empty:
        raise DatasetError(f"the manifest has no {split!r} images; rerun the download stage")
    masks = None
    if mask_index is not None:
        if mask_mode not in ("silhouette", "parts"):
            raise DatasetError(f"mask mode {mask_mode!r} is not silhouette or parts")
        by_rel = dict(zip(mask_index["relpath"], mask_index[mask_mode]))
        missing = [r for r in rows["relpath"] if r not in by_rel]
        if missing:
            raise DatasetError(f"the mask index has no mask for {len(missing)} training image(s), e.g. "
                               f"{missing[0]}; rerun the parse stage")
        masks = [by_rel[r] for r in rows["relpath"]]
    return TrainData(paths=rows["path"].tolist(), pids=rows["pid"].to_numpy(np.int64),
                     camids=rows["camid"].to_numpy(np.int64), clothes=rows["clothes_id"].to_numpy(np.int64),
                     mask_paths=masks)


class PairedImageSet(Dataset):
    """(RGB tensor, mask tensor, index): an image and its mask, augmented independently.

    Not an ``ImageSet``: two files, two transforms and two seeds per item.
    """

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

    def __getitem__(self, key: Key) -> Tuple[torch.Tensor, torch.Tensor, int]:
        i, seed = split_key(key)
        img, mask = load_rgb(self.paths[i]), load_rgb(self.mask_paths[i])
        if seed is None:
            return self.rgb_transform(img), self.mask_transform(mask), i
        # independent draws for the two views (the official code does not synchronise them)
        return seeded(self.rgb_transform, img, seed), seeded(self.mask_transform, mask, seed ^ 0x5EED), i
