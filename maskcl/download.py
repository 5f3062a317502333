"""Stage 1: fetch, verify and extract (or generate) a dataset, then write its manifest.

Downloads resume: bytes go to ``<dest>.part`` in the cache folder (outside Snakemake's declared
outputs, which Snakemake deletes when a job fails) and a later call continues with an HTTP
``Range`` request. The file gets its final name only once it is complete and its sha256 matches.
Archives are extracted only after *every* member has been checked (no absolute paths, no ``..``,
no link or device pointing outside the target), into a temporary folder beside the target that is
renamed into place, so a failed or refused extraction leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import socket
import stat
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import pandas as pd

from . import __version__
from .errors import ChecksumError, ConfigError, DatasetError, DownloadError, UnsafeArchiveError
from .io import write_csv_atomic, write_json_atomic

__all__ = ["fetch_url", "safe_extract", "sha256_file", "check_images", "prepare_dataset", "PreparedDataset",
           "EXTRACT_MARKER"]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: Written into every extracted tree; identifies the archive it came from (and that we own it).
EXTRACT_MARKER = ".maskcl-extracted.json"

_USER_AGENT = f"maskcl-pipeline/{__version__} (+urllib)"
_RETRY_HTTP = {408, 425, 429, 500, 502, 503, 504}


# ---------------------------------------------------------------------------------------------- hashing
def sha256_file(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 digest of a file, read in chunks (archives can be tens of GB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


def _checksum_error(path: Path, expected: str, actual: str, fix: str) -> ChecksumError:
    return ChecksumError(f"{path}: sha256 mismatch: expected {expected.lower()}, got {actual}; {fix}")


# ---------------------------------------------------------------------------------------------- download
class _Retry(Exception):
    """A transient failure: the partial file is kept and the next attempt resumes from it."""


def _progress(total: Optional[int], initial: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                file=sys.stderr, disable=not enabled, mininterval=0.5, leave=False)


def _read_meta(meta: Path) -> Dict[str, Any]:
    try:
        return json.loads(meta.read_text())
    except (OSError, ValueError):
        return {}


def _reset_partial(part: Path, meta: Path) -> None:
    for p in (part, meta):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _content_range(value: Optional[str]) -> Tuple[Optional[int], Optional[int]]:
    """(start, total) of a ``Content-Range: bytes START-END/TOTAL`` (or ``bytes */TOTAL``) header."""
    m = re.match(r"^\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*$", value or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return start, total


def _download_once(url: str, part: Path, meta: Path, timeout: float, chunk_size: int, progress: bool,
                   desc: str) -> None:
    """One HTTP request that appends to ``part``; raises ``_Retry`` on anything worth retrying."""
    info = _read_meta(meta)
    offset = part.stat().st_size if part.exists() else 0
    if offset and info.get("url") != url:  # a leftover from another URL: never splice two files
        _reset_partial(part, meta)
        offset, info = 0, {}
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        validator = info.get("etag") or info.get("last_modified")
        if validator:
            headers["If-Range"] = validator
    request = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and offset:
            _, total = _content_range(e.headers.get("Content-Range"))
            if total == offset:
                logger.info("%s: the partial download is already complete (%d bytes)", url, offset)
                return
            _reset_partial(part, meta)
            raise _Retry(f"the server refused to resume at byte {offset}; restarting from zero") from None
        if e.code in _RETRY_HTTP:
            raise _Retry(f"HTTP {e.code} {e.reason}") from None
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}; check the URL (and that it is publicly "
                            f"reachable without a login)") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        reason = getattr(e, "reason", e)
        raise _Retry(f"{type(e).__name__}: {reason}") from None
    with resp:
        status = getattr(resp, "status", 200)
        length = resp.headers.get("Content-Length")
        if status == 206:
            start, total = _content_range(resp.headers.get("Content-Range"))
            if start != offset:
                _reset_partial(part, meta)
                raise _Retry(f"the server resumed at byte {start}, not {offset}; restarting from zero")
            mode = "ab"
        elif status == 200:
            if offset:
                logger.info("%s: the server ignored the Range request (or the file changed); "
                            "restarting from zero", url)
            offset, mode = 0, "wb"
            total = int(length) if length and length.isdigit() else None
        else:
            raise DownloadError(f"{url}: unexpected HTTP status {status}; check the URL")
        info = {"url": url, "etag": resp.headers.get("ETag"), "last_modified": resp.headers.get("Last-Modified"),
                "total": total}
        meta.write_text(json.dumps(info))
        with open(part, mode) as f, _progress(total, offset, desc, progress) as bar:
            try:
                while True:
                    block = resp.read(chunk_size)
                    if not block:
                        break
                    f.write(block)
                    bar.update(len(block))
            except (http.client.HTTPException, OSError, socket.timeout) as e:
                f.flush()
                raise _Retry(f"connection lost after {f.tell()} bytes ({type(e).__name__}: {e})") from None
    size = part.stat().st_size
    if total is not None and size < total:
        raise _Retry(f"connection closed after {size} of {total} bytes")
    if total is not None and size > total:
        _reset_partial(part, meta)
        raise _Retry(f"received {size} bytes but expected {total}; restarting from zero")


def fetch_url(url: str, dest: PathLike, sha256: Optional[str] = None, *, retries: int = 3, timeout: float = 60.0,
              chunk_size: int = 1 << 20, backoff: float = 1.0, progress: bool = True) -> Path:
    """Download ``url`` to ``dest``, resuming a previous partial download, and verify its sha256.

    Parameters
    ----------
    url : str
        http(s) URL.
    dest : path
        Final file. Bytes arrive in ``<dest>.part`` (plus a small ``<dest>.part.json`` recording the
        URL and the server's validators, so a resume never splices two different files); the final
        name appears only when the file is complete and verified.
    sha256 : str, optional
        Expected hex digest. A mismatch deletes the partial file and raises. Without it, the digest
        is logged so that it can be pinned in ``config.yaml``.
    retries : int
        Further attempts after a transient failure (connection lost, timeout, HTTP 5xx/429); each
        resumes where the previous one stopped, after ``backoff * 2**k`` seconds.
    timeout : float
        Socket timeout in seconds.
    chunk_size : int
        Bytes per read.
    progress : bool
        Show a tqdm progress bar on stderr.

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    DownloadError
        Permanent HTTP error, or still failing after ``retries`` retries (the partial file is kept).
    ChecksumError
        The complete file does not match ``sha256``.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    meta = dest.with_name(dest.name + ".part.json")
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise DownloadError(f"{url}: only http:// and https:// URLs can be downloaded")
    if dest.exists():
        if sha256 is None:
            logger.info("%s: using the cached download %s", url, dest)
            return dest
        actual = sha256_file(dest)
        if actual == sha256.lower():
            logger.info("%s: using the cached download %s (sha256 verified)", url, dest)
            return dest
        logger.warning("%s: cached %s has sha256 %s, not the expected %s; downloading it again",
                       url, dest, actual, sha256.lower())
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    attempt = 0
    while True:
        try:
            _download_once(url, part, meta, timeout, chunk_size, progress, dest.name)
            break
        except _Retry as e:
            have = part.stat().st_size if part.exists() else 0
            if attempt >= retries:
                kept = (f"{have} bytes are kept in {part} and the next run resumes from there" if have
                        else "rerun when the server is reachable")
                raise DownloadError(f"{url}: download failed after {attempt + 1} attempt(s): {e}; {kept}") from None
            attempt += 1
            delay = backoff * 2 ** (attempt - 1)
            logger.warning("%s: %s; retry %d/%d in %.1f s (resuming at byte %d)", url, e, attempt, retries,
                           delay, have)
            time.sleep(delay)
    actual = sha256_file(part)
    if sha256 is not None and actual != sha256.lower():
        _reset_partial(part, meta)
        raise _checksum_error(dest, sha256, actual,
                              "the download was deleted; rerun to fetch it again, or if the file on the "
                              "server changed on purpose, update the sha256 in config.yaml")
    if sha256 is None:
        logger.info("%s: sha256 %s (set it as the source's sha256 in config.yaml to pin this file)", dest, actual)
    os.replace(part, dest)
    with contextlib.suppress(FileNotFoundError):
        meta.unlink()
    logger.info("downloaded %s (%d bytes)", dest, dest.stat().st_size)
    return dest


# ---------------------------------------------------------------------------------------------- extraction
@dataclass
class _Member:
    """One archive entry, normalised for checking."""

    parts: Tuple[str, ...]
    kind: str  # "file", "dir", "symlink", "hardlink"
    link: Optional[str] = None
    raw: Any = None


def _is_absolute(name: str) -> bool:
    """Absolute on POSIX or Windows (``/x``, ``\\x``, ``C:x``), whatever the host system."""
    norm = name.replace("\\", "/")
    return norm.startswith("/") or re.match(r"^[A-Za-z]:", norm) is not None


def _split_name(archive: Path, name: str) -> Tuple[str, ...]:
    """Path components of an entry name; refuses absolute names and ``..`` (checked on both separators)."""
    if "\x00" in name:
        raise UnsafeArchiveError(f"{archive}: entry {name!r} contains a NUL byte; refusing to extract")
    norm = name.replace("\\", "/")
    if _is_absolute(norm):
        raise UnsafeArchiveError(f"{archive}: entry {name!r} has an absolute path; refusing to extract "
                                 f"(the archive is malformed or malicious)")
    parts = tuple(p for p in norm.split("/") if p not in ("", "."))
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: entry {name!r} contains '..' and would be written outside the "
                                 f"target; refusing to extract (the archive is malformed or malicious)")
    return parts


