"""Stage 1: fetch, verify and extract (or generate) a dataset, then write its manifest.

The pieces live beside this module: ``http`` (resumable download, sha256) and ``extract`` (safe
extraction); this module decides what to do with a configured source and writes the outputs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import pandas as pd

from ..errors import ConfigError, DatasetError
from ..image_modes import check_image_mode
from ..io import write_csv_atomic
from ..manifest import write_dataset_info, write_manifest
from ..repair import dataset_repair_hint
from ..workspace import check_data_folder
from .extract import EXTRACT_MARKER, remove_leftovers, safe_extract
from .http import _checksum_error, _read_meta, fetch_url, sha256_file

__all__ = ["check_images", "prepare_dataset", "PreparedDataset"]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


# ---------------------------------------------------------------------------------------------- images
def check_images(paths: List[str], progress: bool = True) -> None:
    """Open and fully decode every image; the first unreadable one, or one of a mode the loaders would
    misread (``maskcl.image_modes``: a 16-bit PNG, a CMYK JPEG), raises a ``DatasetError``.

    ``Image.verify()`` alone misses truncated files (it checks structure, not pixel data), so each
    file is verified and then reopened and loaded.
    """
    from PIL import Image
    from tqdm import tqdm

    for p in tqdm(paths, desc="verifying images", unit="img", file=sys.stderr, disable=not progress,
                  mininterval=1.0, leave=False):
        try:
            with Image.open(p) as im:
                im.verify()
            with Image.open(p) as im:
                im.load()
                mode = im.mode
        except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
            raise DatasetError(f"unreadable image {p}: {type(e).__name__}: {e}; {dataset_repair_hint(p)}") from None
        check_image_mode(p, mode, error=DatasetError, fix=dataset_repair_hint(p))


# ---------------------------------------------------------------------------------------------- stage
@dataclass
class PreparedDataset:
    """What ``prepare_dataset`` produced: the resolved root, the manifest and its statistics."""

    name: str
    root: Path
    manifest: pd.DataFrame
    stats: pd.DataFrame
    differences: List[str] = field(default_factory=list)
    info: Dict[str, Any] = field(default_factory=dict)


def _is_url(source: str) -> bool:
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", source))


def _cache_name(url: str) -> str:
    """A cache file name that keeps the URL's basename (for humans) and its hash (for uniqueness)."""
    base = PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base)[:80] or "download"
    return f"{hashlib.sha256(url.encode()).hexdigest()[:10]}-{base}"


def _remove_other_partials(folder: Path, keep: str) -> None:
    """Remove partial downloads in a dataset's cache folder that belong to another URL than ``keep``.

    The cache folder holds one dataset; a partial file of a URL no longer configured would never be
    resumed (the cache name carries the URL's hash), so it is removed, and the log says so.
    """
    if not folder.is_dir():
        return
    for p in sorted(folder.iterdir()):
        if p.name in (keep + ".part", keep + ".part.json") or not p.name.endswith((".part", ".part.json")):
            continue
        if p.is_file() and not p.is_symlink():
            size = p.stat().st_size
            p.unlink()
            if p.name.endswith(".part"):
                logger.info("removed leftover partial download %s of another source URL (%.1f MB)", p, size / 1e6)


