"""Download stage: HTTP with resume, checksums, safe extraction, prepare_dataset and the Snakemake rule.

A real HTTP server on 127.0.0.1 (stdlib ``http.server`` in a thread) serves archives built here; its
handler supports ``Range`` / ``If-Range`` and can cut a response after N bytes to simulate a lost
connection.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import stat
import subprocess
import sys
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List

import pandas as pd
import pytest
from PIL import Image

from conftest import ROOT, layout_paths
from maskcl.datasets import DATASETS, dataset_splits
from maskcl.download import EXTRACT_MARKER, check_images, fetch_url, prepare_dataset, safe_extract, sha256_file
from maskcl.errors import ChecksumError, ConfigError, DatasetError, DownloadError, UnsafeArchiveError
from maskcl.manifest import read_manifest

LTCC_INFO = {"cloth-change_id_train.txt": "2\n", "cloth-unchange_id_train.txt": "5\n",
             "cloth-change_id_test.txt": "1\n", "cloth-unchange_id_test.txt": "144\n"}


# ------------------------------------------------------------------------------------------ helpers
def png_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 16), (seed * 37 % 256, 90, 200)).save(buf, format="PNG")
    return buf.getvalue()


def ltcc_files(real_images: bool = False) -> Dict[str, bytes]:
    """The LTCC example tree of dataset_layouts.txt as {relative path: content}."""
    out = {}
    for i, rel in enumerate(layout_paths()["LTCC"]):
        if rel.endswith(".txt"):
            out[rel] = LTCC_INFO[Path(rel).name].encode()
        else:
            out[rel] = png_bytes(i) if real_images else b"img%d" % i
    return out


def write_tree(base: Path, files: Dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_bytes(data)
    return base


def make_zip(path: Path, files: Dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel, data in files.items():
            zf.writestr(rel, data)
    return path


def make_tar(path: Path, files: Dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for rel, data in files.items():
            ti = tarfile.TarInfo(rel)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def listing(folder: Path) -> List[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ------------------------------------------------------------------------------------------ HTTP server
@dataclass
class ServerState:
    files: Dict[str, bytes] = field(default_factory=dict)
    etags: Dict[str, str] = field(default_factory=dict)
    requests: List[Dict[str, str]] = field(default_factory=list)
    cut_after: Dict[str, List[int]] = field(default_factory=dict)  # path -> bytes to send before closing, per request
    fail_status: Dict[str, List[int]] = field(default_factory=dict)
    ignore_range: bool = False
    sent: List[int] = field(default_factory=list)


class RangeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        st: ServerState = self.server.state  # type: ignore[attr-defined]
        st.requests.append({"path": self.path, **{k: v for k, v in self.headers.items()}})
        data = st.files.get(self.path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        codes = st.fail_status.get(self.path)
        if codes:
            self.send_response(codes.pop(0))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        etag = st.etags.get(self.path, '"%s"' % sha(data)[:16])
        start = 0
        rng = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if rng and not st.ignore_range and (if_range is None or if_range == etag):
            start = int(re.match(r"bytes=(\d+)-$", rng).group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.end_headers()
        cuts = st.cut_after.get(self.path)
        if cuts:
            n = cuts.pop(0)
            self.wfile.write(body[:n])
            self.wfile.flush()
            st.sent.append(n)
            self.close_connection = True
            return
        self.wfile.write(body)
        st.sent.append(len(body))


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.state = ServerState()  # type: ignore[attr-defined]
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"  # type: ignore[attr-defined]
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


# ------------------------------------------------------------------------------------------ fetch_url
def test_fetch_url_downloads_and_verifies(server, tmp_path):
    data = os.urandom(300_000)
    server.state.files["/a.bin"] = data
    dest = fetch_url(server.url + "/a.bin", tmp_path / "cache" / "a.bin", sha(data), progress=False)
    assert dest.read_bytes() == data
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a.bin"]  # no .part / .part.json left
    assert "Range" not in server.state.requests[0]
    # a second call uses the verified cache, no request
    fetch_url(server.url + "/a.bin", dest, sha(data), progress=False)
    assert len(server.state.requests) == 1


def test_interrupted_download_resumes_from_the_partial_file(server, tmp_path):
    data = os.urandom(250_000)
    server.state.files["/big.zip"] = data
    server.state.cut_after["/big.zip"] = [100_000]
    dest = tmp_path / "cache" / "big.zip"
    with pytest.raises(DownloadError, match=r"100000 bytes are kept in .*big\.zip\.part and the next run resumes"):
        fetch_url(server.url + "/big.zip", dest, sha(data), retries=0, progress=False, chunk_size=4096)
    part = tmp_path / "cache" / "big.zip.part"
    assert part.stat().st_size == 100_000 and part.read_bytes() == data[:100_000]
    assert not dest.exists()
    fetch_url(server.url + "/big.zip", dest, sha(data), retries=0, progress=False)
    assert server.state.requests[-1]["Range"] == "bytes=100000-"
    assert server.state.sent == [100_000, 150_000]  # only the missing bytes were sent again
    assert dest.read_bytes() == data and not part.exists()


def test_retries_resume_within_one_call(server, tmp_path, caplog):
    data = os.urandom(120_000)
    server.state.files["/r.tar"] = data
    server.state.cut_after["/r.tar"] = [30_000, 50_000]
    dest = fetch_url(server.url + "/r.tar", tmp_path / "r.tar", sha(data), retries=3, backoff=0, progress=False)
    assert dest.read_bytes() == data
    assert [r.get("Range") for r in server.state.requests] == [None, "bytes=30000-", "bytes=80000-"]
    assert "retry 2/3" in caplog.text


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    data = os.urandom(90_000)
    server.state.files["/x"] = data
    server.state.cut_after["/x"] = [40_000]
    server.state.ignore_range = True
    dest = fetch_url(server.url + "/x", tmp_path / "x.zip", sha(data), retries=1, backoff=0, progress=False)
    assert dest.read_bytes() == data  # the 200 answer replaced the partial file instead of being appended


def test_changed_file_on_server_is_not_spliced(server, tmp_path):
    old, new = os.urandom(80_000), os.urandom(80_000)
    server.state.files["/d"] = old
    server.state.cut_after["/d"] = [20_000]
    with pytest.raises(DownloadError):
        fetch_url(server.url + "/d", tmp_path / "d", retries=0, progress=False)
    server.state.files["/d"] = new  # new ETag: If-Range no longer matches, server sends the whole file
    dest = fetch_url(server.url + "/d", tmp_path / "d", sha(new), retries=0, progress=False)
    assert server.state.requests[-1]["If-Range"] == '"%s"' % sha(old)[:16]
    assert dest.read_bytes() == new


def test_partial_file_already_complete(server, tmp_path):
    data = os.urandom(10_000)
    server.state.files["/c"] = data
    part = tmp_path / "c.part"
    part.write_bytes(data)
    (tmp_path / "c.part.json").write_text(json.dumps({"url": server.url + "/c"}))
    dest = fetch_url(server.url + "/c", tmp_path / "c", sha(data), retries=0, progress=False)
    assert dest.read_bytes() == data and server.state.requests[-1]["Range"] == "bytes=10000-"


def test_checksum_mismatch_after_download(server, tmp_path):
    server.state.files["/a"] = b"hello world"
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as e:
        fetch_url(server.url + "/a", tmp_path / "a.zip", wrong, progress=False)
    msg = str(e.value)
    assert str(tmp_path / "a.zip") in msg and wrong in msg and sha(b"hello world") in msg
    assert "rerun to fetch it again" in msg and "update the sha256" in msg
    assert list(tmp_path.iterdir()) == []  # neither the final file nor the bad partial remain


def test_http_errors(server, tmp_path):
    with pytest.raises(DownloadError, match=r"/missing\.zip: HTTP 404"):
        fetch_url(server.url + "/missing.zip", tmp_path / "m", retries=3, backoff=0, progress=False)
    assert len(server.state.requests) == 1  # a 404 is not retried
    server.state.files["/busy"] = b"abc"
    server.state.fail_status["/busy"] = [503, 503]
    assert fetch_url(server.url + "/busy", tmp_path / "b", retries=2, backoff=0, progress=False).read_bytes() == b"abc"
    with pytest.raises(DownloadError, match="only http:// and https://"):
        fetch_url("ftp://example.org/x.zip", tmp_path / "f", progress=False)


def test_unreachable_server_keeps_trying_then_fails(tmp_path):
    with pytest.raises(DownloadError, match="after 2 attempt"):
        fetch_url("http://127.0.0.1:9/nothing.zip", tmp_path / "n", retries=1, backoff=0, timeout=2, progress=False)


# ------------------------------------------------------------------------------------------ safe_extract
def test_extract_zip_and_tar_variants(tmp_path):
    files = {"top/a.txt": b"A", "top/sub/b.txt": b"B"}
    for name, maker in (("x.zip", make_zip), ("x.tar", lambda p, f: make_tar(p, f, "w")),
                        ("x.tgz", make_tar), ("x.tar.bz2", lambda p, f: make_tar(p, f, "w:bz2")),
                        ("x.tar.xz", lambda p, f: make_tar(p, f, "w:xz")),
                        ("no_extension", make_zip)):
        arc = maker(tmp_path / name, files)
        target = safe_extract(arc, tmp_path / f"out-{name}")
        assert (target / "top/sub/b.txt").read_bytes() == b"B"
        marker = json.loads((target / EXTRACT_MARKER).read_text())
        assert marker["archive"] == str(arc.resolve()) and marker["entries"] == 2


def test_extract_allows_links_that_stay_inside(tmp_path):
    arc = tmp_path / "ok.tar"
    with tarfile.open(arc, "w") as tf:
        for name, data in (("d/real.txt", b"R"),):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        ln = tarfile.TarInfo("d/sub/link.txt")
        ln.type, ln.linkname = tarfile.SYMTYPE, "../real.txt"
        tf.addfile(ln)
        hl = tarfile.TarInfo("d/hard.txt")
        hl.type, hl.linkname = tarfile.LNKTYPE, "d/real.txt"
        tf.addfile(hl)
    target = safe_extract(arc, tmp_path / "t")
    assert (target / "d/sub/link.txt").read_bytes() == b"R" and (target / "d/hard.txt").read_bytes() == b"R"


def _tar_with(path: Path, entries) -> Path:
    """entries: (name, type, linkname_or_data)."""
    with tarfile.open(path, "w") as tf:
        ti = tarfile.TarInfo("good/first.txt")
        ti.size = 5
        tf.addfile(ti, io.BytesIO(b"first"))  # a harmless entry before the bad one
        for name, kind, extra in entries:
            ti = tarfile.TarInfo(name)
            if kind == "file":
                ti.size = len(extra)
                tf.addfile(ti, io.BytesIO(extra))
            else:
                ti.type = {"sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE,
                           "fifo": tarfile.FIFOTYPE}[kind]
                ti.linkname = extra or ""
                tf.addfile(ti)
    return path


EVIL_TARS = {
    "traversal": ([("../evil.txt", "file", b"x")], "contains '..'"),
    "deep_traversal": ([("good/../../evil.txt", "file", b"x")], "contains '..'"),
    "absolute": ([("/tmp/maskcl-evil-abs.txt", "file", b"x")], "absolute path"),
    "symlink_out": ([("good/link", "sym", "../../outside")], "points outside the target"),
    "symlink_abs": ([("good/link", "sym", "/etc/passwd")], "points outside the target"),
    "symlink_chain": ([("l1", "sym", "."), ("l2", "sym", "l1/..")], "points outside the target"),
    "symlink_via_symlink": ([("esc", "sym", "good/.."), ("esc2", "sym", "esc/..")], "points outside the target"),
    "write_through_link": ([("lnk/evil.txt", "file", b"x"), ("lnk", "sym", "../..")],
                           "written through a link that leaves the target"),
    "hardlink_out": ([("good/hard", "hard", "../outside.txt")], "contains '..'"),
    "hardlink_abs": ([("good/hard", "hard", "/etc/passwd")], "absolute path"),
    "hardlink_unknown": ([("good/hard", "hard", "good/never.txt")], "does not point to a file"),
    "device": ([("good/dev", "chr", None)], "device or FIFO"),
    "fifo": ([("good/fifo", "fifo", None)], "device or FIFO"),
}


@pytest.mark.parametrize("case", sorted(EVIL_TARS))
def test_unsafe_tar_is_refused_and_nothing_is_written(tmp_path, case):
    entries, match = EVIL_TARS[case]
    box = tmp_path / "box"
    box.mkdir()
    arc = _tar_with(tmp_path / "evil.tar", entries)
    before = listing(tmp_path)
    with pytest.raises(UnsafeArchiveError, match=match) as e:
        safe_extract(arc, box / "data" / "target")
    assert str(arc) in str(e.value)
    assert listing(tmp_path) == before  # nothing inside the box, beside it, or above it
    assert not Path("/tmp/maskcl-evil-abs.txt").exists()


def _zip_with(path: Path, entries) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("good/first.txt", b"first")
        for name, kind, extra in entries:
            info = zipfile.ZipInfo(name)
            if kind == "sym":
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(info, extra)
            elif kind == "chr":
                info.external_attr = (stat.S_IFCHR | 0o600) << 16
                zf.writestr(info, b"")
            else:
                zf.writestr(info, extra)
    return path


EVIL_ZIPS = {
    "traversal": ([("../evil.txt", "file", b"x")], "contains '..'"),
    "backslash_traversal": ([("good\\..\\..\\evil.txt", "file", b"x")], "contains '..'"),
    "absolute": ([("/tmp/maskcl-evil-abs.txt", "file", b"x")], "absolute path"),
    "drive": ([("C:/evil.txt", "file", b"x")], "absolute path"),
    "symlink_out": ([("good/link", "sym", "../../outside")], "points outside the target"),
    "device": ([("good/dev", "chr", None)], "device or FIFO"),
}


@pytest.mark.parametrize("case", sorted(EVIL_ZIPS))
def test_unsafe_zip_is_refused_and_nothing_is_written(tmp_path, case):
    entries, match = EVIL_ZIPS[case]
    arc = _zip_with(tmp_path / "evil.zip", entries)
    before = listing(tmp_path)
    with pytest.raises(UnsafeArchiveError, match=match):
        safe_extract(arc, tmp_path / "target")
    assert listing(tmp_path) == before


def test_corrupt_and_foreign_archives(tmp_path):
    arc = make_tar(tmp_path / "a.tar.gz", {"x/y.txt": os.urandom(50_000)})
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(arc.read_bytes()[:5_000])
    before = listing(tmp_path)
    with pytest.raises(DownloadError, match=r"cut\.tar\.gz: the gzip stream ends .*: the file is truncated"):
        safe_extract(cut, tmp_path / "t")
    assert listing(tmp_path) == before  # the half-written temp folder was removed
    (tmp_path / "notes.txt").write_text("not an archive")
    with pytest.raises(DownloadError, match="not a zip or tar archive"):
        safe_extract(tmp_path / "notes.txt", tmp_path / "t")


def test_extract_never_replaces_foreign_folders(tmp_path):
    arc = make_zip(tmp_path / "a.zip", {"a.txt": b"1"})
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("user data")
    with pytest.raises(DatasetError, match="not extracted by this pipeline"):
        safe_extract(arc, tmp_path / "mine", replace=True)
    assert (tmp_path / "mine" / "keep.txt").read_text() == "user data"
    t = safe_extract(arc, tmp_path / "ours")
    make_zip(arc, {"b.txt": b"2"})
    safe_extract(arc, t, replace=True)
    assert (t / "b.txt").exists() and not (t / "a.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "mine", "ours"]


# ------------------------------------------------------------------------------------------ images
def test_check_images_catches_truncated_files(tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(png_bytes(1))
    big = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(big, format="JPEG", quality=95)
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(big.getvalue()[: len(big.getvalue()) // 2])
    with Image.open(trunc) as im:
        im.verify()  # verify() alone accepts the truncated JPEG: that is why we also load()
    check_images([str(good)], progress=False)
    with pytest.raises(DatasetError, match=r"unreadable image .*trunc\.jpg"):
        check_images([str(good), str(trunc)], progress=False)


# ------------------------------------------------------------------------------------------ prepare_dataset
def outputs(tmp_path: Path) -> Dict[str, Path]:
    out = tmp_path / "results"
    return {"manifest_out": out / "manifest.csv", "stats_out": out / "stats.csv", "info_out": out / "dataset.json"}


def prep(tmp_path: Path, name: str, source, sha256=None, verify=False, **kw):
    return prepare_dataset(name, source, sha256, tmp_path / "datasets", tmp_path / "downloads", verify, None,
                           **outputs(tmp_path), progress=False, **kw)


LTCC_STATS = [["train", 8, 2, 8, 4], ["query", 4, 2, 3, 3], ["gallery", 7, 2, 5, 3]]


def test_prepare_from_url(server, tmp_path, caplog):
    arc = make_zip(tmp_path / "ltcc.zip", ltcc_files())
    server.state.files["/dl/ltcc.zip"] = arc.read_bytes()
    digest = sha256_file(arc)
    with caplog.at_level(logging.WARNING):
        res = prep(tmp_path, "ltcc", server.url + "/dl/ltcc.zip", digest)
    assert res.root == (tmp_path / "datasets" / "ltcc" / "LTCC_ReID").resolve()
    manifest = pd.read_csv(tmp_path / "results" / "manifest.csv")
    assert len(manifest) == 19 and list(manifest.columns[:6]) == ["path", "relpath", "split", "pid", "camid",
                                                                   "clothes_id"]
    assert pd.read_csv(tmp_path / "results" / "stats.csv").values.tolist() == LTCC_STATS
    info = json.loads((tmp_path / "results" / "dataset.json").read_text())
    assert info["source_kind"] == "url" and info["archive_sha256"] == digest and info["images"] == 19
    assert "train.images = 8, official 9576" in info["official_differences"]
    assert info["official"]["train"] == {"images": 9576, "ids": 77}
    assert "difference(s) from the official counts" in caplog.text
    cached = list((tmp_path / "downloads" / "ltcc").iterdir())
    assert len(cached) == 1 and cached[0].name.endswith("-ltcc.zip") and cached[0].read_bytes() == arc.read_bytes()


def test_prepare_from_local_archive_reuses_the_extraction(tmp_path):
    arc = make_tar(tmp_path / "LTCC_ReID.tar.gz", ltcc_files())
    prep(tmp_path, "ltcc", str(arc), sha256_file(arc))
    target = tmp_path / "datasets" / "ltcc"
    inode = target.stat().st_ino
    res = prep(tmp_path, "ltcc", str(arc), sha256_file(arc))
    assert target.stat().st_ino == inode  # not extracted again
    assert res.stats.values.tolist() == LTCC_STATS
    make_tar(arc, {**ltcc_files(), "LTCC_ReID/train/009_1_c3_000001.png": b"x"})  # the archive changed
    res = prep(tmp_path, "ltcc", str(arc))
    assert res.stats.values.tolist()[0] == ["train", 9, 3, 9, 5]  # c3 is a new train camera


def test_prepare_uses_a_folder_in_place(tmp_path):
    src = write_tree(tmp_path / "mydata", ltcc_files())
    res = prep(tmp_path, "ltcc", str(src))
    assert res.root == (src / "LTCC_ReID").resolve() and not (tmp_path / "datasets").exists()
    assert json.loads((tmp_path / "results" / "dataset.json").read_text())["source_kind"] == "directory"
    with pytest.raises(ConfigError, match=r"data\.sources\.ltcc\.sha256 is set but the source .* is a folder"):
        prep(tmp_path, "ltcc", str(src), "a" * 64)


def test_prepare_checksum_mismatch_for_local_archive(tmp_path):
    arc = make_zip(tmp_path / "ltcc.zip", ltcc_files())
    with pytest.raises(ChecksumError) as e:
        prep(tmp_path, "ltcc", str(arc), "b" * 64)
    msg = str(e.value)
    assert str(arc) in msg and "b" * 64 in msg and sha256_file(arc) in msg and "data.sources.ltcc.sha256" in msg
    assert not (tmp_path / "datasets").exists() and not (tmp_path / "results").exists()


@pytest.mark.parametrize("name,gated", [("deepchange", True), ("ltcc", True), ("celebreid", False)])
def test_prepare_missing_source(tmp_path, name, gated):
    with pytest.raises(ConfigError) as e:
        prep(tmp_path, name, None)
    msg = str(e.value)
    assert f"set data.sources.{name}.source in config.yaml" in msg and "\n" not in msg
    assert ("licence-gated" in msg) == gated
    assert DATASETS.get(name).homepage in msg


def test_prepare_bad_sources(tmp_path):
    with pytest.raises(DatasetError, match=r"source .*nowhere does not exist; fix data\.sources\.prcc\.source"):
        prep(tmp_path, "prcc", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="unknown dataset 'market1501'"):
        prep(tmp_path, "market1501", str(tmp_path))
    with pytest.raises(ConfigError, match="not an http"):
        prep(tmp_path, "prcc", "ftp://example.org/prcc.zip")
    wrong = write_tree(tmp_path / "wrong", {"VC-Clothes/train/0001-01-01-01.jpg": b""})
    with pytest.raises(DatasetError, match="does not look like ltcc: expected query, test, train"):
        prep(tmp_path, "ltcc", str(wrong))
    assert not (tmp_path / "results").exists()


def test_prepare_verify_images(tmp_path):
    src = write_tree(tmp_path / "data", ltcc_files(real_images=True))
    prep(tmp_path, "ltcc", str(src), verify=True)
    bad = src / "LTCC_ReID" / "test" / "144_1_c3_011301.png"
    bad.write_bytes(bad.read_bytes()[:40])
    for p in (tmp_path / "results").iterdir():
        p.unlink()
    with pytest.raises(DatasetError, match=r"unreadable image .*144_1_c3_011301\.png"):
        prep(tmp_path, "ltcc", str(src), verify=True)
    assert list((tmp_path / "results").iterdir()) == []  # no manifest for a broken dataset
    prep(tmp_path, "ltcc", str(src), verify=False)  # verification is what catches it: off, the manifest is written


def test_prepare_synthcc_generates_then_loads(tmp_path):
    from maskcl.datasets.synthcc import expected_counts, resolve_config

    res = prepare_dataset("synthcc", None, None, tmp_path / "datasets", tmp_path / "dl", False,
                          {"preset": "tiny", "seed": 3, "overrides": {}}, **outputs(tmp_path), progress=False,
                          workers=2)
    want = expected_counts(resolve_config("tiny"))
    got = res.stats.set_index("split")
    for split in ("train", "query", "gallery"):
        assert got.loc[split, "images"] == want[split]["images"]
    assert res.differences == []
    info = json.loads((tmp_path / "results" / "dataset.json").read_text())
    assert info["source_kind"] == "generated" and info["official"]  # expected counts were compared
    manifest = pd.read_csv(tmp_path / "results" / "manifest.csv")
    assert (tmp_path / "datasets" / "synthcc" / "synthcc.json").is_file()
    assert manifest["parsing"].notna().all()
    with pytest.raises(ConfigError, match="SynthCC is generated"):
        prepare_dataset("synthcc", "http://x/y.zip", None, tmp_path, tmp_path, False, {}, **outputs(tmp_path))
    with pytest.raises(ConfigError) as err:  # the message, word for word, as before the download package
        prepare_dataset("synthcc", "http://x/y.zip", None, tmp_path, tmp_path, False, {}, **outputs(tmp_path))
    assert str(err.value) == ("data.sources.synthcc.source is set, but SynthCC is generated, not downloaded; "
                              "remove it (SynthCC is configured under data.synthcc)")


# ------------------------------------------------------------------------------------------ Snakemake
def run_snakemake(workdir: Path, config: str, *targets: str, dry: bool = False) -> subprocess.CompletedProcess:
    (workdir / "config.yaml").write_text(config)
    # --replace-workflow-config: this config alone (and the schema defaults), not merged over config.yaml
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--replace-workflow-config", "--cores", "1",
           *(["-n"] if dry else []), *targets]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240)


def test_download_rule_end_to_end(server, tmp_path):
    arc = make_zip(tmp_path / "ltcc.zip", ltcc_files())
    server.state.files["/ltcc.zip"] = arc.read_bytes()
    work = tmp_path / "work"
    work.mkdir()
    config = (f"datasets: [ltcc]\ndata:\n  sources:\n    ltcc:\n      source: {server.url}/ltcc.zip\n"
              f"      sha256: {sha256_file(arc)}\n")
    targets = ["results/ltcc/manifest.csv", "results/ltcc/stats.csv", "results/ltcc/dataset.json"]
    proc = run_snakemake(work, config, *targets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stored = pd.read_csv(work / "results/ltcc/manifest.csv")
    # images inside the workspace are stored relative to the manifest's folder (a moved workspace reads
    # its own), and read back absolute by the one reader
    assert stored["path"][0] == "../../resources/datasets/ltcc/LTCC_ReID/" + stored["relpath"][0]
    manifest = read_manifest(work / "results/ltcc/manifest.csv", splits=dataset_splits("ltcc"))
    assert manifest.groupby("split").size().to_dict() == {"train": 8, "query": 4, "gallery": 7}
    assert manifest["path"].map(lambda p: Path(p).is_file()).all()
    assert Path(manifest["path"][0]).is_relative_to((work / "resources/datasets/ltcc").resolve())
    assert pd.read_csv(work / "results/ltcc/stats.csv").values.tolist() == LTCC_STATS
    assert (work / "logs/download/ltcc.log").read_text().count("official counts") == 1
    assert [r["path"] for r in server.state.requests] == ["/ltcc.zip"]


def test_schema_rejects_bad_config_with_one_line(tmp_path):
    config = "datasets: [ltcc]\ndata:\n  sources:\n    ltcc:\n      source: x.zip\n      sha256: nothex\n"
    proc = run_snakemake(tmp_path, config, "results/ltcc/manifest.csv", dry=True)
    assert proc.returncode != 0
    errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "ERROR" in ln]
    assert len(errors) == 1 and "data.sources.ltcc.sha256" in errors[0] and "'nothex'" in errors[0]
    assert "Traceback" not in proc.stderr