def _resolve(parts: Tuple[str, ...], symlinks: Mapping[Tuple[str, ...], str], depth: int = 0
             ) -> Optional[Tuple[str, ...]]:
    """Resolve ``parts`` (may contain ``..``) inside the archive, following its own symlinks.

    Returns the components relative to the target, or ``None`` when the path leaves the target
    (or loops). Because extraction goes into a fresh empty folder, the archive's symlinks are the
    only links that can exist there, so this models the file system exactly.
    """
    if depth > 40:
        return None
    out: List[str] = []
    for p in parts:
        if p in ("", "."):
            continue
        if p == "..":
            if not out:
                return None
            out.pop()
            continue
        out.append(p)
        target = symlinks.get(tuple(out))
        if target is not None:
            if _is_absolute(target):
                return None
            resolved = _resolve(tuple(out[:-1]) + tuple(target.replace("\\", "/").split("/")), symlinks,
                                depth + 1)
            if resolved is None:
                return None
            out = list(resolved)
    return tuple(out)


def _tar_members(archive: Path, tf: tarfile.TarFile) -> List[_Member]:
    out = []
    for m in tf.getmembers():
        parts = _split_name(archive, m.name)
        if m.isdir():
            kind = "dir"
        elif m.isreg():
            kind = "file"
        elif m.issym():
            kind = "symlink"
        elif m.islnk():
            kind = "hardlink"
        elif m.ischr() or m.isblk() or m.isfifo():
            raise UnsafeArchiveError(f"{archive}: entry {m.name!r} is a device or FIFO; refusing to extract "
                                     f"(datasets contain only files and folders)")
        else:
            raise UnsafeArchiveError(f"{archive}: entry {m.name!r} has an unsupported type; refusing to extract")
        out.append(_Member(parts, kind, m.linkname if kind in ("symlink", "hardlink") else None, m))
    return out


