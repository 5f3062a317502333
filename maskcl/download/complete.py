"""Is an archive whole? Its own end markers and checksums, read to the end in one pass.

A server that sends no ``Content-Length`` gives no way to tell a connection closed early from the
end of the file, and without a pinned sha256 the bytes themselves are the only witness. Every
archive format we extract carries one:

* zip: the end-of-central-directory record (the last bytes of the file) and each member's CRC-32;
* tar: every member's data in full, then two zero blocks that end the archive;
* gzip / bz2 / xz: the compressed stream's end-of-stream marker and check (CRC, length), reached
  by decompressing to the end (and the tar inside, when there is one, checked as above).

:func:`verify_complete` raises :class:`TruncatedArchiveError` when the file stops early and
:class:`DownloadError` when it is damaged in another way; it returns ``None`` for a format with no
end marker to check (the caller decides whether that is acceptable).
"""

from __future__ import annotations

import bz2
import lzma
import os
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from ..errors import DownloadError, TruncatedArchiveError

__all__ = ["archive_format", "verify_complete", "CHECKED_FORMATS"]

PathLike = Union[str, os.PathLike]

#: What :func:`verify_complete` can check, for messages.
CHECKED_FORMATS = "zip, tar, tar.gz/.tgz, tar.bz2, tar.xz, gz, bz2, xz"

