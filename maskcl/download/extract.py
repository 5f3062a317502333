"""Safe archive extraction (zip and tar, optionally gz/bz2/xz).

Archives are extracted only after *every* member has been checked (no absolute paths, no ``..``,
no link or device pointing outside the target) and the archive has been read to its end
(``complete.verify_complete``: a truncated archive is named as such, never half extracted), into a
temporary folder beside the target that is renamed into place, so a failed or refused extraction
leaves nothing behind. A temporary folder that a killed run left there is removed (and logged) by
the next extraction of the same target.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Mapping, Optional, Tuple, Union

from ..errors import DatasetError, DownloadError, UnsafeArchiveError
from ..layout import EXTRACT_MARKER
from .complete import CHECKED_FORMATS, verify_complete

__all__ = ["safe_extract", "remove_leftovers", "EXTRACT_MARKER"]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

# EXTRACT_MARKER (maskcl.layout) is written into every extracted tree; it identifies the archive it came from
# (and that we own it).

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


def _archive_kind(archive: Path, fix: str) -> str:
    """``"zip"`` or ``"tar"`` once the archive has been read to its end; truncated or damaged raises."""
    kind = verify_complete(archive, fix)
    if kind == "zip" or (kind or "").startswith("tar"):
        return "zip" if kind == "zip" else "tar"
    inner = f" (a {kind} file that does not hold a tar archive)" if kind else ""
    raise DownloadError(f"{archive}: not a zip or tar archive{inner} ({CHECKED_FORMATS}); point the source at the "
                        f"dataset archive or at an extracted folder")


def _rmtree(path: Path) -> None:
    """Remove a tree even where the archive stored read-only folders."""
    def onerror(func: Any, p: str, exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)

    shutil.rmtree(path, onerror=onerror)


def _tree_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_leftovers(target: PathLike) -> List[Path]:
    """Remove the temporary folders that interrupted extractions into ``target`` left beside it.

    They are hidden (``.<target>.extract-<pid>-*`` and ``.<target>.old-<pid>-*``) and can hold most
    of a dataset; one whose process still runs is left alone. Each removal is logged with its size.
    """
    target = Path(target)
    removed = []
    if not target.parent.is_dir():
        return removed
    for p in sorted(target.parent.glob(f".{target.name}.*-*")):
        kind, _, rest = p.name[len(target.name) + 2:].partition("-")
        if kind not in ("extract", "old") or not p.is_dir() or p.is_symlink():
            continue
        pid = rest.split("-")[0]
        if pid.isdigit() and _pid_alive(int(pid)):
            continue
        size = _tree_size(p)
        _rmtree(p)
        what = "an interrupted extraction" if kind == "extract" else "an interrupted replacement of the old copy"
        logger.info("removed leftover temporary folder %s from %s (%.1f MB)", p, what, size / 1e6)
        removed.append(p)
    return removed


def safe_extract(archive: PathLike, target: PathLike, *, replace: bool = False,
                 marker: Optional[Mapping[str, Any]] = None, fix: str = "delete it and download it again") -> Path:
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
    fix : str
        What to do about a truncated or damaged archive (named in the error).

    Returns
    -------
    Path
        ``target``.

    Raises
    ------
    UnsafeArchiveError
        An entry would land outside the target (nothing is written).
    TruncatedArchiveError
        The archive stops before its end (nothing is written).
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
            if (target / EXTRACT_MARKER).is_file():
                raise DatasetError(f"{target} already exists and replace=False; pass replace=True to extract "
                                   f"{archive} over it")
            raise DatasetError(f"{target} already exists and was not extracted by this pipeline (no "
                               f"{EXTRACT_MARKER}), so it is left untouched: if it holds the extracted dataset, "
                               f"set the source to {target} instead of {archive}; otherwise move it elsewhere "
                               f"or set data.root to another folder")
    remove_leftovers(target)
    kind = _archive_kind(archive, fix)
    try:
        opened: Any = zipfile.ZipFile(archive) if kind == "zip" else tarfile.open(archive, "r:*")
    except (zipfile.BadZipFile, tarfile.TarError, gzip.BadGzipFile, lzma.LZMAError, EOFError) as e:
        raise DownloadError(f"{archive}: cannot open the archive ({e}); it is corrupt or incomplete: {fix}") from None
    with opened as arc:
        try:
            members = _zip_members(archive, arc) if kind == "zip" else _tar_members(archive, arc)
        except (zipfile.BadZipFile, tarfile.TarError, gzip.BadGzipFile, lzma.LZMAError, EOFError) as e:
            raise DownloadError(f"{archive}: cannot read the archive ({e}); it is corrupt or incomplete: "
                                f"{fix}") from None
        if not any(m.parts for m in members):
            raise DownloadError(f"{archive}: the archive is empty")
        _check_members(archive, members)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.extract-{os.getpid()}-", dir=target.parent))
        try:
            if kind == "zip":
                _extract_zip(arc, members, tmp)
            else:
                arc.extractall(tmp, members=[m.raw for m in members], filter="data")
            info = {"archive": str(archive.resolve()), "format": kind, "entries": len(members), **(marker or {})}
            (tmp / EXTRACT_MARKER).write_text(json.dumps(info, indent=2) + "\n")
            os.chmod(tmp, 0o755)
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-{os.getpid()}-", dir=target.parent))
                os.replace(target, old / target.name)
                os.replace(tmp, target)
                _rmtree(old)
            else:
                os.replace(tmp, target)
        except tarfile.FilterError as e:
            _rmtree(tmp)
            raise UnsafeArchiveError(f"{archive}: refused by the tar data filter: {e}; refusing to extract") from None
        except (zipfile.BadZipFile, tarfile.TarError, gzip.BadGzipFile, lzma.LZMAError, EOFError,
                zlib.error) as e:
            _rmtree(tmp)
            raise DownloadError(f"{archive}: extraction failed ({e}); the archive is corrupt or incomplete: "
                                f"{fix}") from None
        except BaseException:
            if tmp.exists():
                _rmtree(tmp)
            raise
    logger.info("extracted %s (%d entries) into %s", archive, len(members), target)
    return target
