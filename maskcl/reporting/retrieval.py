"""Ranked-retrieval grids: a query and its top-k gallery images, bordered by correctness.

Green: a correct match (same identity, counted by the protocol). Red: another identity. Grey with
"junk": same identity but excluded by the protocol (same camera, or same clothes under the
clothes-changing rule), which the metrics skip. The mask the run trained with is drawn beside each
image when its index is available.
"""

from __future__ import annotations

import logging
import os
import textwrap
import zipfile
import zlib
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import pandas as pd

from ..errors import ReportingError
from ..upstream import rerun_hint
from .plotting import COLOURS, load_tile, new_figure, save_figure

__all__ = ["FLAG_NAMES", "RANK_ARRAYS", "read_ranks", "select_queries", "retrieval_frame", "plot_retrieval"]

log = logging.getLogger(__name__)

#: ``topk_flags`` codes of ranks.npz → names (``maskcl.evaluation.output.write_ranks``).
FLAG_NAMES = {1: "good", 2: "junk", 0: "wrong"}
#: The arrays saved per protocol.
RANK_ARRAYS = ("query_rows", "topk_rows", "topk_flags", "first_match", "ap")


def read_ranks(path: os.PathLike | str, protocol: Optional[str] = None,
               manifest_rows: Optional[int] = None) -> Tuple[str, Dict[str, np.ndarray]]:
    """One protocol's arrays from ``ranks.npz`` (default: the headline protocol saved first), checked.

    Checked against what ``maskcl.evaluation.output.write_ranks`` writes: a whole archive; the five
    arrays of the protocol with aligned shapes ((Q,), (Q, k), (Q, k), (Q,), (Q,)); flags 0, 1 or 2;
    rows -1 or more (below ``manifest_rows`` when given); AP in [0, 1] and NaN exactly where
    ``first_match`` is -1 (a skipped query).

    Returns
    -------
    (str, dict)
        The protocol name and ``query_rows``, ``topk_rows``, ``topk_flags``, ``first_match``, ``ap``.

    Raises
    ------
    ReportingError
        Unreadable, truncated or inconsistent file, or a protocol not saved in it; the message names
        the file and the command that re-evaluates the run.
    """
    fix = rerun_hint(path, "evaluate")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "protocols" not in z.files:
                raise ReportingError(f"{path}: no 'protocols' array (not a ranks.npz written by maskcl.evaluation); "
                                     f"{fix}")
            saved = [str(x) for x in np.atleast_1d(z["protocols"])]
            if not saved:
                raise ReportingError(f"{path}: no protocol saved; {fix}")
            name = protocol if protocol is not None else saved[0]
            if name not in saved:
                raise ReportingError(f"{path}: protocol {name!r} not saved (saved: {', '.join(saved)}); {fix}")
            missing = [k for k in RANK_ARRAYS if f"{name}.{k}" not in z.files]
            if missing:
                raise ReportingError(f"{path}: protocol {name!r} lacks array(s) {', '.join(missing)}; {fix}")
            arrays = {k: z[f"{name}.{k}"] for k in RANK_ARRAYS}
    except FileNotFoundError:
        raise ReportingError(f"{path}: ranks file not found; run the evaluate rule for this run") from None
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ReportingError(f"{path}: not a whole ranks.npz written by maskcl.evaluation ({reason}: truncated or "
                             f"garbled); {fix}") from None
    _check_ranks(path, name, arrays, manifest_rows, fix)
    return name, arrays


