"""Fault injection: an image of a mode ``convert("RGB")`` misreads is refused wherever images are read.

A 16-bit greyscale PNG (PIL mode ``I;16``) passes PIL's own verification and converts to an almost
white RGB picture; 32-bit ``I`` / ``F`` TIFFs are clipped the same way and a CMYK JPEG loses its
colour profile. Each is refused with one line naming the file, its mode and the fix: by the download
rule's verification (``data.verify_images``), by the parse stage before any mask is made, by the
training and evaluation readers (in DataLoader workers), by the SCHP/MediaPipe input reader and by the
figure tiles. The modes that are read (``maskcl.image_modes.READ_MODES``, and 16-bit RGB PNGs,
which PIL opens as RGB) are shown to convert exactly.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Callable, Dict

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import build_tiny_synthcc
import test_download as dl
import test_faults_repair as repair

from maskcl.errors import DatasetError, EvaluationError, ImageReadError
from maskcl.image_modes import READ_MODES, check_image_mode
from maskcl.masks import parse_dataset
from maskcl.masks.sources import image_size, read_image
from maskcl.models.images import load_rgb, load_rgb_eval
from maskcl.reporting.plotting import load_tile

SIZE = (8, 16)  # (width, height) of the LTCC example images of tests/test_download.py
IN_PLACE = "replace the file with a good copy from the original dataset, or remove it, and rerun"


# ------------------------------------------------------------------------------------------ files
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png16_rgb(arr: np.ndarray) -> bytes:
    """A 16-bit-per-sample RGB PNG of ``arr`` (H, W, 3) uint16, written by hand (PIL cannot write one)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(raw))
            + _png_chunk(b"IEND", b""))


def _save(im: Image.Image, fmt: str) -> Callable[[Path], None]:
    return lambda path: im.save(path, format=fmt)


w, h = SIZE
#: kind → (writer of a file named whatever the dataset names it, the mode PIL opens it in)
REFUSED: Dict[str, Callable[[Path], None]] = {
    "png16_grey": _save(Image.fromarray(np.full((h, w), 40000, np.uint16)), "PNG"),
    "tiff_int32": _save(Image.fromarray(np.full((h, w), 70000, np.int32)), "TIFF"),
    "tiff_float": _save(Image.fromarray(np.full((h, w), 0.5, np.float32)), "TIFF"),
    "jpeg_cmyk": _save(Image.new("CMYK", SIZE, (0, 255, 255, 0)), "JPEG"),
}
MODES = {"png16_grey": ("I;16", "I"), "tiff_int32": ("I",), "tiff_float": ("F",), "jpeg_cmyk": ("CMYK",)}


def bad_image(path: Path, kind: str) -> str:
    """Overwrite ``path`` with an image of a refused kind; return the mode PIL opens it in."""
    REFUSED[kind](path)
    with Image.open(path) as im:
        assert im.mode in MODES[kind], im.mode   # the file really is what the case says
        return im.mode


def assert_refused(line: str, path: Path, mode: str, fix: str) -> None:
    assert line.startswith(f"{path}: image mode {mode} (")
    assert "the pipeline reads 8-bit images only (PIL modes RGB, RGBA, L, LA, P, 1)" in line
    assert line.endswith(f"convert it to 8-bit RGB, or {fix}")


# ------------------------------------------------------------------------------------------ the modes read
def test_16bit_grey_png_is_what_the_issue_saw():
    """Without the check, PIL verifies the file and converts it to a near-white image."""
    import io

    buf = io.BytesIO()
    REFUSED["png16_grey"](buf)
    buf.seek(0)
    with Image.open(buf) as im:
        im.verify()
    buf.seek(0)
    with Image.open(buf) as im:
        assert (np.asarray(im.convert("RGB")) == 255).all()       # 40000/65535 (61 % grey) read as white


@pytest.mark.parametrize("mode", READ_MODES)
def test_each_read_mode_converts_exactly(mode, tmp_path):
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    idx = rng.integers(0, 256, (h, w), dtype=np.uint8)
    grey = rng.integers(0, 256, (h, w), dtype=np.uint8)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (h, w), dtype=np.uint8)
    if mode == "P":
        im = Image.fromarray(idx, "L").convert("P")
        im.putpalette(palette.tobytes())
        want = palette[idx]
    elif mode in ("L", "LA"):
        im, want = Image.fromarray(grey, "L"), np.repeat(grey[..., None], 3, axis=2)
        if mode == "LA":
            im = im.convert("LA")
            im.putalpha(Image.fromarray(alpha, "L"))
    elif mode == "1":
        bits = grey > 127
        im, want = Image.fromarray(bits), np.repeat(np.where(bits, 255, 0)[..., None], 3, axis=2).astype(np.uint8)
    else:
        im, want = Image.fromarray(rgb, "RGB"), rgb
        if mode == "RGBA":
            im = im.copy()
            im.putalpha(Image.fromarray(alpha, "L"))
    path = tmp_path / "a.png"
    im.save(path, format="PNG")
    with Image.open(path) as f:
        assert f.mode == mode                                # the file holds the mode under test
    for read in (load_rgb, load_rgb_eval):
        assert np.array_equal(np.asarray(read(str(path))), want)
    assert np.array_equal(read_image(str(path)), want) and image_size(str(path)) == (h, w)