def _zip_members(archive: Path, zf: zipfile.ZipFile) -> List[_Member]:
    out = []
    for info in zf.infolist():
        parts = _split_name(archive, info.filename)
        mode = (info.external_attr >> 16) & 0o177777
        ftype = stat.S_IFMT(mode)
        if info.is_dir() or ftype == stat.S_IFDIR:
            out.append(_Member(parts, "dir", raw=info))
        elif ftype == stat.S_IFLNK:
            out.append(_Member(parts, "symlink", zf.read(info).decode("utf-8", "replace"), info))
        elif ftype in (0, stat.S_IFREG):
            out.append(_Member(parts, "file", raw=info))
        else:
            raise UnsafeArchiveError(f"{archive}: entry {info.filename!r} is a device or FIFO; refusing to extract "
                                     f"(datasets contain only files and folders)")
    return out


def _check_members(archive: Path, members: List[_Member]) -> None:
    """Refuse the whole archive if any entry could end up outside the target."""
    symlinks = {m.parts: m.link for m in members if m.kind == "symlink"}
    files = set()
    for m in members:
        shown = "/".join(m.parts)
        if not m.parts:
            continue
        if _resolve(m.parts[:-1], symlinks) is None:
            raise UnsafeArchiveError(f"{archive}: entry {shown!r} would be written through a link that leaves "
                                     f"the target; refusing to extract")
        if m.kind == "symlink":
            link = (m.link or "").replace("\\", "/")
            if not link or _is_absolute(link) or _resolve(m.parts[:-1] + tuple(link.split("/")), symlinks) is None:
                raise UnsafeArchiveError(f"{archive}: symlink {shown!r} -> {m.link!r} points outside the target; "
                                         f"refusing to extract")
        elif m.kind == "hardlink":
            link_parts = _split_name(archive, m.link or "")
            resolved = _resolve(link_parts, symlinks)
            if resolved is None or link_parts not in files:
                raise UnsafeArchiveError(f"{archive}: hard link {shown!r} -> {m.link!r} does not point to a file "
                                         f"extracted before it inside the target; refusing to extract")
        if m.kind in ("file", "hardlink"):
            files.add(m.parts)