def _check_ranks(path: os.PathLike | str, name: str, a: Mapping[str, np.ndarray], manifest_rows: Optional[int],
                 fix: str) -> None:
    def bad(what: str) -> ReportingError:
        return ReportingError(f"{path}: {name}.{what}; {fix}")

    q = a["query_rows"]
    if q.ndim != 1:
        raise bad(f"query_rows has shape {q.shape}, not (Q,)")
    n = q.shape[0]
    for k, ndim in (("topk_rows", 2), ("topk_flags", 2), ("first_match", 1), ("ap", 1)):
        if a[k].ndim != ndim or a[k].shape[0] != n:
            want = "(Q, k)" if ndim == 2 else "(Q,)"
            raise bad(f"{k} has shape {a[k].shape}, not {want} with Q = {n} queries")
    if a["topk_flags"].shape != a["topk_rows"].shape:
        raise bad(f"topk_flags has shape {a['topk_flags'].shape} but topk_rows {a['topk_rows'].shape}")
    for k in ("query_rows", "topk_rows", "topk_flags", "first_match"):
        if a[k].size and not np.issubdtype(a[k].dtype, np.integer):
            raise bad(f"{k} holds {a[k].dtype}, not integers")
    if not np.issubdtype(a["ap"].dtype, np.floating):
        raise bad(f"ap holds {a['ap'].dtype}, not floats")
    if q.size and q.min() < 0:
        raise bad(f"query_rows has row {int(q.min())} (below 0)")
    for k in ("topk_rows", "first_match"):
        if a[k].size and a[k].min() < -1:
            raise bad(f"{k} has value {int(a[k].min())} (below -1)")
    flags = np.unique(a["topk_flags"])
    odd = flags[~np.isin(flags, list(FLAG_NAMES))]
    if odd.size:
        raise bad(f"topk_flags has code {int(odd[0])} (known: {', '.join(map(str, sorted(FLAG_NAMES)))})")
    if manifest_rows is not None:
        top = max([int(x.max()) for x in (q, a["topk_rows"]) if x.size] or [-1])
        if top >= manifest_rows:
            raise ReportingError(f"{path}: {name} refers to manifest row {top} but the manifest has {manifest_rows} "
                                 f"rows (evaluated on another manifest); {fix}")
    ap = a["ap"]
    finite = ap[~np.isnan(ap)]
    if np.isinf(finite).any() or (finite.size and (finite.min() < 0 or finite.max() > 1)):
        v = finite[np.isinf(finite) | (finite < 0) | (finite > 1)][0]
        raise bad(f"ap has {float(v)!r}, outside [0, 1]")
    if not np.array_equal(np.isnan(ap), a["first_match"] < 0):
        raise bad("ap is NaN for other queries than those first_match marks skipped (-1)")


def select_queries(first_match: np.ndarray, num: int, seed: int) -> np.ndarray:
    """``num`` query positions with a valid match, drawn reproducibly from ``seed``, in ascending order."""
    valid = np.flatnonzero(first_match >= 0)
    if valid.size == 0:
        return valid
    rng = np.random.default_rng(seed)
    pick = rng.choice(valid, size=min(num, valid.size), replace=False)
    return np.sort(pick)


def retrieval_frame(arrays: Mapping[str, np.ndarray], manifest: pd.DataFrame, queries: np.ndarray, topk: int,
                    masks: Optional[Mapping[str, str]] = None, gallery_size: Optional[int] = None) -> pd.DataFrame:
    """The cells of a grid: one row per (query, position), position 0 being the query itself.

    Parameters
    ----------
    arrays : mapping
        From ``read_ranks``.
    manifest : pandas.DataFrame
        The dataset manifest; ranks rows are positional indices into it.
    queries : array of int
        Positions into ``arrays['query_rows']``.
    topk : int
        Gallery columns (at most the saved k).
    masks : mapping relpath → mask path, optional
    gallery_size : int, optional
        The protocol's gallery size (metrics.json ``num_gallery``): the evaluation saves at most that many
        columns, so a gallery smaller than ``topk`` is drawn whole instead of failing the grid.

    Returns
    -------
    pandas.DataFrame
        query (grid row), ranks_query (its index in the ranks arrays), position (0 = the query),
        manifest_row, relpath, path, pid, camid, clothes_id, flag (query, good, junk, wrong, none),
        ap (query rows), mask.
    """
    saved_k = arrays["topk_rows"].shape[1]
    if gallery_size is not None and saved_k >= gallery_size:
        topk = min(topk, saved_k)
    if topk > saved_k:
        raise ReportingError(f"tables.topk_grid is {topk} but ranks.npz keeps only the top {saved_k}; lower "
                             f"tables.topk_grid or raise evaluate.topk and rerun the evaluate rule")
    n = len(manifest)
    rows: List[Dict[str, Any]] = []

    def cell(q: int, qpos: int, pos: int, mrow: int, flag: str, ap: float = float("nan")) -> Dict[str, Any]:
        if mrow < 0:
            return {"query": q, "ranks_query": qpos, "position": pos, "manifest_row": -1, "relpath": "", "path": "",
                    "pid": None, "camid": None, "clothes_id": None, "flag": "none", "ap": ap, "mask": ""}
        if mrow >= n:
            raise ReportingError(f"ranks.npz refers to manifest row {mrow} but the manifest has {n} rows; rerun the "
                                 f"evaluate rule after the download stage")
        m = manifest.iloc[mrow]
        rel = str(m["relpath"])
        return {"query": q, "ranks_query": qpos, "position": pos, "manifest_row": int(mrow), "relpath": rel,
                "path": str(m["path"]), "pid": int(m["pid"]), "camid": int(m["camid"]),
                "clothes_id": int(m["clothes_id"]), "flag": flag, "ap": ap, "mask": (masks or {}).get(rel, "")}

    for i, q in enumerate(queries):
        rows.append(cell(i, int(q), 0, int(arrays["query_rows"][q]), "query", float(arrays["ap"][q])))
        for j in range(topk):
            g = int(arrays["topk_rows"][q, j])
            rows.append(cell(i, int(q), j + 1, g, FLAG_NAMES[int(arrays["topk_flags"][q, j])] if g >= 0 else "none"))
    return pd.DataFrame(rows)


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)], np.uint8)


