"""Shared figure plumbing: Agg figures without pyplot state, atomic PNG + sidecar CSV, image tiles.

Every figure is written with a CSV of exactly the data it draws (same stem, ``.csv``), so a test
or a reader can check a picture against its source without reading pixels.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from ..errors import ReportingError
from ..image_modes import check_image_mode
from ..io import atomic_path, write_csv_atomic
from ..repair import dataset_repair_hint

__all__ = ["new_figure", "save_figure", "sidecar_path", "load_tile", "COLOURS"]

log = logging.getLogger(__name__)

#: Border colours of retrieval grids and shared series colours.
COLOURS = {"query": "#1f5fbf", "good": "#1a9641", "wrong": "#d7191c", "junk": "#8c8c8c", "none": "#ffffff",
           "unlabelled": "#404040"}


def new_figure(width: float, height: float) -> Figure:
    """A figure bound to no GUI and no global pyplot state (safe in jobs and tests)."""
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def sidecar_path(png: os.PathLike | str) -> Path:
    return Path(png).with_suffix(".csv")


def save_figure(fig: Figure, png: os.PathLike | str, data: pd.DataFrame) -> Tuple[Path, Path]:
    """Write the sidecar CSV, then the PNG, each atomically; returns both paths.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    png : path-like
        Target ``.png``; the sidecar is the same path with ``.csv``.
    data : pandas.DataFrame
        Exactly the values drawn.
    """
    png = Path(png)
    csv = sidecar_path(png)
    write_csv_atomic(csv, data)
    with atomic_path(png, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None}, pil_kwargs={"compress_level": 3})
    log.info("wrote %s (+ %s, %d rows)", png, csv.name, len(data))
    return png, csv


def _open(path: str, what: str) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except FileNotFoundError:
        raise ReportingError(f"{path}: {what} not found; rerun the stage that writes it (download for images, "
                             f"parse for masks)") from None
    except OSError as e:
        raise ReportingError(f"{path}: cannot read {what} ({e}); rerun the stage that writes it") from None


def load_tile(image: str, height: int, mask: Optional[str] = None, *, nearest: bool = False) -> np.ndarray:
    """An RGB uint8 tile of the image scaled to ``height``, with the mask beside it when given.

    ``nearest`` resamples without blending (for label-like images such as part maps).
    """
    im = _open(image, "image")
    check_image_mode(image, im.mode, error=ReportingError, fix=dataset_repair_hint(image))
    im = im.convert("RGB")
    w = max(1, round(im.width * height / im.height))
    tile = np.asarray(im.resize((w, height), Image.NEAREST if nearest else Image.BILINEAR))
    if mask is None:
        return tile
    m = _open(mask, "mask").convert("RGB").resize((w, height), Image.NEAREST)
    gap = np.full((height, 2, 3), 255, np.uint8)
    return np.concatenate([tile, gap, np.asarray(m)], axis=1)
