"""Faults of the download stage: every truncated, unverifiable or interrupted download ends in one line.

Each download is served on the fly by a local HTTP server whose handlers omit ``Content-Length``,
send fewer bytes than they announce, or serve a file cut short; archives are built here with
tarfile/zipfile/gzip and then truncated. Through ``maskcl.workflow.run_job`` each fault must exit 1
with one line naming the file and the fix, and leave no file under its final name.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import logging
import lzma
import os
import subprocess
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import pytest

from maskcl.download import fetch_url, safe_extract
from maskcl.download.complete import verify_complete
from maskcl.download.extract import EXTRACT_MARKER, remove_leftovers
from maskcl.errors import DownloadError, TruncatedArchiveError

FILES = {f"data/img_{i}.bin": os.urandom(3000 + 100 * i) for i in range(4)}


# ------------------------------------------------------------------------------------------ archives
def tar_bytes(compression: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=f"w:{compression}") as tf:
        for name, data in FILES.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in FILES.items():
            zf.writestr(name, data)
    return buf.getvalue()


#: Where a plain tar's two end-of-archive blocks end (each member: a header, then its data padded to blocks).
TAR_END = sum(512 + -(-len(d) // 512) * 512 for d in FILES.values()) + 1024

ARCHIVES: Dict[str, Callable[[], bytes]] = {
    "tar": tar_bytes,
    "tar.gz": lambda: tar_bytes("gz"),
    "tar.bz2": lambda: tar_bytes("bz2"),
    "tar.xz": lambda: tar_bytes("xz"),
    "zip": zip_bytes,
    "gz": lambda: gzip.compress(b"x" * 50_000 + os.urandom(5_000)),
    "bz2": lambda: bz2.compress(os.urandom(20_000)),
    "xz": lambda: lzma.compress(os.urandom(20_000)),
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------------ server
class Handler(BaseHTTPRequestHandler):
    """``/<mode>/<name>``: ``full`` (with length), ``nolength`` (none, then close) or ``short``
    (announces the whole length, sends half, closes). Range requests are ignored (200 every time)."""

    payloads: Dict[str, bytes] = {}

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        mode, _, name = self.path.lstrip("/").partition("/")
        body = self.payloads.get(name)
        if body is None or mode not in ("full", "nolength", "short"):
            self.send_error(404)
            return
        self.send_response(200)
        if mode != "nolength":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if mode == "short" else body)
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()

    def url(mode: str, name: str, body: bytes) -> str:
        Handler.payloads[name] = body
        return f"http://127.0.0.1:{httpd.server_address[1]}/{mode}/{name}"

    yield url
    httpd.shutdown()
    httpd.server_close()


def fetch(url: str, dest: Path, sha256: Optional[str] = None) -> Path:
    return fetch_url(url, dest, sha256, retries=0, backoff=0, timeout=10, progress=False,
                     pin_key="data.sources.ltcc.sha256")


# ------------------------------------------------------------------------------------------ job

# ------------------------------------------------------------------------------------------ verify_complete
@pytest.mark.parametrize("kind", sorted(ARCHIVES))
def test_whole_archives_pass_and_every_cut_is_named_truncation(kind, tmp_path):
    data = ARCHIVES[kind]()
    whole = tmp_path / f"a.{kind}"
    whole.write_bytes(data)
    assert verify_complete(whole) == kind
    # a tar is padded to a full record after its two zero blocks: cuts inside the padding lose nothing
    end = TAR_END if kind == "tar" else len(data)
    for cut in sorted({300, 600, len(data) // 3, len(data) // 2, end - 1, end - 513}):
        if not 0 < cut < end:
            continue
        part = tmp_path / f"cut{cut}.{kind}"
        part.write_bytes(data[:cut])
        with pytest.raises(TruncatedArchiveError, match=rf"cut{cut}\.{kind}: .*the file is truncated") as e:
            verify_complete(part, "download it again")
        assert "\n" not in str(e.value) and str(e.value).endswith("download it again")


def test_tar_cut_at_a_member_boundary_lacks_its_end_blocks(tmp_path):
    data = tar_bytes()
    first = 512 + -(-len(FILES["data/img_0.bin"]) // 512) * 512  # header and data of the first member
    part = tmp_path / "a.tar"
    part.write_bytes(data[:first])
    with pytest.raises(TruncatedArchiveError, match="without the two zero blocks"):
        verify_complete(part)


def test_damaged_stream_is_damage_not_truncation(tmp_path):
    data = bytearray(ARCHIVES["tar.gz"]())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(bytes(data))
    with pytest.raises(DownloadError, match="damaged") as e:
        verify_complete(bad)
    assert not isinstance(e.value, TruncatedArchiveError)


def test_a_file_without_end_markers_is_unverifiable(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("plain text\n" * 100)
    assert verify_complete(p) is None


# ------------------------------------------------------------------------------------------ downloads
def test_complete_archive_without_length_is_accepted(server, tmp_path, caplog):
    data = ARCHIVES["tar.gz"]()
    dest = tmp_path / "cache" / "ok.tar.gz"
    with caplog.at_level(logging.INFO):
        fetch(server("nolength", "ok.tar.gz", data), dest)
    assert dest.read_bytes() == data
    assert "complete tar.gz archive, by its end markers" in caplog.text


@pytest.mark.parametrize("kind", ["tar", "tar.gz", "zip"])
def test_truncated_archive_without_length_is_truncation(kind, server, tmp_path, job):
    data = ARCHIVES[kind]()
    url = server("nolength", f"cut.{kind}", data[: len(data) // 2])
    dest = tmp_path / "cache" / f"cut.{kind}"
    line = job(lambda smk: fetch(url, dest))
    assert f"{dest}: " in line and "truncated" in line and "rerun" in line
    assert "the server sent no length" in line and line.count("rerun") == 1
    assert not dest.exists()  # the final name is never written


def test_unverifiable_download_is_refused_with_pin_sha256(server, tmp_path, job):
    url = server("nolength", "labels.txt", b"id,label\n" * 200)
    dest = tmp_path / "cache" / "labels.txt"
    line = job(lambda smk: fetch(url, dest))
    assert dest.name in line and "no Content-Length" in line
    assert "pin sha256 in config key data.sources.ltcc.sha256" in line
    assert not dest.exists()
    assert not dest.with_name(dest.name + ".part").exists()  # nothing to resume: a cut cannot be told


def test_pinned_sha256_vouches_for_a_download_without_length(server, tmp_path):
    body = b"id,label\n" * 200
    dest = tmp_path / "cache" / "pinned.txt"
    fetch(server("nolength", "pinned.txt", body), dest, sha(body))
    assert dest.read_bytes() == body


def test_pinned_but_truncated_archive_is_named_truncation_not_a_checksum(server, tmp_path, job):
    data = ARCHIVES["tar.xz"]()
    url = server("nolength", "pin-cut.tar.xz", data[: len(data) // 2])
    dest = tmp_path / "cache" / "pin-cut.tar.xz"
    line = job(lambda smk: fetch(url, dest, sha(data)))
    assert "truncated" in line and "sha256 mismatch" not in line and f"{dest}" in line
    assert not dest.exists()


def test_fewer_bytes_than_announced_is_truncation(server, tmp_path, job):
    data = ARCHIVES["zip"]()
    url = server("short", "short.zip", data)
    dest = tmp_path / "cache" / "short.zip"
    errors = []

    def main(smk):
        try:
            fetch(url, dest)
        except DownloadError as e:
            errors.append(e)
            raise

    line = job(main)
    assert isinstance(errors[0], TruncatedArchiveError)
    assert f"the connection closed after {len(data) // 2} of the {len(data)} bytes" in line
    assert str(dest.with_name(dest.name + ".part")) in line and "rerun" in line  # what is kept, and the fix
    assert not dest.exists()


def test_interrupted_partial_download_is_reused_and_logged(server, tmp_path, caplog):
    data = ARCHIVES["tar.bz2"]()
    url = server("full", "resume.tar.bz2", data)
    dest = tmp_path / "cache" / "resume.tar.bz2"
    dest.parent.mkdir(parents=True)
    dest.with_name(dest.name + ".part").write_bytes(data[:1000])
    dest.with_name(dest.name + ".part.json").write_text(f'{{"url": "{url}"}}')
    with caplog.at_level(logging.INFO):
        fetch(url, dest)
    assert dest.read_bytes() == data
    assert "reusing the partial download" in caplog.text and "left by an interrupted run" in caplog.text


def test_truncated_cached_download_is_fetched_again(server, tmp_path, caplog):
    data = ARCHIVES["tar.gz"]()
    url = server("full", "cached.tar.gz", data)
    dest = tmp_path / "cache" / "cached.tar.gz"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(data[:-20])
    with caplog.at_level(logging.INFO):
        fetch(url, dest)
    assert dest.read_bytes() == data
    assert "truncated" in caplog.text


# ------------------------------------------------------------------------------------------ extraction
def test_truncated_local_archive_is_not_extracted(tmp_path, job):
    data = ARCHIVES["tar.gz"]()
    arc = tmp_path / "ltcc.tar.gz"
    arc.write_bytes(data[: len(data) * 2 // 3])
    target = tmp_path / "data" / "ltcc"
    line = job(lambda smk: safe_extract(arc, target, fix=f"replace {arc} with a complete copy and rerun"))
    assert line.startswith(f"{arc}: ") and "truncated" in line and line.endswith("with a complete copy and rerun")
    assert not target.exists() and not (tmp_path / "data").exists()  # refused before anything is written


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_leftover_of_a_killed_extraction_is_removed_on_the_next_run(tmp_path, caplog):
    arc = tmp_path / "ltcc.zip"
    arc.write_bytes(ARCHIVES["zip"]())
    data = tmp_path / "data"
    dead = data / f".ltcc.extract-{_dead_pid()}-abc123"
    (dead / "data").mkdir(parents=True)
    (dead / "data" / "half.bin").write_bytes(b"\0" * 300_000)
    live = data / f".ltcc.extract-{os.getpid()}-def456"  # a running extraction is left alone
    live.mkdir()
    with caplog.at_level(logging.INFO, logger="maskcl.download.extract"):
        target = safe_extract(arc, data / "ltcc")
    assert not dead.exists() and live.is_dir()
    assert (target / EXTRACT_MARKER).is_file()
    assert (target / "data" / "img_0.bin").read_bytes() == FILES["data/img_0.bin"]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("removed leftover")]
    assert len(lines) == 1 and str(dead) in lines[0] and "interrupted extraction" in lines[0] and "0.3 MB" in lines[0]
    assert remove_leftovers(data / "ltcc") == []  # nothing more to remove


def test_leftover_old_copy_of_an_interrupted_replacement_is_removed(tmp_path, caplog):
    data = tmp_path / "data"
    old = data / f".ltcc.old-{_dead_pid()}-x"
    (old / "ltcc").mkdir(parents=True)
    with caplog.at_level(logging.INFO, logger="maskcl.download.extract"):
        assert remove_leftovers(data / "ltcc") == [old]
    assert not old.exists() and "interrupted replacement of the old copy" in caplog.text
