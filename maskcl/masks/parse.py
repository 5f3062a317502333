"""The resumable parse stage: masks for every image of a manifest, then the declared index.

Snakemake deletes a job's declared outputs when it fails, so the masks themselves are undeclared
state in ``results/{dataset}/masks/{source}/``; only ``index.csv`` is declared and written last. A
killed job therefore keeps every finished mask (each written atomically) and the rerun parses only
the images whose three outputs are missing or invalid. ``params.json`` records what produced the
masks; when the requested source parameters differ, the old masks are stale and are deleted first.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Deque, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..errors import DatasetError, MaskCLError
from ..io import read_json, write_csv_atomic, write_json_atomic
from ..manifest import check_manifest_frame, read_manifest
from .index import MASK_FILE_COLUMNS
from .outputs import MASK_KINDS, MaskPaths, check_masks, mask_paths, remove_leftovers, write_masks
from .sources import (ImageReadError, MaskItem, MaskSource, resolve_parsing, build_mask_source,
                      image_size)

__all__ = ["ParseResult", "INDEX_COLUMNS", "FORMAT_VERSION", "parse_dataset"]

log = logging.getLogger(__name__)

#: Columns of ``index.csv``; mask paths are stored relative to the index's folder (read back absolute
#: by ``maskcl.masks.index.read_mask_index``), so a moved or copied workspace reads its own masks.
INDEX_COLUMNS: Tuple[str, ...] = ("relpath", "split", "label", "silhouette", "parts", "height", "width",
                                  "fg_fraction")
#: Bumped when the layout or encoding of the mask files changes (old folders become stale).
FORMAT_VERSION = 1
_SHOWN = 3


@dataclass
class ParseResult:
    """What ``parse_dataset`` did.

    Attributes
    ----------
    index : pd.DataFrame
        ``INDEX_COLUMNS``, one row per manifest image, in manifest order, mask paths absolute (written
        to disk with the mask paths relative to the index's folder).
    processed : int
        Images parsed by this call.
    reused : int
        Images whose valid masks were already on disk.
    reset : bool
        Old masks were deleted because their ``params.json`` differed from the request.
    index_path : Path
    """

    index: pd.DataFrame
    processed: int
    reused: int
    reset: bool
    index_path: Path


def _manifest(manifest: Union[str, Path, pd.DataFrame], splits: Optional[Sequence[str]]) -> pd.DataFrame:
    """The manifest, checked (``maskcl.manifest``): read from its file, or a frame given in memory."""
    if isinstance(manifest, pd.DataFrame):
        return check_manifest_frame(manifest, splits=splits)
    return read_manifest(manifest, splits=splits)


class _Loader(Dataset):
    """Runs ``source.load`` in DataLoader workers; errors travel back as one-line strings so that
    the main process can report every bad file in one message."""

    def __init__(self, source: MaskSource, items: Sequence[MaskItem]) -> None:
        self.source = source
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Tuple[int, Any, Optional[Tuple[int, int]], Optional[str]]:
        item = self.items[i]
        try:
            size = image_size(item.path)
            return i, self.source.load(item), size, None
        except MaskCLError as e:
            return i, None, None, str(e)


def _collate(batch: List[Any]) -> List[Any]:
    return batch


def _normalised(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True))


def _diff(old: Any, new: Any, prefix: str = "") -> List[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: List[str] = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def _prepare_folder(out_dir: Path, desc: Dict[str, Any], index_path: Path, name: str) -> bool:
    """Make ``out_dir`` hold masks of ``desc`` only; returns True when stale masks were deleted."""
    pfile = out_dir / "params.json"
    old: Optional[Dict[str, Any]] = None
    if pfile.is_file():
        try:
            old = read_json(pfile)
        except (OSError, ValueError):
            old = {"unreadable": str(pfile)}
    if old == desc:
        return False
    trees = [out_dir / kind for kind in MASK_KINDS]
    reset = False
    if old is not None or any(t.exists() for t in trees):
        why = "; ".join(_diff(old, desc)[:4]) if old is not None else "no params.json beside them"
        log.warning("parse[%s]: existing masks in %s were made with other parameters (%s): deleting them "
                    "and starting over", name, out_dir, why)
        for t in trees:
            if t.exists():
                shutil.rmtree(t)
        index_path.unlink(missing_ok=True)
        reset = True
    write_json_atomic(pfile, desc)
    return reset


def parse_dataset(manifest: Union[str, Path, pd.DataFrame], out_dir: Union[str, Path],
                  source: Union[str, MaskSource], *, source_params: Optional[Mapping[str, Any]] = None,
                  index_path: Optional[Union[str, Path]] = None, threads: Optional[int] = None,
                  writers: int = 4, progress: bool = True, splits: Optional[Sequence[str]] = None) -> ParseResult:
    """Write the masks of every manifest image (skipping finished ones), then ``index.csv``.

    Parameters
    ----------
    manifest : path or DataFrame
        The dataset manifest (columns ``path``, ``relpath``, ``split``; ``parsing`` for ground truth).
    out_dir : path
        ``results/{dataset}/masks/{source}``; ``labels/``, ``silhouette/``, ``parts/`` mirror the
        image tree below it.
    source : str or MaskSource
        A registered name (built with ``source_params``) or a ready instance.
    source_params : mapping, optional
        Keyword arguments of the source when ``source`` is a name.
    index_path : path, optional
        Where to write the index (default ``out_dir/index.csv``).
    threads : int, optional
        ``torch.set_num_threads`` for sources that run torch on the CPU.
    writers : int
        Threads encoding and writing the mask PNGs while the source works on the next batch.
    progress : bool
        Show a tqdm bar on stderr.
    splits : sequence of str, optional
        The dataset's split names (``maskcl.datasets.dataset_splits``), checked against the manifest's.

    Returns
    -------
    ParseResult
        The index and how many images were parsed now versus reused.

    Raises
    ------
    DatasetError
        A missing or bad manifest (``maskcl.manifest.read_manifest``), or two images mapping to one
        mask file.
    ImageReadError
        One or more input images could not be read: one line naming the first few. Masks of every
        readable image are kept and the index is not written, so a rerun after fixing the files
        parses only those.
    """
    frame = _manifest(manifest, splits)
    if isinstance(source, str):
        source = build_mask_source(source, **dict(source_params or {}))
    name = source.name
    out_dir = Path(out_dir).resolve()
    index_path = Path(index_path) if index_path is not None else out_dir / "index.csv"
    if threads:
        torch.set_num_threads(int(threads))
    items, paths = _scan(frame, source, out_dir)
    desc = _normalised({"format": FORMAT_VERSION, **source.describe()})
    reset = _prepare_folder(out_dir, desc, index_path, name)
    leftovers = remove_leftovers(out_dir)
    if leftovers:
        log.info("parse[%s]: removed %d temporary file(s) left by an interrupted run", name, leftovers)
    sizes, fg = _reuse(items, paths, source.label_set.num_classes, writers)
    pending = [i for i in range(len(items)) if fg[i] is None]
    reused = len(items) - len(pending)
    log.info("parse[%s]: %d images, %d already done, %d to process", name, len(items), reused, len(pending))
    errors: List[str] = []
    done = _predict(source, items, paths, pending, sizes, fg, errors, writers, progress) if pending else 0
    if errors:
        more = f" (and {len(errors) - _SHOWN} more)" if len(errors) > _SHOWN else ""
        raise ImageReadError(f"{len(errors)} input image(s) could not be parsed: "
                             f"{' | '.join(errors[:_SHOWN])}{more}; the masks of the other images are kept")
    index = _write_index(index_path, frame, items, paths, sizes, fg)
    log.info("parse[%s]: wrote %s (%d rows, mean foreground %.3f)", name, index_path, len(index),
             float(index["fg_fraction"].mean()) if len(index) else float("nan"))
    return ParseResult(index=index, processed=done, reused=reused, reset=reset, index_path=index_path)


def _scan(frame: pd.DataFrame, source: MaskSource, out_dir: Path) -> Tuple[List[MaskItem], List[MaskPaths]]:
    """Each manifest image as the source reads it and the mask files it gets; two images on one file are refused."""
    name = source.name
    has_gt = "parsing" in frame.columns
    if getattr(source, "needs_ground_truth", False) and not has_gt:
        raise DatasetError(f"mask source {name} needs a manifest with a 'parsing' column (ground-truth label "
                           f"maps); this dataset has none: remove {name} from masks.sources for it")
    items: List[MaskItem] = []
    paths: List[MaskPaths] = []
    seen: Dict[Path, str] = {}
    for row in frame.itertuples(index=False):
        rel = str(row.relpath)
        gt = resolve_parsing(str(row.path), rel, getattr(row, "parsing", None)) if has_gt else None
        items.append(MaskItem(path=str(row.path), relpath=rel, parsing=gt))
        mp = mask_paths(out_dir, rel)
        if mp.labels in seen:
            raise DatasetError(f"images {seen[mp.labels]} and {rel} map to the same mask file {mp.labels.name}; "
                               f"rename one of them")
        seen[mp.labels] = rel
        paths.append(mp)
    return items, paths


def _reuse(items: Sequence[MaskItem], paths: Sequence[MaskPaths], n_classes: int, writers: int
           ) -> Tuple[List[Optional[Tuple[int, int]]], List[Optional[float]]]:
    """Each image's size and foreground fraction where its masks on disk are whole and fit it; None to parse."""
    def existing(i: int) -> Tuple[Optional[Tuple[int, int]], Optional[float]]:
        if not paths[i].labels.is_file():
            return None, None
        try:
            size = image_size(items[i].path)
        except ImageReadError:
            return None, None
        return size, check_masks(paths[i], size, n_classes)

    with ThreadPoolExecutor(max_workers=max(1, writers)) as pool:  # PNG decoding releases the GIL
        found = list(pool.map(existing, range(len(items))))
    return [size for size, _ in found], [frac for _, frac in found]


def _predict(source: MaskSource, items: Sequence[MaskItem], paths: Sequence[MaskPaths], pending: Sequence[int],
             sizes: List[Optional[Tuple[int, int]]], fg: List[Optional[float]], errors: List[str], writers: int,
             progress: bool) -> int:
    """Parse the ``pending`` images, writing each one's masks as it comes (``sizes``, ``fg`` filled in place,
    unreadable images appended to ``errors``); the number parsed."""
    name = source.name
    done = 0
    start = time.perf_counter()
    loader = DataLoader(_Loader(source, [items[i] for i in pending]), batch_size=max(1, source.batch_size),
                        shuffle=False, num_workers=max(0, source.workers), collate_fn=_collate)
    bar = tqdm(total=len(pending), desc=f"parse {name}", unit="img", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    # PNG encoding runs in threads (zlib releases the GIL) while the next batch is predicted.
    writing: Deque[Tuple[int, Future]] = deque()
    limit = 4 * max(1, source.batch_size) + 4 * max(1, writers)

    def finish(block_until: int) -> None:
        nonlocal done
        while len(writing) > block_until:
            i, fut = writing.popleft()
            fg[i] = fut.result()
            done += 1
            bar.update(1)

    try:
        with ThreadPoolExecutor(max_workers=max(1, writers)) as pool:
            for batch in loader:
                good = [(pending[j], sample, size) for j, sample, size, err in batch if err is None]
                bad = [err for _, _, _, err in batch if err is not None]
                errors += bad
                bar.update(len(bad))
                labels = source.predict([sample for _, sample, _ in good]) if good else []
                if len(labels) != len(good):
                    raise RuntimeError(f"mask source {name} returned {len(labels)} maps for {len(good)} "
                                       f"images (a bug in the source)")
                for (i, _sample, size), lab in zip(good, labels):
                    if lab.shape != size:
                        raise RuntimeError(f"mask source {name} returned a {lab.shape} map for "
                                           f"{items[i].path} of size {size} (a bug in the source)")
                    sizes[i] = size
                    writing.append((i, pool.submit(write_masks, paths[i], lab, source.label_set)))
                finish(limit)
            finish(0)
    finally:
        bar.close()
        source.close()
    elapsed = time.perf_counter() - start
    log.info("parse[%s]: processed %d images in %.1f s (%.2f img/s)", name, done, elapsed, done / max(elapsed, 1e-9))
    return done


def _write_index(index_path: Path, frame: pd.DataFrame, items: Sequence[MaskItem], paths: Sequence[MaskPaths],
                 sizes: Sequence[Optional[Tuple[int, int]]], fg: Sequence[Optional[float]]) -> pd.DataFrame:
    """``index.csv``, written last (atomically) with the mask paths relative to its folder; returned absolute."""
    index = pd.DataFrame({
        "relpath": [it.relpath for it in items],
        "split": frame["split"].astype(str).tolist(),
        "label": [str(p.labels) for p in paths],
        "silhouette": [str(p.silhouette) for p in paths],
        "parts": [str(p.parts) for p in paths],
        "height": [s[0] if s else -1 for s in sizes],
        "width": [s[1] if s else -1 for s in sizes],
        "fg_fraction": np.round(np.asarray(fg, dtype=np.float64), 6),
    }, columns=list(INDEX_COLUMNS))
    here = Path(os.path.realpath(Path(index_path).parent))   # the masks are stored relative to the index
    on_disk = index.assign(**{c: [Path(os.path.relpath(p, here)).as_posix() for p in index[c]]
                              for c in MASK_FILE_COLUMNS})
    write_csv_atomic(index_path, on_disk)
    return index