def _extract_zip(zf: zipfile.ZipFile, members: List[_Member], dest: Path) -> None:
    for m in members:
        if not m.parts:
            continue
        out = dest.joinpath(*m.parts)
        if m.kind == "dir":
            out.mkdir(parents=True, exist_ok=True)
        elif m.kind == "symlink":
            out.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(m.link, out)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(m.raw) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def _archive_kind(archive: Path) -> str:
    if zipfile.is_zipfile(archive):
        return "zip"
    try:
        if tarfile.is_tarfile(archive):
            return "tar"
    except (OSError, tarfile.TarError):
        pass
    raise DownloadError(f"{archive}: not a zip or tar archive (.zip, .tar, .tar.gz/.tgz, .tar.bz2, .tar.xz); "
                        f"point the source at the dataset archive or at an extracted folder")


def _rmtree(path: Path) -> None:
    """Remove a tree even where the archive stored read-only folders."""
    def onerror(func: Any, p: str, exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)

    shutil.rmtree(path, onerror=onerror)


def safe_extract(archive: PathLike, target: PathLike, *, replace: bool = False,
                 marker: Optional[Mapping[str, Any]] = None) -> Path:
    """Extract a zip or tar (optionally gz/bz2/xz) archive into ``target``, refusing unsafe entries.

    Every entry is checked before anything is written: absolute names, ``..`` components, symlinks
    or hard links resolving outside the target (following the archive's own links), devices and
    FIFOs are refused. Files are extracted into a temporary folder beside ``target`` which is
    renamed into place at the end; on any failure it is removed, so no partial target remains.
    Tar extraction additionally uses Python's ``"data"`` filter as a second line of defence.

    Parameters
    ----------
    archive : path
        The archive; its format is detected from its content, not its name.
    target : path
        Folder to create.
    replace : bool
        Replace an existing ``target`` that an earlier ``safe_extract`` created (it holds
        ``EXTRACT_MARKER``); a folder without the marker is never touched.
    marker : mapping, optional
        Extra JSON-serialisable fields stored in ``target/EXTRACT_MARKER``.

    Returns
    -------
    Path
        ``target``.

    Raises
    ------
    UnsafeArchiveError
        An entry would land outside the target (nothing is written).
    DownloadError
        Not an archive, an empty archive, or a corrupt one.
    DatasetError
        ``target`` exists and was not created by ``safe_extract`` (or ``replace`` is false).
    """
    archive, target = Path(archive), Path(target)
    if not archive.is_file():
        raise DownloadError(f"{archive}: archive not found")
    if target.exists():
        if not (replace and (target / EXTRACT_MARKER).is_file()):
            why = ("it was not extracted by this pipeline" if not (target / EXTRACT_MARKER).is_file()
                   else "replace=False")
            raise DatasetError(f"{target} already exists and {why}; remove it, or point the source at it "
                               f"instead of at {archive}")
    kind = _archive_kind(archive)
    try:
        opened: Any = zipfile.ZipFile(archive) if kind == "zip" else tarfile.open(archive, "r:*")
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as e:
        raise DownloadError(f"{archive}: cannot open the archive ({e}); it is corrupt or incomplete: delete it "
                            f"and download it again") from None
    with opened as arc:
        try:
            members = _zip_members(archive, arc) if kind == "zip" else _tar_members(archive, arc)
        except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as e:
            raise DownloadError(f"{archive}: cannot read the archive ({e}); it is corrupt or incomplete: delete "
                                f"it and download it again") from None
        if not any(m.parts for m in members):
            raise DownloadError(f"{archive}: the archive is empty")
        _check_members(archive, members)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.extract-", dir=target.parent))
        try:
            if kind == "zip":
                _extract_zip(arc, members, tmp)
            else:
                arc.extractall(tmp, members=[m.raw for m in members], filter="data")
            info = {"archive": str(archive.resolve()), "format": kind, "entries": len(members), **(marker or {})}
            (tmp / EXTRACT_MARKER).write_text(json.dumps(info, indent=2) + "\n")
            os.chmod(tmp, 0o755)
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
                os.replace(target, old / target.name)
                os.replace(tmp, target)
                _rmtree(old)
            else:
                os.replace(tmp, target)
        except tarfile.FilterError as e:
            _rmtree(tmp)
            raise UnsafeArchiveError(f"{archive}: refused by the tar data filter: {e}; refusing to extract") from None
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as e:
            _rmtree(tmp)
            raise DownloadError(f"{archive}: extraction failed ({e}); the archive is corrupt or incomplete: "
                                f"delete it and download it again") from None
        except BaseException:
            if tmp.exists():
                _rmtree(tmp)
            raise
    logger.info("extracted %s (%d entries) into %s", archive, len(members), target)
    return target


