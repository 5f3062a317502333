"""The training split and its datasets.

:class:`TrainData` is the training split in manifest order (= memory index); a batch carries the
indices its features update. Single images are read by ``maskcl.models.images.ImageSet`` (shared
with evaluation); :class:`PairedImageSet` adds the image's mask as a second, independently augmented
view. Training items are requested as ``(index, seed)``: the augmentation of every sample is drawn
from its own seed, so a sample's augmented view depends only on (run seed, epoch, iteration,
position in the batch) — not on the number of DataLoader workers, the process layout (one process or
several DDP ranks) or an interruption and resume.

Masks are checked against their images before training starts (every mask's mode and size, from the
headers, against the size the mask index records: ``maskcl.masks.index``) and again when an item is
read (mode, silhouette values, and the decoded mask's size against the decoded image's).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import partial
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import DatasetError
from ..masks.index import MASK_MODES, check_index_masks, load_mask, mask_fix
from ..models.images import Key, load_rgb, seeded, split_key

__all__ = ["MASK_SEED_SALT", "PairedImageSet", "TrainData", "train_data_from_manifest"]

#: The mask view of an item keyed (index, seed) draws from seed ^ MASK_SEED_SALT.
MASK_SEED_SALT = 0x5EED


@dataclass
class TrainData:
    """The training split: one entry per image, in manifest order (= memory index).

    ``mask_kind`` (silhouette or parts) and ``mask_index`` (the index file, named in errors) go with
    ``mask_paths``.
    """

    paths: List[str]
    pids: np.ndarray
    camids: np.ndarray
    clothes: np.ndarray
    mask_paths: Optional[List[str]] = None
    mask_kind: str = "silhouette"
    mask_index: Optional[str] = None

    def mask_reader(self) -> Callable[[str], Image.Image]:
        """path → RGB image of a mask of this data's kind, its mode and values checked (picklable)."""
        return partial(load_mask, kind=self.mask_kind, fix=mask_fix(self.mask_index))

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
                             mask_mode: str = "silhouette", split: str = "train", *,
                             index_path: Optional[str] = None, check_masks: bool = True) -> TrainData:
    """The training split in manifest order, with each image's mask path when an index is given.

    With an index and ``check_masks``, every mask of the split is checked against its image before
    anything is trained (``maskcl.masks.index.check_index_masks``); ``index_path`` names the index in
    the fix.

    Raises
    ------
    DatasetError
        No rows of ``split``, an unknown mask mode, or images the index has no mask for.
    MaskError
        A mask of another size than its image, or of the wrong mode.
    """
    rows = manifest[manifest["split"] == split]
    if rows.empty:
        raise DatasetError(f"the manifest has no {split!r} images; rerun the download stage")
    masks = None
    if mask_index is not None:
        if mask_mode not in MASK_MODES:
            raise DatasetError(f"mask mode {mask_mode!r} is not silhouette or parts")
        if mask_mode not in mask_index.columns:
            raise DatasetError(f"{index_path or 'the mask index'}: no {mask_mode} column; {mask_fix(index_path)}")
        rels = rows["relpath"].astype(str).tolist()
        by_rel = dict(zip(mask_index["relpath"].astype(str), mask_index[mask_mode]))
        missing = [r for r in rels if r not in by_rel]
        if missing:
            raise DatasetError(f"the mask index has no mask for {len(missing)} training image(s), e.g. "
                               f"{missing[0]}; {mask_fix(index_path)}")
        masks = [str(by_rel[r]) for r in rels]
        if check_masks:
            check_index_masks(mask_index, rels, rows["path"].astype(str).tolist(), mask_mode, index_path=index_path)
    return TrainData(paths=rows["path"].tolist(), pids=rows["pid"].to_numpy(np.int64),
                     camids=rows["camid"].to_numpy(np.int64), clothes=rows["clothes_id"].to_numpy(np.int64),
                     mask_paths=masks, mask_kind=mask_mode, mask_index=index_path)


class PairedImageSet(Dataset):
    """(RGB tensor, mask tensor, index): an image and its mask, augmented independently.

    Not an ``ImageSet``: two files, two transforms and two seeds per item. The mask is read with
    ``maskcl.masks.index.load_mask`` (mode and values of ``kind``) and must have its image's size;
    ``fix`` is the rule named when it does not.
    """

    def __init__(self, paths: Sequence[str], mask_paths: Sequence[str], rgb_transform: Callable,
                 mask_transform: Callable, kind: str = "silhouette", fix: str = "rerun the parse rule") -> None:
        if len(paths) != len(mask_paths):
            raise ValueError("one mask per image is required")
        self.paths = list(paths)
        self.mask_paths = list(mask_paths)
        self.rgb_transform = rgb_transform
        self.mask_transform = mask_transform
        self.kind = kind
        self.fix = fix

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: Key) -> Tuple[torch.Tensor, torch.Tensor, int]:
        i, seed = split_key(key)
        img = load_rgb(self.paths[i])
        mask = load_mask(self.mask_paths[i], self.kind, self.fix, image_size=img.size, image=self.paths[i])
        if seed is None:
            return self.rgb_transform(img), self.mask_transform(mask), i
        # independent draws for the two views (the official code does not synchronise them)
        return seeded(self.rgb_transform, img, seed), seeded(self.mask_transform, mask, seed ^ MASK_SEED_SALT), i
