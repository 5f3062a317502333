"""Resumable HTTP download with sha256 verification.

Downloads resume: bytes go to ``<dest>.part`` in the cache folder (outside Snakemake's declared
outputs, which Snakemake deletes when a job fails) and a later call continues with an HTTP
``Range`` request. The file gets its final name only once it is known to be complete: by the
server's length when it sends one, by the pinned sha256, and otherwise by the archive format's own
end markers and checksums (``complete.verify_complete``). A download that none of these can vouch
for is refused. A cached file is checked the same way (sha256, else its format) before it is reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from .. import __version__
from ..errors import ChecksumError, DownloadError, TruncatedArchiveError
from .complete import CHECKED_FORMATS, verify_complete

__all__ = ["fetch_url", "sha256_file"]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

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


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


# ---------------------------------------------------------------------------------------------- download
class _Retry(Exception):
    """A transient failure: the partial file is kept and the next attempt resumes from it.

    ``truncated``: the body stopped before the file's end (the last failure names it as truncation).
    """

    def __init__(self, message: str, truncated: bool = False) -> None:
        super().__init__(message)
        self.truncated = truncated


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
                   desc: str) -> Optional[int]:
    """One HTTP request that appends to ``part``; raises ``_Retry`` on anything worth retrying.

    Returns the file's full length as the server gave it, or ``None`` when it gave none.
    """
    info = _read_meta(meta)
    offset = part.stat().st_size if part.exists() else 0
    if offset and info.get("url") != url:  # a leftover from another URL: never splice two files
        logger.info("%s: removed the leftover partial download %s (%s) of another URL (%s)", url, part,
                    _megabytes(offset), info.get("url") or "unknown")
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
                return total
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
                raise _Retry(f"the download is truncated: the connection was lost after {f.tell()} bytes "
                             f"({type(e).__name__}: {e})", truncated=True) from None
    size = part.stat().st_size
    if total is not None and size < total:
        raise _Retry(f"the download is truncated: the connection closed after {size} of the {total} bytes the "
                     f"server announced", truncated=True)
    if total is not None and size > total:
        _reset_partial(part, meta)
        raise _Retry(f"received {size} bytes but expected {total}; restarting from zero")
    return total


def _cached(url: str, dest: Path, sha256: Optional[str]) -> bool:
    """Whether ``dest`` (already on disk) can be reused; a file that fails its check is deleted."""
    if sha256 is not None:
        actual = sha256_file(dest)
        if actual == sha256.lower():
            logger.info("%s: using the cached download %s (sha256 verified)", url, dest)
            return True
        logger.warning("%s: cached %s has sha256 %s, not the expected %s; downloading it again",
                       url, dest, actual, sha256.lower())
    else:
        try:
            kind = verify_complete(dest, "downloading it again")
        except DownloadError as e:  # truncated or damaged: say so, and fetch a whole copy
            logger.warning("%s: cached download: %s", url, e)
        else:
            if kind is None:
                logger.info("%s: using the cached download %s (its format has no end marker to check again, and "
                            "no sha256 is pinned; it was checked complete when it was downloaded)", url, dest)
            else:
                logger.info("%s: using the cached download %s (verified complete: %s end markers and checksums)",
                            url, dest, kind)
            return True
    dest.unlink()
    return False


def _check_unsized(url: str, part: Path, meta: Path, dest: Path, pin_key: str, pinned: bool) -> Optional[str]:
    """Verify a download the server gave no length for, by its format; raises if it cannot vouch for it.

    With a pinned sha256 the digest decides, but an archive that stops early is still named (and
    retried) as truncated rather than reported as a checksum mismatch.
    """
    try:
        kind = verify_complete(part, "the server sent no length, so the archive's own end is the only check",
                               shown=dest)
    except TruncatedArchiveError as e:
        raise _Retry(str(e), truncated=True) from None
    except DownloadError as e:
        if pinned:
            return None
        _reset_partial(part, meta)
        raise DownloadError(f"{url}: {e}; the partial download was deleted: rerun to download it again") from None
    if kind is None and not pinned:
        _reset_partial(part, meta)
        raise DownloadError(f"{url}: the server sent no Content-Length, no sha256 is pinned and {dest.name} is not "
                            f"an archive whose end can be checked ({CHECKED_FORMATS}), so a download cut short "
                            f"cannot be told from a complete one; the file was deleted: pin sha256 in config key "
                            f"{pin_key} (the digest the data provider publishes) and rerun")
    return kind


def fetch_url(url: str, dest: PathLike, sha256: Optional[str] = None, *, retries: int = 3, timeout: float = 60.0,
              chunk_size: int = 1 << 20, backoff: float = 1.0, progress: bool = True,
              pin_key: str = "sha256 (of this source, in config.yaml)") -> Path:
    """Download ``url`` to ``dest``, resuming a previous partial download, and verify it is complete.

    Parameters
    ----------
    url : str
        http(s) URL.
    dest : path
        Final file. Bytes arrive in ``<dest>.part`` (plus a small ``<dest>.part.json`` recording the
        URL and the server's validators, so a resume never splices two different files); the final
        name appears only when the file is complete and verified. A ``dest`` already on disk is
        reused only after the same check (sha256, else its format); one that fails is downloaded
        again.
    sha256 : str, optional
        Expected hex digest. A mismatch deletes the partial file and raises. Without it, the digest
        is logged so that it can be pinned in ``config.yaml``, and completeness rests on the server's
        length or, without one, on the archive's own end markers (zip, tar, gz, bz2, xz); any other
        file without a length is refused.
    retries : int
        Further attempts after a transient failure (connection lost, timeout, HTTP 5xx/429, an
        archive without length that stops early); each resumes where the previous one stopped,
        after ``backoff * 2**k`` seconds.
    timeout : float
        Socket timeout in seconds.
    chunk_size : int
        Bytes per read.
    progress : bool
        Show a tqdm progress bar on stderr.
    pin_key : str
        The config key that pins this file's sha256, named when a download cannot be verified.

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    DownloadError
        Permanent HTTP error, still failing after ``retries`` retries (the partial file is kept), a
        damaged archive, or a download without length, sha256 or checkable format.
    ChecksumError
        The complete file does not match ``sha256``.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    meta = dest.with_name(dest.name + ".part.json")
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise DownloadError(f"{url}: only http:// and https:// URLs can be downloaded")
    if dest.exists() and _cached(url, dest, sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    if part.exists() and _read_meta(meta).get("url") == url:
        logger.info("%s: reusing the partial download %s (%s) left by an interrupted run; resuming from there",
                    url, part, _megabytes(part.stat().st_size))
    attempt = 0
    while True:
        try:
            total = _download_once(url, part, meta, timeout, chunk_size, progress, dest.name)
            kind = _check_unsized(url, part, meta, dest, pin_key, sha256 is not None) if total is None else None
            break
        except _Retry as e:
            have = part.stat().st_size if part.exists() else 0
            if attempt >= retries:
                kept = (f"rerun to download it again ({have} bytes are kept in {part} and the next run resumes from "
                        f"there)" if have else "rerun when the server is reachable")
                error = TruncatedArchiveError if e.truncated else DownloadError
                raise error(f"{url}: download failed after {attempt + 1} attempt(s): {e}; {kept}") from None
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
        how = f"server length {total}" if kind is None else f"complete {kind} archive, by its end markers"
        logger.info("%s: sha256 %s (%s; set it as the source's sha256 in config.yaml to pin this file)", dest,
                    actual, how)
    os.replace(part, dest)
    with contextlib.suppress(FileNotFoundError):
        meta.unlink()
    logger.info("downloaded %s (%d bytes)", dest, dest.stat().st_size)
    return dest