_BLOCK = tarfile.BLOCKSIZE
_CHUNK = 1 << 20
_MAX_OUT = 1 << 24  # decompressed bytes per step (bounds memory on highly compressible data)
_MAGIC = ((b"PK\x03\x04", "zip"), (b"PK\x05\x06", "zip"), (b"PK\x07\x08", "zip"), (b"\x1f\x8b", "gz"),
          (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"))
_STREAM_NAMES = {"gz": "gzip", "bz2": "bzip2", "xz": "xz"}


class _Cut(Exception):
    """The data stops before the format's end (``detail`` says where)."""


class _Damaged(Exception):
    """The data is inconsistent (bad checksum, bad header) before any end was reached."""


# ---------------------------------------------------------------------------------------------- detection
def _looks_like_tar(head: bytes) -> bool:
    """A ustar/GNU magic, or a first header whose checksum is right (old V7 archives have no magic)."""
    if len(head) >= 263 and head[257:262] == b"ustar":
        return True
    if len(head) < _BLOCK:
        return False
    try:
        tarfile.TarInfo.frombuf(head[:_BLOCK], "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def archive_format(path: PathLike) -> Optional[str]:
    """``"zip"``, ``"tar"``, ``"gz"``, ``"bz2"`` or ``"xz"`` from the file's first bytes, else ``None``.

    Read from the content, not the name, and from the start of the file, so a truncated archive is
    still recognised (a zip's directory is at its end, which is what truncation removes).
    """
    with open(path, "rb") as f:
        head = f.read(_BLOCK)
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return "tar" if _looks_like_tar(head) else None


# ---------------------------------------------------------------------------------------------- tar
def _padded(size: int) -> int:
    return -(-size // _BLOCK) * _BLOCK


def _pax_size(data: bytes) -> Optional[int]:
    """The ``size`` record of a pax extended header (``"<len> size=<n>\\n"``), if any."""
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            break
        if length <= 0:
            break
        key, _, value = data[space + 1:pos + length - 1].partition(b"=")
        if key == b"size":
            try:
                return int(value)
            except ValueError:
                return None
        pos += length
    return None


class _TarScan:
    """Walks a tar byte stream: each member's data in full, then the two zero end-of-archive blocks.

    Data arrive through :meth:`feed` in pieces of any size; :meth:`finish` says whether the archive
    ended where its format says it ends. Only the current 512-byte header (and a pax header's data)
    is held in memory.
    """

    def __init__(self) -> None:
        self.header = bytearray()
        self.skip = 0  # bytes of member data and padding still to pass
        self.member = ""
        self.size = 0
        self.members = 0
        self.zeros = 0
        self.done = False
        self.pax: Optional[bytearray] = None  # a pax header's data, while it is being read
        self.pax_left = 0
        self.next_size: Optional[int] = None  # a size given by the pax header for the next member

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        pos = 0
        while pos < len(view) and not self.done:
            if self.skip:
                n = min(self.skip, len(view) - pos)
                if self.pax is not None and self.pax_left:
                    take = min(n, self.pax_left)
                    self.pax.extend(view[pos:pos + take])
                    self.pax_left -= take
                self.skip -= n
                pos += n
                continue
            take = view[pos:pos + _BLOCK - len(self.header)]
            self.header.extend(take)
            pos += len(take)
            if len(self.header) == _BLOCK:
                block = bytes(self.header)
                self.header.clear()
                self._block(block)

    def _block(self, block: bytes) -> None:
        if block.count(0) == _BLOCK:
            self.zeros += 1
            self.done = self.zeros == 2
            return
        if self.zeros:
            raise _Damaged(f"a header follows the first end-of-archive block (after {self.members} member(s))")
        if self.pax is not None:
            self.next_size = _pax_size(bytes(self.pax))
            self.pax = None
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as e:
            where = f"after member {self.member!r}" if self.members else "at the start"
            raise _Damaged(f"bad tar header {where} ({e})") from None
        size = info.size
        if info.type in (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.XGLTYPE):
            self.pax, self.pax_left = bytearray(), size
            self.skip = _padded(size)
            return
        if info.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
            self.skip = _padded(size)
            return
        if self.next_size is not None:
            size, self.next_size = self.next_size, None
        self.members += 1
        self.member, self.size = info.name, size
        # the same rule as tarfile: data follow regular files and types it does not know
        if info.type in tarfile.REGULAR_TYPES or info.type not in tarfile.SUPPORTED_TYPES:
            self.skip = _padded(size)

    def finish(self) -> None:
        if self.done:
            return
        if self.skip or (self.pax is not None and self.pax_left):
            if self.pax is not None:
                raise _Cut("the archive ends inside an extended (pax) header")
            have = min(self.size, _padded(self.size) - self.skip)
            raise _Cut(f"the archive ends inside member {self.member!r} ({have} of its {self.size} bytes are "
                       f"there)")
        if self.header and not self.zeros:
            raise _Cut(f"the archive ends inside the header after member {self.member!r}")
        if self.members == 0:
            raise _Cut("the archive ends before its first member")
        raise _Cut(f"the archive ends after member {self.member!r} ({self.members} member(s)) without the two "
                   f"zero blocks that mark the end of a tar archive")


# ---------------------------------------------------------------------------------------------- streams
def _chunks(f: Any) -> Iterator[bytes]:
    return iter(lambda: f.read(_CHUNK), b"")


def _new_decompressor(kind: str) -> Any:
    if kind == "gz":
        return zlib.decompressobj(wbits=31)  # checks the gzip header and its CRC-32 / length trailer
    if kind == "bz2":
        return bz2.BZ2Decompressor()
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ)


def _decompressed(f: Any, kind: str) -> Iterator[bytes]:
    """The decompressed bytes of a (possibly multi-stream) gz/bz2/xz file; ``_Cut`` if a stream stops early."""
    dec: Any = _new_decompressor(kind)
    errors = (zlib.error, OSError, EOFError, lzma.LZMAError)
    for chunk in _chunks(f):
        data = chunk
        while data:
            if dec is None:  # between streams: zero padding is allowed, anything else starts a new stream
                data = data.lstrip(b"\0")
                if not data:
                    break
                dec = _new_decompressor(kind)
            try:
                out = dec.decompress(data, _MAX_OUT)
                if out:
                    yield out
                if kind == "gz":  # zlib hands back the input it had no room for
                    data = b"" if dec.eof else dec.unconsumed_tail
                    while not data and not dec.eof and len(out) == _MAX_OUT:  # capped: output may be pending
                        out = dec.decompress(b"", _MAX_OUT)
                        if out:
                            yield out
                        data = dec.unconsumed_tail
                    if data:
                        continue
                else:  # bz2 / xz keep it inside and want to be asked again
                    data = b""
                    while not dec.eof and not dec.needs_input:
                        out = dec.decompress(b"", _MAX_OUT)
                        if out:
                            yield out
            except errors as e:
                raise _Damaged(f"the {_STREAM_NAMES[kind]} data is damaged ({e})") from None
            if dec.eof:
                data = dec.unused_data
                dec = None
    if dec is not None:
        raise _Cut(f"the {_STREAM_NAMES[kind]} stream ends before its end-of-stream marker and checksum")


# ---------------------------------------------------------------------------------------------- zip
def _check_zip(path: Path) -> None:
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        if "not a zip file" in str(e).lower():
            raise _Cut("the zip end-of-central-directory record is missing") from None
        raise _Cut(f"the zip central directory is incomplete ({e})") from None
    with zf:
        for info in zf.infolist():
            if info.is_dir() or info.flag_bits & 0x1:  # an encrypted member cannot be read without its password
                continue
            try:
                with zf.open(info) as member:
                    for _ in iter(lambda: member.read(_CHUNK), b""):
                        pass
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as e:
                raise _Damaged(f"member {info.filename!r} is damaged ({e})") from None


# ---------------------------------------------------------------------------------------------- entry point
def verify_complete(path: PathLike, fix: str = "delete it and download it again",
                    shown: Optional[PathLike] = None) -> Optional[str]:
    """Read ``path`` to its end and check the format's end markers and checksums.

    Parameters
    ----------
    path : path
        The file (a partial download may be checked under its temporary name).
    fix : str
        What the user should do, appended to the message.
    shown : path, optional
        The name to show in messages (default ``path``).

    Returns
    -------
    str or None
        ``"zip"``, ``"tar"``, ``"tar.gz"``, ``"tar.bz2"``, ``"tar.xz"``, ``"gz"``, ``"bz2"`` or
        ``"xz"`` when the file is whole; ``None`` when its format has no end marker to check.

    Raises
    ------
    TruncatedArchiveError
        The file stops before its format's end.
    DownloadError
        The file is damaged (a checksum or header does not match).
    """
    path = Path(path)
    shown = Path(shown) if shown is not None else path
    kind = archive_format(path)
    if kind is None:
        return None
    try:
        if kind == "zip":
            _check_zip(path)
            return "zip"
        with open(path, "rb") as f:
            if kind == "tar":
                scan = _TarScan()
                for chunk in _chunks(f):
                    scan.feed(chunk)
                scan.finish()
                return "tar"
            scan, head, is_tar = _TarScan(), bytearray(), None
            for out in _decompressed(f, kind):
                if is_tar is None:
                    head.extend(out)
                    if len(head) < _BLOCK:
                        continue
                    is_tar = _looks_like_tar(bytes(head))
                    out, head = bytes(head), bytearray()
                if is_tar:
                    scan.feed(out)
            if is_tar is None and head:  # a stream shorter than one tar header
                is_tar = _looks_like_tar(bytes(head))
                if is_tar:
                    scan.feed(bytes(head))
            if is_tar:
                scan.finish()
                return f"tar.{kind}"
            return kind
    except _Cut as e:
        raise TruncatedArchiveError(f"{shown}: {e}: the file is truncated (incomplete); {fix}") from None
    except _Damaged as e:
        raise DownloadError(f"{shown}: {e}: the file is damaged; {fix}") from None
