"""The SCHP checkpoint as a stage output: fetched, verified, then given its final name.

The released checkpoints live on Google Drive only. ``fetch_checkpoint`` gets one from the variant's
official Drive id (through ``gdown``, which knows Drive's large-file confirmation page), from any
http(s) URL (our resumable fetcher), or from a local file, and only renames it to its final path once
it has passed every check: the sha256 pin when there is one, and always a strict load into our SCHP
network against the variant's key and shape manifest. A wrong, truncated or foreign file therefore
never sits under the name the parse stage reads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from ..errors import CheckpointError, MaskCLError
from .checkpoint import SCHPVariant, file_sha256, folder_checkpoint_message, get_variant, load_schp

__all__ = ["CheckpointSource", "fetch_checkpoint", "checkpoint_path", "DRIVE", "CHECKPOINT_DIR"]

log = logging.getLogger(__name__)

#: ``masks.schp.source`` value meaning "the variant's official Google Drive file".
DRIVE = "drive"
_SUFFIX = ".download"
#: Where the checkpoint rule puts a variant's file when ``masks.schp.checkpoint`` is null.
CHECKPOINT_DIR = "resources/checkpoints"


def checkpoint_path(schp: Mapping[str, Any]) -> str:
    """The checkpoint the parse stage reads: ``masks.schp.checkpoint``, or the variant's official file
    name under ``resources/checkpoints/`` (so switching the variant never reuses another's file)."""
    if schp.get("checkpoint"):
        return str(schp["checkpoint"])
    return f"{CHECKPOINT_DIR}/{get_variant(str(schp.get('variant', 'lip'))).filename}"


@dataclass(frozen=True)
class CheckpointSource:
    """Where the checkpoint rule gets one variant's file, and the digest it must have."""

    variant: SCHPVariant
    source: str = DRIVE
    sha256: Optional[str] = None

    @classmethod
    def from_config(cls, schp: Mapping[str, Any]) -> "CheckpointSource":
        """From the config's ``masks.schp`` section (variant, source, sha256)."""
        sha = schp.get("sha256")
        return cls(get_variant(str(schp.get("variant", "lip"))), str(schp.get("source", DRIVE)),
                   sha.lower() if sha else None)

    @property
    def kind(self) -> str:
        if self.source == DRIVE:
            return "drive"
        if urllib.parse.urlsplit(self.source).scheme in ("http", "https"):
            return "url"
        return "file"

    def describe(self) -> str:
        if self.kind == "drive":
            return f"Google Drive id {self.variant.drive_id} ({self.variant.filename})"
        return self.source


def _from_drive(src: CheckpointSource, part: Path, progress: bool) -> None:
    try:
        import gdown
    except ImportError:  # pragma: no cover - gdown is a core dependency
        raise CheckpointError("masks.schp.source is drive but the package gdown is not installed: "
                              "pip install gdown, or set masks.schp.source to a URL or a local path") from None
    try:
        gdown.download(id=src.variant.drive_id, output=str(part), quiet=not progress, resume=True)
    except Exception as e:  # gdown raises its own, requests' and OS errors; all mean "not fetched"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(
            f"SCHP {src.variant.name} checkpoint: Google Drive download of id {src.variant.drive_id} failed "
            f"({type(e).__name__}: {first}); rerun to resume, or download {src.variant.url} by hand and set "
            f"masks.schp.source to the file's path") from None
    if not part.is_file():
        raise CheckpointError(f"SCHP {src.variant.name} checkpoint: Google Drive gave no file for id "
                              f"{src.variant.drive_id}; download {src.variant.url} by hand and set "
                              f"masks.schp.source to its path")


def _from_url(src: CheckpointSource, part: Path, progress: bool) -> None:
    from ..download.http import fetch_url

    try:
        fetch_url(src.source, part, sha256=src.sha256, progress=progress)
    except MaskCLError as e:
        raise CheckpointError(f"SCHP {src.variant.name} checkpoint: {e}") from None


def _from_file(src: CheckpointSource, part: Path) -> None:
    path = Path(src.source)
    if not path.is_file():
        raise CheckpointError(f"masks.schp.source is {src.source}, which is not a file; set it to the path of "
                              f"the downloaded {src.variant.filename}, to a URL, or to drive")
    try:
        shutil.copyfile(path, part)
    except OSError as e:
        raise CheckpointError(f"cannot copy {path} to {part}: {e.strerror or e}; check the permissions and "
                              f"the free space of {part.parent}") from None


def _discard(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def fetch_checkpoint(src: CheckpointSource, out_path: os.PathLike | str, *, progress: bool = True) -> Path:
    """Fetch, verify and atomically publish the checkpoint of ``src`` at ``out_path``.

    Bytes arrive under ``<out_path>.download`` (an interrupted Drive or URL download resumes from
    there on the next run); the final name appears only after the sha256 pin (when set) and a strict
    load into the variant's SCHP network have both passed. A file that fails either is deleted.

    Raises
    ------
    CheckpointError
        Unreachable source, digest mismatch, truncated or foreign file, wrong variant, or an output
        path that is a folder: one line that names the source (or path) and the fix.
    """
    out = Path(out_path)
    if out.is_dir():   # nothing could ever be renamed onto it
        raise CheckpointError(folder_checkpoint_message(out, src.variant))
    part = out.with_name(out.name + _SUFFIX)
    out.parent.mkdir(parents=True, exist_ok=True)
    if part.exists():
        log.info("resuming from the partial checkpoint %s (%d bytes)", part, part.stat().st_size)
    if src.kind == "drive":
        _from_drive(src, part, progress)
    elif src.kind == "url":
        _from_url(src, part, progress)
    else:
        _from_file(src, part)
    digest = file_sha256(part)
    if src.sha256 is not None and digest != src.sha256:
        _discard(part)
        raise CheckpointError(f"SCHP {src.variant.name} checkpoint from {src.describe()} has sha256 {digest}, "
                              f"not the pinned masks.schp.sha256 {src.sha256}; the file was deleted: check the "
                              f"source, or update the pin if the file changed on purpose")
    try:
        load_schp(part, src.variant.name)
    except CheckpointError as e:
        _discard(part)
        reason = str(e).split(": ", 1)[-1]
        raise CheckpointError(f"SCHP {src.variant.name} checkpoint from {src.describe()} was refused and "
                              f"deleted: {reason}") from None
    os.replace(part, out)
    log.info("SCHP %s checkpoint %s verified (strict load, sha256 %s%s)", src.variant.name, out, digest,
             ", pinned" if src.sha256 else "; set masks.schp.sha256 to pin it")
    return out