# ---------------------------------------------------------------------------------------------- images
def check_images(paths: List[str], progress: bool = True) -> None:
    """Open and fully decode every image; the first unreadable one raises a ``DatasetError``.

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
        except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
            raise DatasetError(f"unreadable image {p}: {type(e).__name__}: {e}; replace the file (re-extract "
                               f"the archive) or remove it") from None


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


def _extract_cached(name: str, archive: Path, sha256: Optional[str], target: Path) -> Tuple[Path, str]:
    """Extract ``archive`` to ``target`` unless ``target`` already holds exactly this archive."""
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
    safe_extract(archive, target, replace=True, marker={**identity, "sha256": digest})
    return target, digest


def _missing_source(name: str) -> ConfigError:
    from .datasets import get_dataset

    loader = get_dataset(name)
    return ConfigError(f"{name}: no source configured: set data.sources.{name}.source in config.yaml to a URL, a "
                       f"local archive or an extracted folder; {loader.source_hint()}")


def prepare_dataset(name: str, source: Optional[str], sha256: Optional[str], data_root: PathLike, cache: PathLike,
                    verify_images: bool, synthcc: Optional[Mapping[str, Any]], manifest_out: PathLike,
                    stats_out: PathLike, info_out: PathLike, *, progress: bool = True,
                    workers: int = 1) -> PreparedDataset:
    """Fetch / extract (or generate) dataset ``name`` and write its manifest, statistics and info.

    Parameters
    ----------
    name : str
        Registry name (``maskcl.datasets.list_datasets()``).
    source : str or None
        http(s) URL (downloaded into ``cache`` with resume, extracted into ``data_root/name``), a
        local archive (extracted there), or an existing folder (used in place, never copied).
        Must be ``None`` for ``synthcc``, which is generated.
    sha256 : str or None
        Expected digest of the archive (URL or local archive only).
    data_root, cache : path
        Extraction / generation root and download cache.
    verify_images : bool
        Decode every image once; the first unreadable file is an error.
    synthcc : mapping or None
        ``{"preset", "seed", "overrides"}`` for ``synthcc``.
    manifest_out, stats_out, info_out : path
        ``manifest.csv``, ``stats.csv`` and ``dataset.json``, each written atomically.
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
        Unknown dataset, missing source, or a sha256 given where it cannot apply.
    DownloadError, ChecksumError, UnsafeArchiveError, DatasetError
        See ``fetch_url``, ``safe_extract`` and the dataset loaders.
    """
    from .datasets import get_dataset, split_statistics

    data_root, cache = Path(data_root), Path(cache)
    archive: Optional[Path] = None
    digest: Optional[str] = None
    if name == "synthcc":
        if source is not None:
            raise ConfigError("data.sources.synthcc.source is set, but SynthCC is generated, not downloaded; "
                              "remove it (SynthCC is configured under data.synthcc)")
        from .datasets.synthcc import generate_synthcc

        params = dict(synthcc or {})
        location = generate_synthcc(data_root / "synthcc", preset=params.get("preset", "default"),
                                    seed=int(params.get("seed", 0)), overrides=params.get("overrides") or None,
                                    workers=max(1, int(workers)))
        kind = "generated"
    else:
        get_dataset(name)  # unknown names fail here, listing the known ones
        if source is None or not str(source).strip():
            raise _missing_source(name)
        source = str(source).strip()
        if _is_url(source):
            if urllib.parse.urlsplit(source).scheme.lower() not in ("http", "https"):
                raise ConfigError(f"data.sources.{name}.source: {source!r} is not an http(s) URL; use http(s), a "
                                  f"local archive or a folder")
            archive = fetch_url(source, cache / name / _cache_name(source), sha256, progress=progress)
            location, digest = _extract_cached(name, archive, sha256, data_root / name)
            kind = "url"
        else:
            local = Path(os.path.expanduser(source))
            if local.is_dir():
                if sha256 is not None:
                    raise ConfigError(f"data.sources.{name}.sha256 is set but the source {local} is a folder; a "
                                      f"checksum applies to archives only: remove it")
                location, kind = local, "directory"
            elif local.is_file():
                archive = local
                location, digest = _extract_cached(name, local, sha256, data_root / name)
                kind = "archive"
            else:
                raise DatasetError(f"{name}: source {local} does not exist; fix data.sources.{name}.source in "
                                   f"config.yaml (a URL, a local archive or an extracted folder)")
    loader = get_dataset(name)
    frame = loader.load(location)  # the same instance: SynthCC fills its expected counts while loading
    if verify_images:
        check_images(list(frame["path"]), progress=progress)
    stats = split_statistics(frame, loader.splits)
    differences = loader.official_differences(stats)
    if differences:
        logger.warning("%s: %d difference(s) from the official counts (expected for a partial or modified copy): "
                       "%s", name, len(differences), "; ".join(differences))
    else:
        logger.info("%s: split statistics match the official counts", name)
    info = {
        "name": name,
        "root": frame.attrs["root"],
        "source": source,
        "source_kind": kind,
        "archive": str(archive) if archive is not None else None,
        "archive_sha256": digest,
        "images": int(len(frame)),
        "columns": list(frame.columns),
        "stats": stats.to_dict(orient="records"),
        "official": {s: {k: v for k, v in vars(off).items() if v is not None} for s, off in loader.official.items()},
        "official_differences": differences,
        "attrs": {k: v for k, v in frame.attrs.items() if k not in ("root", "dataset")},
    }
    write_csv_atomic(manifest_out, frame)
    write_csv_atomic(stats_out, stats)
    write_json_atomic(info_out, info)
    logger.info("%s: %d images in %d splits from %s; manifest %s", name, len(frame), len(stats), frame.attrs["root"],
                manifest_out)
    return PreparedDataset(name=name, root=Path(frame.attrs["root"]), manifest=frame, stats=stats,
                           differences=differences, info=info)