def test_16bit_rgb_png_is_read_as_its_high_byte(tmp_path):
    """PIL opens a 48-bit PNG as RGB holding ``v >> 8``: the exact 8-bit reduction, so it is read."""
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 65536, (h, w, 3), dtype=np.uint16)
    arr[0, 0] = (0x80FF, 0x00FF, 0xFF00)          # rounding (v / 257) would give 129, 1, 254 here
    path = tmp_path / "deep.png"
    path.write_bytes(png16_rgb(arr))
    want = (arr >> 8).astype(np.uint8)
    assert np.array_equal(np.asarray(load_rgb(str(path))), want)
    assert np.array_equal(read_image(str(path)), want)
    assert want[0, 0].tolist() == [0x80, 0x00, 0xFF]


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I", "F", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "La"])
def test_every_other_mode_is_refused_with_its_error_class(mode):
    want = rf"^x\.png: image mode {mode} \([^()]*\); .*: convert it to 8-bit RGB, or fix$"
    with pytest.raises(EvaluationError, match=want):
        check_image_mode("x.png", mode, error=EvaluationError, fix="fix")


# ------------------------------------------------------------------------------------------ download rule
@pytest.mark.parametrize("kind", list(REFUSED))
def test_download_verification_refuses_the_image_and_writes_no_manifest(kind, tmp_path, job):
    src = dl.write_tree(tmp_path / "data", dl.ltcc_files(real_images=True))
    bad = src / "LTCC_ReID" / "train" / "002_1_c4_000530.png"
    assert bad.is_file()
    mode = bad_image(bad, kind)
    line = job(lambda smk: dl.prep(tmp_path, "ltcc", str(src), verify=True))
    assert_refused(line, bad, mode, IN_PLACE)
    assert not (tmp_path / "results").exists() or list((tmp_path / "results").iterdir()) == []


def test_without_verification_the_loaders_refuse_it(tmp_path, job):
    """``data.verify_images`` off: the manifest is written, and the first stage that reads the image stops."""
    src = dl.write_tree(tmp_path / "data", dl.ltcc_files(real_images=True))
    bad = src / "LTCC_ReID" / "train" / "002_1_c4_000530.png"
    mode = bad_image(bad, "png16_grey")
    dl.prep(tmp_path, "ltcc", str(src), verify=False)
    paths = pd.read_csv(tmp_path / "results" / "manifest.csv")["path"].tolist()
    assert str(bad.resolve()) in paths
    out = tmp_path / "results" / "features.npy"
    line = job(lambda smk: repair.drain_images(paths, out))
    assert_refused(line, bad.resolve(), mode, IN_PLACE)
    assert not out.exists()


# ------------------------------------------------------------------------------------------ loaders
@pytest.mark.parametrize("kind", list(REFUSED))
def test_every_reader_refuses_it_with_its_stage_error(kind, tmp_path, job):
    path = tmp_path / "mine" / "a.png"
    path.parent.mkdir()
    mode = bad_image(path, kind)
    readers = {load_rgb: DatasetError, load_rgb_eval: EvaluationError, read_image: ImageReadError,
               image_size: ImageReadError}
    for read, error in readers.items():
        with pytest.raises(error) as e:
            read(str(path))
        assert_refused(str(e.value), path, mode, IN_PLACE)
    out = tmp_path / "features.npy"
    line = job(lambda smk: repair.drain_images([str(path)], out))   # training/evaluation: in a worker
    assert_refused(line, path, mode, IN_PLACE)
    assert not out.exists()
    line = job(lambda smk: load_tile(str(path), 32))                # the figures
    assert_refused(line, path, mode, IN_PLACE)


def test_parse_stage_refuses_it_before_any_index(tmp_path, job):
    work = build_tiny_synthcc(tmp_path / "w")
    manifest = pd.read_csv(work / "manifest.csv")
    image = Path(manifest.loc[manifest["split"] == "train", "path"].iloc[2])
    with Image.open(image) as im:
        size = im.size
    Image.fromarray(np.full(size[::-1], 40000, np.uint16)).save(image, format="PNG")
    out = tmp_path / "results" / "masks" / "groundtruth"
    line = job(lambda smk: parse_dataset(work / "manifest.csv", out, "groundtruth", progress=False))
    assert f"{image}: image mode I;16 (16-bit greyscale" in line
    assert "convert it to 8-bit RGB, or regenerate the dataset: snakemake --cores all --forcerun " \
           "results/synthcc/manifest.csv" in line
    assert not (out / "index.csv").exists()