def _extract_cached(name: str, archive: Path, sha256: Optional[str], target: Path,
                    fix: str) -> Tuple[Path, str]:
    """Extract ``archive`` to ``target`` unless ``target`` already holds exactly this archive."""
    remove_leftovers(target)
    st = archive.stat()
    identity = {"archive": str(archive.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    marker = target / EXTRACT_MARKER
    if marker.is_file():
        old = _read_meta(marker)
        same_archive = all(old.get(k) == v for k, v in identity.items())
        if same_archive and (sha256 is None or old.get("sha256") == sha256.lower()):
            logger.info("%s: %s is already extracted in %s", name, archive, target)
            return target, old.get("sha256", "")
    digest = sha256_file(archive)
    if sha256 is not None and digest != sha256.lower():
        raise _checksum_error(archive, sha256, digest,
                              f"fix data.sources.{name}.sha256 in config.yaml or replace the archive")
    safe_extract(archive, target, replace=True, marker={**identity, "sha256": digest}, fix=fix)
    return target, digest


def _missing_source(name: str) -> ConfigError:
    from ..datasets import get_dataset

    loader = get_dataset(name)
    return ConfigError(f"{name}: no source configured: set data.sources.{name}.source in config.yaml to a URL, a "
                       f"local archive or an extracted folder; {loader.source_hint()}")


def prepare_dataset(name: str, source: Optional[str], sha256: Optional[str], data_root: PathLike, cache: PathLike,
                    verify_images: bool, synthcc: Optional[Mapping[str, Any]], manifest_out: PathLike,
                    stats_out: PathLike, info_out: PathLike, *, folder: Optional[Mapping[str, Any]] = None,
                    progress: bool = True, workers: int = 1) -> PreparedDataset:
    """Fetch / extract (or generate) dataset ``name`` and write its manifest, statistics and info.

    Parameters
    ----------
    name : str
        Registry name (``maskcl.datasets.list_datasets()``).
    source : str or None
        http(s) URL (downloaded into ``cache`` with resume, extracted into ``data_root/name``), a
        local archive (extracted there), or an existing folder (used in place, never copied).
        Must be ``None`` for a generated dataset (``synthcc``).
    sha256 : str or None
        Expected digest of the archive (URL or local archive only).
    data_root, cache : path
        Extraction / generation root and download cache.
    verify_images : bool
        Decode every image once; the first unreadable file is an error.
    synthcc : mapping or None
        ``{"preset", "seed", "overrides"}`` for ``synthcc``.
    folder : mapping or None
        ``{"root", "labels", "pattern"}`` (``data.custom``) for a user's own folder
        (``ReIDDataset.user_folder``), read in place; None for every other dataset.
    manifest_out, stats_out, info_out : path
        ``manifest.csv``, ``stats.csv`` and ``dataset.json``, each written atomically; image paths
        and the root are stored relocatable (``maskcl.manifest.write_manifest``).
    progress : bool
        Progress bars on stderr.
    workers : int
        Processes used to generate SynthCC (the output does not depend on it).

    Returns
    -------
    PreparedDataset

    Raises
    ------
    ConfigError
        Unknown dataset, missing source, a sha256 given where it cannot apply, or a dataset folder
        inside ``results/`` or holding the working folder (``maskcl.workspace.check_data_folder``).
    DownloadError, ChecksumError, UnsafeArchiveError, DatasetError
        See ``fetch_url``, ``safe_extract`` and the dataset loaders.
    """
    from ..datasets import get_dataset, split_statistics
    from ..datasets.custom import CustomFolder

    loader = get_dataset(name)  # unknown names fail here, listing the known ones
    if loader.user_folder:
        own = CustomFolder.from_config(folder or {}, key=f"data.{name}")
        loader = get_dataset(name, folder=own)
        where = _Located(Path(os.path.expanduser(own.root)), "directory", own.root)
    else:
        where = _locate(loader, name, source, sha256, Path(data_root), Path(cache), synthcc, progress, workers)
    frame = loader.load(where.location)  # the same instance: SynthCC fills its expected counts while loading
    if verify_images:
        check_images(list(frame["path"]), progress=progress)
    stats = split_statistics(frame, loader.splits)
    differences = loader.official_differences(stats)
    if differences:
        logger.warning("%s: %d difference(s) from the official counts (expected for a partial or modified copy): "
                       "%s", name, len(differences), "; ".join(differences))
    elif loader.official:
        logger.info("%s: split statistics match the official counts", name)
    info = {
        "name": name,
        "root": frame.attrs["root"],
        "source": where.source,
        "source_kind": where.kind,
        "archive": str(where.archive) if where.archive is not None else None,
        "archive_sha256": where.digest,
        "images": int(len(frame)),
        "columns": list(frame.columns),
        "stats": stats.to_dict(orient="records"),
        "official": {s: {k: v for k, v in vars(off).items() if v is not None} for s, off in loader.official.items()},
        "official_differences": differences,
        "attrs": {k: v for k, v in frame.attrs.items() if k not in ("root", "dataset")},
    }
    write_manifest(frame, manifest_out)
    write_csv_atomic(stats_out, stats)
    write_dataset_info(info, info_out)
    logger.info("%s: %d images in %d splits from %s; manifest %s", name, len(frame), len(stats), frame.attrs["root"],
                manifest_out)
    return PreparedDataset(name=name, root=Path(frame.attrs["root"]), manifest=frame, stats=stats,
                           differences=differences, info=info)


@dataclass(frozen=True)
class _Located:
    """Where a dataset's files are and how they got there (``source_kind`` of ``dataset.json``)."""

    location: Path
    kind: str                        # generated, url, archive or directory
    source: Optional[str] = None     # the configured source, stripped
    archive: Optional[Path] = None   # the archive extracted (url, archive)
    digest: Optional[str] = None     # its sha256


def _locate(loader: Any, name: str, source: Optional[str], sha256: Optional[str], data_root: Path, cache: Path,
            synthcc: Optional[Mapping[str, Any]], progress: bool, workers: int) -> _Located:
    """Generate, download and extract, extract, or take in place: the dataset's folder, by its source."""
    if loader.generated:
        shown = loader.display_name
        if source is not None:
            raise ConfigError(f"data.sources.{name}.source is set, but {shown} is generated, not downloaded; "
                              f"remove it ({shown} is configured under data.{name})")
        check_data_folder(data_root / name)  # before anything is generated there
        return _Located(loader.generate(data_root / name, dict(synthcc or {}), workers=max(1, int(workers))),
                        "generated", source)
    if source is None or not str(source).strip():
        raise _missing_source(name)
    source = str(source).strip()
    if _is_url(source):
        if urllib.parse.urlsplit(source).scheme.lower() not in ("http", "https"):
            raise ConfigError(f"data.sources.{name}.source: {source!r} is not an http(s) URL; use http(s), a "
                              f"local archive or a folder")
        check_data_folder(data_root / name)  # before anything is downloaded or extracted
        cached = cache / name / _cache_name(source)
        _remove_other_partials(cached.parent, cached.name)
        archive = fetch_url(source, cached, sha256, progress=progress, pin_key=f"data.sources.{name}.sha256")
        location, digest = _extract_cached(name, archive, sha256, data_root / name,
                                           f"delete {archive} and rerun to download it again")
        return _Located(location, "url", source, archive, digest)
    local = Path(os.path.expanduser(source))
    if local.is_dir():
        if sha256 is not None:
            raise ConfigError(f"data.sources.{name}.sha256 is set but the source {local} is a folder; a "
                              f"checksum applies to archives only: remove it")
        return _Located(local, "directory", source)
    if local.is_file():
        check_data_folder(data_root / name)
        location, digest = _extract_cached(name, local, sha256, data_root / name,
                                           f"replace {local} with a complete copy (download it again) and rerun")
        return _Located(location, "archive", source, local, digest)
    raise DatasetError(f"{name}: source {local} does not exist; fix data.sources.{name}.source in "
                       f"config.yaml (a URL, a local archive or an extracted folder)")
