"""The parse stage's ``index.csv`` as its readers use it, and the check that a mask belongs to its image.

The index (``maskcl.masks.parse.INDEX_COLUMNS``) gives for every image its mask paths and its
``height`` and ``width``: the image's size, which is also the size of each of its masks (the parse
stage writes them from a label map of the image's own size and redoes any mask of another size).
Whoever uses a mask checks it against that size and against the mode the parse stage writes
(:data:`MASK_MODES`), so a stale mask, a mask of another image or a hand-edited file stops the job
with one line naming the mask, the image, both sizes and the rule to rerun, instead of being
stretched onto the image by a resize. An index of an older workspace without the size columns is
still checked: the image's size is then read from its header.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Type

import numpy as np
import pandas as pd
from PIL import Image

from ..errors import DatasetError, MaskCLError, MaskError
from ..upstream import check_numeric_column, read_csv_file, rerun_hint
from ..workspace import moved_from, real_path, resolve_all

__all__ = ["MASK_MODES", "SIZE_COLUMNS", "MASK_FILE_COLUMNS", "read_mask_index", "recorded_sizes", "mask_fix", "check_mask_file",
           "check_index_masks", "load_mask", "check_mask_fits"]

#: PIL modes a mask of each kind may have: what the parse stage writes (``maskcl.masks.outputs``), plus
#: the equivalent 1-bit silhouette and palette part map (both read back as the same RGB image).
MASK_MODES: Dict[str, Tuple[str, ...]] = {"silhouette": ("L", "1"), "parts": ("RGB", "P")}
#: Index columns holding the image's (and its masks') size, in pixels.
SIZE_COLUMNS: Tuple[str, str] = ("height", "width")
#: Index columns naming mask files: stored relative to the index's folder, read back absolute.
MASK_FILE_COLUMNS: Tuple[str, ...] = ("label", "silhouette", "parts")
_TEXT = ("relpath", "split") + MASK_FILE_COLUMNS

PathLike = os.PathLike | str


def mask_fix(index_path: Optional[PathLike]) -> str:
    """How to rebuild the masks of an index (the parse rule)."""
    return rerun_hint(index_path, "parse") if index_path is not None else "rerun the parse rule"


def read_mask_index(path: PathLike, columns: Sequence[str] = ("relpath", "silhouette", "parts"), *,
                    error: Type[MaskCLError] = DatasetError) -> pd.DataFrame:
    """The mask index at ``path``, checked for being whole and consistent.

    Checked: a whole CSV (:func:`maskcl.upstream.read_csv_file`) with ``columns``; no empty path
    in them; each ``relpath`` once; each mask file once, and below the index's folder (paths are
    stored relative to it and returned absolute: a copied workspace reads its own masks, never the
    original's); ``height`` and ``width`` (when present, both) positive integers; ``fg_fraction``
    (when present) in [0, 1].

    Raises
    ------
    error
        One line naming the index, what is wrong and the parse rule to rerun.
    """
    dtype = {c: str for c in _TEXT}
    frame = read_csv_file(path, what="mask index", rule="parse", columns=columns, error=error, dtype=dtype)
    fix = mask_fix(path)
    if frame.empty:
        raise error(f"{path}: mask index has no rows; {fix}")
    for col in columns:
        if col in _TEXT:
            empty = frame[col].isna() | (frame[col].astype(str).str.strip() == "")
            if empty.any():
                i = int(np.flatnonzero(empty.to_numpy())[0])
                raise error(f"{path}: mask index line {i + 2} has no {col}; {fix}")
    if "relpath" in frame.columns:
        dup = frame["relpath"].duplicated()
        if dup.any():
            i = int(np.flatnonzero(dup.to_numpy())[0])
            first = int(np.flatnonzero((frame["relpath"] == frame["relpath"].iloc[i]).to_numpy())[0])
            raise error(f"{path}: mask index lists {frame['relpath'].iloc[i]!r} twice, on lines {first + 2} and "
                        f"{i + 2} (each image has one row); {fix}")
    for col in (c for c in MASK_FILE_COLUMNS if c in frame.columns):
        frame[col] = _own_masks(frame[col], col, path, error, fix)
    present = [c for c in SIZE_COLUMNS if c in frame.columns]
    if len(present) == 1:
        other = next(c for c in SIZE_COLUMNS if c not in present)
        raise error(f"{path}: mask index has {present[0]} but no {other} (garbled); {fix}")
    for col in present:
        check_numeric_column(frame, col, path, what="mask index", rule="parse", error=error, lo=1, integer=True,
                             missing=False)
    check_numeric_column(frame, "fg_fraction", path, what="mask index", rule="parse", error=error, lo=0.0, hi=1.0)
    return frame


def _own_masks(cells: pd.Series, col: str, path: PathLike, error: Type[MaskCLError], fix: str) -> pd.Series:
    """The absolute mask paths of one column: stored relative to the index's folder (or, in an index
    written before paths were stored relative, absolute below it); no two rows share a file.

    An absolute path outside the index's folder was written in another place: the workspace was
    copied or moved, and reading it would read the original's masks. Empty cells stay empty.
    """
    folder = Path(path).parent
    owns = tuple({os.path.join(str(real_path(folder)), ""), os.path.join(os.path.abspath(folder), "")})
    out = cells.copy().astype(object)
    given = [isinstance(c, str) and bool(c.strip()) for c in cells]
    resolved = resolve_all([c for c, g in zip(cells, given) if g], folder)
    at = iter(resolved)
    for i, (cell, g) in enumerate(zip(cells, given)):
        if not g:
            continue
        p = next(at)
        if os.path.isabs(cell) and not p.startswith(owns):
            old = moved_from(p, path)
            where = (f"this workspace was moved or copied from {old}" if old is not None
                     else "the index was written in another place, or the workspace was copied or moved")
            raise error(f"{path}: mask index line {i + 2}, column {col!r}: {p} lies outside the index's folder "
                        f"{folder} ({where}) and must not be read; rebuild the index here: "
                        f"{fix.split(': ', 1)[-1]}")
        out.iloc[i] = p
    dup = (out.duplicated() & out.notna()).to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise error(f"{path}: mask index line {i + 2}, column {col!r}: {out.iloc[i]} is also another image's "
                    f"mask (each image has its own); {fix}")
    return out


def recorded_sizes(index: pd.DataFrame) -> Optional[Dict[str, Tuple[int, int]]]:
    """relpath → recorded (width, height) of the image and its masks; None for an index without sizes."""
    if not all(c in index.columns for c in SIZE_COLUMNS):
        return None
    return {str(r): (int(w), int(h)) for r, w, h in zip(index["relpath"], index["width"], index["height"])}


def _reason(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _header(path: str, what: str, fix: str) -> Tuple[str, Tuple[int, int]]:
    """(mode, (width, height)) from the file's header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.mode, im.size
    except FileNotFoundError:
        raise MaskError(f"{what} {path} not found; {fix}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise MaskError(f"{what} {path} cannot be read ({_reason(e)}); {fix}") from None


def _check_mode(mask: str, kind: str, mode: str, fix: str) -> None:
    allowed = MASK_MODES.get(kind)
    if allowed is None:
        raise MaskError(f"mask kind {kind!r} is not one of {', '.join(MASK_MODES)}")
    if mode not in allowed:
        raise MaskError(f"{kind} mask {mask} has image mode {mode}, but a {kind} mask is {' or '.join(allowed)} "
                        f"(as the parse stage writes it); {fix}")


def check_mask_fits(mask: str, image: str, mask_size: Tuple[int, int], image_size: Tuple[int, int], fix: str,
                    recorded: bool = False) -> None:
    """A mask of another (width, height) than its image's is an error naming both files and sizes."""
    if tuple(mask_size) != tuple(image_size):
        (mw, mh), (iw, ih) = mask_size, image_size
        where = " (as the mask index records it)" if recorded else ""
        raise MaskError(f"mask {mask} is {mw}x{mh} but its image {image} is {iw}x{ih}{where}: a stale mask or one "
                        f"of another image; {fix}")


def check_mask_file(mask: str, kind: str, image: str, size: Optional[Tuple[int, int]] = None,
                    fix: str = "rerun the parse rule") -> None:
    """The mask's mode and (width, height), from its header, against ``size`` or the image's header.

    Parameters
    ----------
    mask : str
        The mask file.
    kind : str
        ``silhouette`` or ``parts`` (:data:`MASK_MODES`).
    image : str
        Its image.
    size : (int, int), optional
        The image's recorded (width, height); read from the image's header when None.
    fix : str
        The fix named in the message (:func:`mask_fix`).

    Raises
    ------
    MaskError
        Missing or unreadable mask (or image), wrong mode, or another size.
    """
    mode, msize = _header(mask, f"{kind} mask", fix)
    _check_mode(mask, kind, mode, fix)
    if size is None:
        _, size = _header(image, "image", "rerun the download rule, then the parse rule")
        check_mask_fits(mask, image, msize, size, fix)
    else:
        check_mask_fits(mask, image, msize, size, fix, recorded=True)


def check_index_masks(index: pd.DataFrame, relpaths: Sequence[str], images: Sequence[str], kind: str, *,
                      index_path: Optional[PathLike] = None, threads: int = 8) -> None:
    """Check the ``kind`` mask of every image before any is used (headers only, in threads).

    ``relpaths`` and ``images`` are aligned (the manifest's ``relpath`` and ``path``); every
    relpath must be in ``index``. The first bad mask, in the given order, is raised.
    """
    fix = mask_fix(index_path)
    by_rel = dict(zip(index["relpath"].astype(str), index[kind].astype(str)))
    sizes = recorded_sizes(index)

    def one(i: int) -> Optional[MaskError]:
        rel = str(relpaths[i])
        try:
            check_mask_file(by_rel[rel], kind, str(images[i]), sizes[rel] if sizes is not None else None, fix)
        except MaskError as e:
            return e
        return None

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:   # header reads wait on the disk
        for err in pool.map(one, range(len(relpaths))):
            if err is not None:
                raise err


def load_mask(path: str, kind: str, fix: str = "rerun the parse rule",
              image_size: Optional[Tuple[int, int]] = None, image: Optional[str] = None) -> Image.Image:
    """A mask as the RGB image the mask branch reads, after checking its mode, values and size.

    A silhouette in mode L holds only 0 and 255 (what the parse stage writes); ``image_size``
    (width, height) of ``image``, when given, must be the mask's.

    Raises
    ------
    MaskError
        One line naming the mask (and image) and ``fix``.
    """
    try:
        with Image.open(path) as im:
            _check_mode(path, kind, im.mode, fix)
            if image_size is not None:
                check_mask_fits(path, image or "?", im.size, image_size, fix)
            im.load()
            if kind == "silhouette" and im.mode == "L":
                values = np.unique(np.asarray(im))
                odd = values[(values != 0) & (values != 255)]
                if odd.size:
                    raise MaskError(f"silhouette mask {path} holds value(s) {', '.join(map(str, odd[:3].tolist()))} "
                                    f"besides 0 and 255 (not a silhouette the parse stage wrote); {fix}")
            return im.convert("RGB")
    except FileNotFoundError:
        raise MaskError(f"{kind} mask {path} not found; {fix}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise MaskError(f"{kind} mask {path} cannot be read ({_reason(e)}); {fix}") from None

