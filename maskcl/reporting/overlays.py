"""Dataset pictures: mask overlays per split, and SynthCC's contact sheet copied into the figures.

Overlays show, for a few images of each split, the image, the silhouette laid over it and the
part map, so a reader can judge the masks a run trained with.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import pandas as pd
from PIL import Image

from ..io import atomic_path, write_csv_atomic
from ..errors import ReportingError
from ..masks.index import check_mask_file, mask_fix, recorded_sizes
from ..masks.index import read_mask_index as _read_index
from .plotting import load_tile, new_figure, save_figure, sidecar_path

__all__ = ["overlay_frame", "plot_overlays", "copy_contact_sheet", "read_mask_index"]

log = logging.getLogger(__name__)

_INDEX_COLUMNS = ("relpath", "split", "silhouette", "parts")


def read_mask_index(path: os.PathLike | str) -> pd.DataFrame:
    """A parse-stage ``index.csv`` with the columns the figures need, checked
    (``maskcl.masks.index.read_mask_index``; raises ``ReportingError`` naming the file and the fix)."""
    return _read_index(path, _INDEX_COLUMNS, error=ReportingError)


def overlay_frame(index: pd.DataFrame, manifest: pd.DataFrame, per_split: int, seed: int,
                  index_path: Optional[os.PathLike | str] = None) -> pd.DataFrame:
    """Which images an overlay figure shows: ``per_split`` per split, drawn reproducibly from ``seed``.

    Each drawn image's silhouette and part map are checked against it (mode, and size against the
    size the index records, else the image's): a mask of another size would be stretched onto it.

    Returns
    -------
    pandas.DataFrame
        split, relpath, path (image), silhouette, parts, fg_fraction (when indexed), pid.

    Raises
    ------
    ReportingError
        An index row that is not in the manifest.
    MaskError
        A drawn mask that does not belong to its image (names both files, both sizes and the parse rule).
    """
    paths = manifest.set_index("relpath")
    sizes = recorded_sizes(index)
    fix = mask_fix(index_path)
    rng = np.random.default_rng(seed)
    rows = []
    for split in sorted(index["split"].astype(str).unique()):
        sub = index[index["split"].astype(str) == split]
        pick = np.sort(rng.choice(len(sub), size=min(per_split, len(sub)), replace=False))
        for i in pick:
            r = sub.iloc[int(i)]
            rel = str(r["relpath"])
            if rel not in paths.index:
                raise ReportingError(f"mask index row {rel!r} is not in the manifest; rerun the parse rule after "
                                     f"the download stage" + (f": {fix.split(': ', 1)[1]}" if index_path else ""))
            m = paths.loc[rel]
            for kind in ("silhouette", "parts"):
                check_mask_file(str(r[kind]), kind, str(m["path"]), sizes[rel] if sizes is not None else None, fix)
            rows.append({"split": split, "relpath": rel, "path": str(m["path"]), "silhouette": str(r["silhouette"]),
                         "parts": str(r["parts"]), "fg_fraction": float(r["fg_fraction"]) if "fg_fraction" in r
                         else float("nan"), "pid": int(m["pid"])})
    return pd.DataFrame(rows)


def _overlay(image: str, silhouette: str, height: int) -> np.ndarray:
    rgb = load_tile(image, height).astype(np.float32)
    sil = load_tile(silhouette, height, nearest=True)[..., 0] > 127
    tint = np.array([40.0, 255.0, 60.0])
    rgb[sil] = 0.55 * rgb[sil] + 0.45 * tint
    return rgb.astype(np.uint8)


def plot_overlays(frame: pd.DataFrame, png: os.PathLike | str, *, title: str,
                  tile_height: int = 128) -> Tuple[Path, Path]:
    """Image, silhouette overlay and part map for every row of ``overlay_frame``."""
    if frame.empty:
        raise ReportingError(f"{png}: no images to draw")
    n = len(frame)
    fig = new_figure(max(4.0, 1.9 * n), 2.0 * 3 + 0.6)
    fig.suptitle(title, fontsize=9)
    axes = fig.subplots(3, n, squeeze=False)
    for j, (_, r) in enumerate(frame.iterrows()):
        tiles = [load_tile(r["path"], tile_height), _overlay(r["path"], r["silhouette"], tile_height),
                 load_tile(r["parts"], tile_height, nearest=True)]
        for i, t in enumerate(tiles):
            ax = axes[i, j]
            ax.imshow(t, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, j].set_title(f"{r['split']}\nid {r['pid']}", fontsize=7)
    for i, name in enumerate(("image", "silhouette", "parts")):
        axes[i, 0].set_ylabel(name, fontsize=8)
    return save_figure(fig, png, frame.reset_index(drop=True))


def copy_contact_sheet(src: os.PathLike | str, png: os.PathLike | str) -> Tuple[Path, Path]:
    """Copy a generated contact sheet and write a sidecar with its source path, size and sha256."""
    src, png = Path(src), Path(png)
    try:
        with Image.open(src) as im:
            width, height = im.size
        data = src.read_bytes()
    except FileNotFoundError:
        raise ReportingError(f"{src}: contact sheet not found; rerun the download rule to regenerate SynthCC") from None
    except OSError as e:
        raise ReportingError(f"{src}: not a readable image ({e}); rerun the download rule") from None
    with atomic_path(png, suffix=".png") as tmp:
        shutil.copyfile(src, tmp)
    side = pd.DataFrame([{"source": str(src), "width": width, "height": height,
                          "sha256": hashlib.sha256(data).hexdigest()}])
    write_csv_atomic(sidecar_path(png), side)
    log.info("copied %s to %s", src, png)
    return png, sidecar_path(png)
