"""The manifest (``results/<dataset>/manifest.csv``) and ``dataset.json``: one writer, one reader, every check.

The download rule writes the manifest, one row per image; training, evaluation, the parse stage, the
mask-quality table and the tables stage read it. Every reader goes through :func:`read_manifest`,
which checks, before anything is computed from it:

* the file is a whole CSV with the required columns (:func:`maskcl.upstream.read_csv_file`);
* every id (``pid``, ``camid``, ``clothes_id``, and the integer extras) is a non-negative integer,
  ``cloth_changing`` a boolean, and no text cell is empty;
* every image is listed once: a repeated row would be used twice (its queries scored twice), and an
  image may belong to one split only;
* every split name is one of the dataset's (a misspelt split would silently drop its images from
  every protocol); a stage that needs a split checks that it has rows;
* every ``path`` is ``<dataset root>/<relpath>`` with one root for the whole file, and that root is
  this workspace's or outside every workspace (:mod:`maskcl.workspace`).

Each problem is one line naming the file, the line and the column, and the fix: the command that
rebuilds the manifest (:func:`maskcl.upstream.rerun_hint`).

Paths are stored relocatable (:func:`maskcl.workspace.stored_path`): an image inside the workspace
relative to the manifest's folder, one outside it absolute. :func:`read_manifest` returns absolute
paths, so the ``path`` column means what it always meant to every consumer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Type

import numpy as np
import pandas as pd

from .errors import DatasetError, MaskCLError
from .io import write_csv_atomic, write_json_atomic
from .upstream import read_csv_file, rerun_hint, shown_path
from .workspace import moved_from, other_workspace, resolve_all, resolve_stored, stored_path

__all__ = ["MANIFEST_COLUMNS", "ID_COLUMNS", "EXTRA_COLUMNS", "write_manifest", "read_manifest",
           "check_manifest_frame", "check_dataset_root", "write_dataset_info", "read_dataset_info"]

PathLike = os.PathLike | str

#: Columns every manifest has, in this order; a dataset's extras follow.
MANIFEST_COLUMNS = ("path", "relpath", "split", "pid", "camid", "clothes_id")
#: The id columns: non-negative integers.
ID_COLUMNS = ("pid", "camid", "clothes_id")
#: Every extra column a dataset may add, by kind (``integer``, ``boolean`` or ``text``); a dataset's
#: ``extra_columns`` are all named here (``tests/test_datasets.py``).
EXTRA_COLUMNS: Dict[str, str] = {"outfit": "integer", "tracklet": "integer", "image_index": "integer",
                                 "cloth_changing": "boolean", "parsing": "text"}
_TEXT = ("path", "relpath", "split") + tuple(c for c, kind in EXTRA_COLUMNS.items() if kind == "text")
_WHAT = "manifest"


# ---------------------------------------------------------------------------------------------- writing
def write_manifest(frame: pd.DataFrame, path: PathLike) -> None:
    """Write ``frame`` (absolute ``path`` column) atomically, each path stored relocatable.

    Every path is ``<root>/<relpath>`` (what :func:`read_manifest` checks), so the root's stored form
    is worked out once; a frame that breaks that rule has each path stored on its own.
    """
    folder = Path(path).parent
    out = frame.copy()
    paths, rels = frame["path"].astype(str).tolist(), frame["relpath"].astype(str).tolist()
    tails = ["/" + r.strip("/") for r in rels]
    roots = {p[: len(p) - len(t)] for p, t in zip(paths, tails) if p.endswith(t)}
    if len(roots) == 1 and all(p.endswith(t) for p, t in zip(paths, tails)):
        root = stored_path(roots.pop(), folder)
        out["path"] = [root + t for t in tails]
    else:
        out["path"] = [stored_path(p, folder) for p in paths]
    write_csv_atomic(path, out)


def write_dataset_info(info: Dict[str, Any], path: PathLike) -> None:
    """Write ``dataset.json`` atomically, its ``root`` stored relocatable (as the manifest's paths)."""
    out = dict(info)
    out["root"] = stored_path(info["root"], Path(path).parent)
    write_json_atomic(path, out)


# ---------------------------------------------------------------------------------------------- checks
def _line(i: int) -> int:
    """File line of row ``i`` (the header is line 1)."""
    return i + 2


def _fail(error: Type[MaskCLError], where: str, i: Optional[int], column: Optional[str], problem: str,
          fix: str) -> MaskCLError:
    at = f" line {_line(i)}" if i is not None else ""
    col = f", column {column!r}" if column is not None else ""
    return error(f"{where + ': ' if where else ''}{_WHAT}{at}{col}: {problem}; {fix}")


def _check_text(frame: pd.DataFrame, where: str, error: Type[MaskCLError], fix: str) -> None:
    for col in ("path", "relpath", "split"):
        cells = frame[col]
        empty = (cells.isna() | (cells.astype(str).str.strip() == "")).to_numpy()
        if empty.any():
            raise _fail(error, where, int(np.flatnonzero(empty)[0]), col, "empty", fix)


def _check_types(frame: pd.DataFrame, where: str, error: Type[MaskCLError], fix: str) -> pd.DataFrame:
    """Ids and integer extras as int64, ``cloth_changing`` as bool; anything else is an error."""
    out = frame.copy()
    ints = list(ID_COLUMNS) + [c for c, kind in EXTRA_COLUMNS.items() if kind == "integer" and c in frame.columns]
    for col in ints:
        raw = frame[col]
        values = pd.to_numeric(raw, errors="coerce").to_numpy(np.float64)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(values) | (values != np.round(values)) | (values < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            cell = raw.iloc[i]
            cell = cell.item() if isinstance(cell, np.generic) else cell
            empty = pd.isna(cell) or not str(cell).strip()
            raise _fail(error, where, i, col, "empty" if empty else f"{cell!r} is not an id (a non-negative integer)",
                        fix)
        out[col] = values.astype(np.int64)
    for col in (c for c, kind in EXTRA_COLUMNS.items() if kind == "boolean" and c in frame.columns):
        cells = frame[col]
        if cells.dtype != bool:
            words = {"true": True, "false": False, "1": True, "0": False}
            parsed = cells.map(lambda v: words.get(str(v).strip().lower()))
            bad = parsed.isna().to_numpy()
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise _fail(error, where, i, col, f"{cells.iloc[i]!r} is not True or False", fix)
            out[col] = parsed.astype(bool)
    return out


def _check_unique(frame: pd.DataFrame, where: str, error: Type[MaskCLError], fix: str) -> None:
    for col in ("path", "relpath"):
        dup = frame[col].duplicated(keep=False).to_numpy()
        if not dup.any():
            continue
        rows = np.flatnonzero(dup)
        first = rows[0]
        second = next(int(j) for j in rows[1:] if frame[col].iloc[j] == frame[col].iloc[first])
        s1, s2 = frame["split"].iloc[first], frame["split"].iloc[second]
        if s1 != s2:
            problem = (f"{frame[col].iloc[second]} is in split {s2!r} but line {_line(int(first))} has it in split "
                       f"{s1!r}: an image belongs to one split")
        else:
            problem = (f"repeats line {_line(int(first))} ({frame[col].iloc[second]}): a listed image would be used "
                       f"twice (a query scored twice)")
        raise _fail(error, where, second, col, problem, fix)


def _check_splits(frame: pd.DataFrame, where: str, splits: Optional[Sequence[str]], error: Type[MaskCLError],
                  fix: str) -> None:
    if splits is None:
        return
    known = list(splits)
    unknown = (~frame["split"].isin(known)).to_numpy()
    if unknown.any():
        i = int(np.flatnonzero(unknown)[0])
        raise _fail(error, where, i, "split", f"unknown split {frame['split'].iloc[i]!r} (this dataset's splits: "
                                              f"{', '.join(known)})", fix)


def _dataset_root(frame: pd.DataFrame, where: str, error: Type[MaskCLError], fix: str) -> str:
    """The one folder every ``path`` is ``<folder>/<relpath>`` of."""
    root: Optional[str] = None
    for i, (p, rel) in enumerate(zip(frame["path"].astype(str), frame["relpath"].astype(str))):
        tail = "/" + rel.strip("/")
        if not p.endswith(tail):
            raise _fail(error, where, i, "path", f"{p} does not end with its relpath {rel} (every path is "
                                                 f"<dataset root>/<relpath>)", fix)
        here = p[: len(p) - len(tail)] or "/"
        if root is None:
            root = here
        elif here != root:
            raise _fail(error, where, i, "path", f"{p} lies in the dataset root {here}, but line 2's image in "
                                                 f"{root}: a manifest holds one dataset", fix)
    assert root is not None
    return root


def check_dataset_root(root: str, record: PathLike, *, relative: bool, first: Optional[str], what: str,
                       error: Type[MaskCLError], fix: str) -> None:
    """The dataset root named by ``record`` (a manifest or ``dataset.json``) is this workspace's and exists.

    ``relative``: the record stores it relative to its folder; ``first``: one file below it (the first
    image), to recognise the same file at the same place in this workspace.

    A root outside the working folder is refused when it lies inside another workspace (one that
    holds a file at ``record``'s place) or when this workspace holds its twin (the same files at the
    same place): either way the record was written in the workspace this one was copied or moved
    from. A missing root is named as such: a copy without its dataset folder, or a moved or deleted
    dataset.

    Raises
    ------
    error
        One line saying which, with ``fix``.
    """
    command = fix.split(": ", 1)[-1]
    other = other_workspace(root, record) or moved_from(first or root, record)
    if other is not None:
        if os.path.isdir(root):
            raise error(f"{record}: the {what} names images in {root}, inside another workspace ({other}): this "
                        f"workspace was copied or moved from there and must not read its files; rebuild it here: "
                        f"{command}")
        raise error(f"{record}: the {what} names images in {root}, which is gone: this workspace was moved or "
                    f"copied from {other} (the file was written before paths were stored relative); rebuild it "
                    f"here: {command}")
    if os.path.isdir(root):
        return
    if relative:
        raise error(f"{record}: the dataset folder {shown_path(root)} it names (relative to its folder) is not "
                    f"there: the workspace was copied or moved without it, or it was deleted; copy that folder "
                    f"along from the original workspace, or {fix}")
    raise error(f"{record}: the dataset folder {root} named by the {what} does not exist (moved, renamed or "
                f"deleted): restore it, or point data.root or data.sources at its new place, then {fix}")


def _checked(frame: pd.DataFrame, where: str, splits: Optional[Sequence[str]], error: Type[MaskCLError],
             fix: str) -> Tuple[pd.DataFrame, str]:
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise _fail(error, where, None, None, f"lacks column(s) {', '.join(missing)}", fix)
    if frame.empty:
        raise _fail(error, where, None, None, "has no rows", fix)
    frame = frame.reset_index(drop=True)
    _check_text(frame, where, error, fix)
    frame = _check_types(frame, where, error, fix)
    _check_unique(frame, where, error, fix)
    _check_splits(frame, where, splits, error, fix)
    return frame, _dataset_root(frame, where, error, fix)


def check_manifest_frame(frame: pd.DataFrame, where: str = "", *, splits: Optional[Sequence[str]],
                         error: Type[MaskCLError] = DatasetError, fix: Optional[str] = None) -> pd.DataFrame:
    """The checks of :func:`read_manifest` on a manifest already in memory (its paths taken as they are).

    ``where`` names the frame in messages (a file it came from); ``splits``: the dataset's split names
    (any other name is an error), None to skip that check (a caller that does not know the
    dataset). Returns the frame with the ids as ``int64`` and ``cloth_changing`` as ``bool``.
    """
    return _checked(frame, where, splits, error, fix or "rebuild it with the download rule")[0]


# ---------------------------------------------------------------------------------------------- reading
def read_manifest(path: PathLike, *, splits: Optional[Sequence[str]], error: Type[MaskCLError] = DatasetError,
                  rule: str = "download") -> pd.DataFrame:
    """The manifest at ``path``, checked (see the module), with absolute image paths.

    Parameters
    ----------
    path : path-like
        ``results/<dataset>/manifest.csv``.
    splits : sequence of str or None
        The dataset's split names (``maskcl.datasets.dataset_splits``); None where the caller does not
        know the dataset (the split names are then not checked).
    error : MaskCLError subclass
        The reading stage's kind of error.
    rule : str
        The rule that writes the manifest (named in the fix).

    Returns
    -------
    pandas.DataFrame
        The manifest's columns, in file order: ``path`` absolute, ids ``int64``.

    Raises
    ------
    error
        One line naming the file, the line and column where there is one, and the fix.
    """
    fix = rerun_hint(path, rule)
    frame = read_csv_file(path, what=_WHAT, rule=rule, columns=MANIFEST_COLUMNS, error=error,
                          dtype={c: str for c in _TEXT})
    where = str(path)
    if frame.empty:
        raise error(f"{where}: {_WHAT} has no rows; {fix}")
    _check_text(frame, where, error, fix)
    stored = frame["path"].astype(str)
    frame["path"] = resolve_all(list(stored), Path(path).parent)
    frame, root = _checked(frame, where, splits, error, fix)
    check_dataset_root(root, path, relative=not os.path.isabs(stored.iloc[0]), first=str(frame["path"].iloc[0]),
                       what=_WHAT, error=error, fix=fix)
    return frame


def read_dataset_info(path: PathLike, *, error: Type[MaskCLError] = DatasetError,
                      rule: str = "download") -> Dict[str, Any]:
    """``dataset.json`` with ``root`` absolute and checked like the manifest's (:func:`check_dataset_root`)."""
    fix = rerun_hint(path, rule)
    try:
        info = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: dataset.json not found; {fix}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path}: dataset.json is not readable JSON ({e}); {fix}") from None
    if not isinstance(info, dict) or not isinstance(info.get("name"), str) or not isinstance(info.get("root"), str):
        raise error(f"{path}: dataset.json lacks its name or root; {fix}")
    stored = info["root"]
    info["root"] = resolve_stored(stored, Path(path).parent)
    check_dataset_root(info["root"], path, relative=not os.path.isabs(stored), first=None, what="dataset.json",
                       error=error, fix=fix)
    return info