def _bordered(tile: np.ndarray, flag: str, width: int) -> np.ndarray:
    """The tile inside a solid border (dashed for junk) of the flag's colour."""
    h, w, _ = tile.shape
    out = np.full((h + 2 * width, w + 2 * width, 3), 255, np.uint8)
    colour = _rgb(COLOURS[flag])
    ring = np.zeros(out.shape[:2], bool)
    ring[:width], ring[-width:], ring[:, :width], ring[:, -width:] = True, True, True, True
    if flag == "junk":                                   # dashes: 6 px on, 6 px off along every edge
        yy, xx = np.indices(ring.shape)
        ring &= ((yy + xx) // 6) % 2 == 0
    out[ring] = colour
    out[width:width + h, width:width + w] = tile
    return out


def plot_retrieval(frame: pd.DataFrame, png: os.PathLike | str, *, title: str,
                   tile_height: int = 96, border: int = 4) -> Tuple[Path, Path]:
    """Draw a grid from ``retrieval_frame`` (one composed image, labels above each cell); PNG + sidecar.

    A frame with a ``caption`` column (``maskcl rank``: images without identities, flag ``unlabelled``)
    has its own text above each cell instead of the identity and correctness.

    Raises
    ------
    ReportingError
        Empty frame, or an image or mask file that cannot be read.
    """
    if frame.empty:
        raise ReportingError(f"{png}: no queries to draw")
    nq = int(frame["query"].max()) + 1
    ncol = int(frame["position"].max()) + 1
    tiles: Dict[Tuple[int, int], np.ndarray] = {}
    for _, c in frame.iterrows():
        if c["flag"] != "none":
            tile = load_tile(c["path"], tile_height, c["mask"] or None)
            tiles[(int(c["query"]), int(c["position"]))] = _bordered(tile, c["flag"], border)
    cell_w = max(t.shape[1] for t in tiles.values()) + 12
    cell_h = tile_height + 2 * border
    label_h, gap_after_query = 26, 14
    width = ncol * cell_w + gap_after_query
    height = nq * (cell_h + label_h)
    canvas = np.full((height, width, 3), 255, np.uint8)
    fig = new_figure(width / 80 + 0.2, height / 80 + 0.7)
    ax = fig.add_subplot()
    texts = []
    for _, c in frame.iterrows():
        q, pos = int(c["query"]), int(c["position"])
        x0 = pos * cell_w + (gap_after_query if pos > 0 else 0)
        y0 = q * (cell_h + label_h) + label_h
        tile = tiles.get((q, pos))
        if tile is None:
            continue
        canvas[y0:y0 + tile.shape[0], x0:x0 + tile.shape[1]] = tile
        flag = c["flag"]
        if isinstance(c.get("caption"), str) and c["caption"]:
            text, colour = c["caption"], COLOURS["query" if flag == "query" else "unlabelled"]
        elif flag == "query":
            ap = "" if np.isnan(c["ap"]) else f", AP {100 * c['ap']:.0f}"
            text, colour = f"query id {c['pid']}{ap}", COLOURS["query"]
        elif flag == "junk":
            text, colour = f"junk: id {c['pid']}", "black"
        else:
            text, colour = f"{pos}: id {c['pid']}", COLOURS[flag]
        texts.append((x0 + tile.shape[1] / 2, y0 - 4, text, colour))
    ax.imshow(canvas, interpolation="nearest")
    for x, y, text, colour in texts:
        ax.text(x, y, text, ha="center", va="bottom", fontsize=6.5, color=colour)
    ax.set_axis_off()
    ax.set_title(textwrap.fill(title, 120), fontsize=8)
    return save_figure(fig, png, frame.reset_index(drop=True))
