"""The three mask images written per input image, and their validity check.

For an image ``<relpath>`` the parse stage writes, under ``results/{dataset}/masks/{source}/``:

* ``labels/<relpath stem>.png``: palette PNG, pixel value = class index, VOC palette (as SCHP);
* ``silhouette/<relpath stem>.png``: L-mode, 255 where the label is not background, else 0 (the
  trainer's default mask);
* ``parts/<relpath stem>.png``: RGB colour-coded part map, i.e. the label PNG converted to RGB,
  which is what MaskCL read from SCHP's output (the part-level ablation).

Each file is written to a temporary name and renamed, so a killed job leaves only complete files
(plus hidden ``.*.tmp`` leftovers, which ``remove_leftovers`` deletes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Optional, Tuple

import numpy as np
from PIL import Image

from ..io import atomic_path
from .labels import LabelSet, voc_palette

__all__ = ["MASK_KINDS", "MaskPaths", "mask_paths", "silhouette_of", "parts_of", "write_masks",
           "check_masks", "remove_leftovers", "TMP_SUFFIX"]

MASK_KINDS: Tuple[str, ...] = ("labels", "silhouette", "parts")
TMP_SUFFIX = ".tmp"


@dataclass(frozen=True)
class MaskPaths:
    """Where the three mask images of one input image live."""

    labels: Path
    silhouette: Path
    parts: Path

    def all(self) -> Tuple[Path, Path, Path]:
        return (self.labels, self.silhouette, self.parts)


def mask_paths(out_dir: Path, relpath: str) -> MaskPaths:
    """Mirror ``relpath`` under each mask kind with a ``.png`` suffix."""
    stem = PurePosixPath(relpath).with_suffix(".png")
    return MaskPaths(*(out_dir / kind / stem for kind in MASK_KINDS))


def silhouette_of(labels: np.ndarray) -> np.ndarray:
    """Binary 0/255 uint8 silhouette: everything that is not background (class 0)."""
    return np.where(labels != 0, np.uint8(255), np.uint8(0))


def parts_of(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """RGB part map: the palette colour of every class (H×W×3 uint8)."""
    return palette[labels]


def _save(img: Image.Image, path: Path) -> None:
    with atomic_path(path, suffix=TMP_SUFFIX) as tmp:
        img.save(tmp, format="PNG")


def write_masks(paths: MaskPaths, labels: np.ndarray, label_set: LabelSet) -> float:
    """Write the three images for one label map atomically.

    Parameters
    ----------
    paths : MaskPaths
    labels : np.ndarray, shape (H, W), uint8
        Class indices of ``label_set``.
    label_set : LabelSet

    Returns
    -------
    float
        Foreground fraction (share of non-background pixels).
    """
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    palette = voc_palette(label_set.num_classes)
    lab = Image.fromarray(labels)
    lab.putpalette(palette.reshape(-1).tolist())
    _save(lab, paths.labels)
    _save(Image.fromarray(parts_of(labels, palette)), paths.parts)
    sil = silhouette_of(labels)
    _save(Image.fromarray(sil), paths.silhouette)
    return float(np.count_nonzero(sil)) / max(sil.size, 1)


def check_masks(paths: MaskPaths, size: Tuple[int, int], num_classes: int) -> Optional[float]:
    """Foreground fraction if all three images exist, decode, have the image's (H, W) and the
    expected modes and values; ``None`` otherwise (they are then recomputed)."""
    h, w = size
    try:
        if not all(p.is_file() for p in paths.all()):
            return None
        with Image.open(paths.labels) as im:
            if im.mode != "P" or im.size != (w, h):
                return None
            if int(np.asarray(im).max(initial=0)) >= num_classes:
                return None
        with Image.open(paths.parts) as im:
            if im.mode != "RGB" or im.size != (w, h):
                return None
            im.load()
        with Image.open(paths.silhouette) as im:
            if im.mode != "L" or im.size != (w, h):
                return None
            sil = np.asarray(im)
        if not np.isin(sil, (0, 255)).all():
            return None
        return float(np.count_nonzero(sil)) / max(sil.size, 1)
    except (OSError, SyntaxError, ValueError):
        return None


def remove_leftovers(out_dir: Path, kinds: Iterable[str] = MASK_KINDS) -> int:
    """Delete temporary files a killed job left behind (``.<name>.*.tmp``); returns how many."""
    removed = 0
    for kind in kinds:
        root = out_dir / kind
        if not root.is_dir():
            continue
        for dirpath, _dirs, files in os.walk(root):
            for fn in files:
                if fn.startswith(".") and fn.endswith(TMP_SUFFIX):
                    os.unlink(os.path.join(dirpath, fn))
                    removed += 1
    return removed
