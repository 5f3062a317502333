"""Fault injection: a mask is checked against its image (size, mode, values) wherever it is used.

The parse stage records each image's size in the mask index (``height``, ``width``: also the size
of its masks). Training checks every mask against that size before the first step and again when
it reads an image with its mask; the tables stage checks the masks it draws. A mask of another
size, mode or content stops the job with one line naming the mask, the image, both sizes and the
parse rule to rerun; rerunning parse repairs it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import build_tiny_synthcc
import test_faults_upstream as upstream

from maskcl.errors import DatasetError, ImageReadError, MaskError
from maskcl.masks import parse_dataset, read_mask_index
from maskcl.masks.index import check_mask_file, load_mask
from maskcl.training.data import PairedImageSet, train_data_from_manifest
from maskcl.training.stage import train_stage

# the valid reporting workspace of the upstream faults, shared as fixtures (the run_job harness `job` is in conftest)
pristine, ws = upstream.pristine, upstream.ws

SETTINGS = dict(method="maskcl", arch="resnet18", pretrained="none", height=64, width=32, epochs=1, iters=1,
                batch_size=16, num_instances=4, workers=0, device="cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """Tiny SynthCC, its ground-truth masks parsed by the parse stage (index with sizes)."""
    work = build_tiny_synthcc(tmp_path_factory.mktemp("faults_masks"))
    parse_dataset(work / "manifest.csv", work / "results" / "masks" / "groundtruth", "groundtruth", progress=False)
    return work


def _index(work: Path) -> Path:
    return work / "results" / "masks" / "groundtruth" / "index.csv"


def _first_train(work: Path, column: str = "silhouette"):
    manifest = pd.read_csv(work / "manifest.csv")
    index = read_mask_index(_index(work))    # mask paths absolute (stored relative to the index)
    rel = manifest.loc[manifest["split"] == "train", "relpath"].iloc[0]
    row = index[index["relpath"] == rel].iloc[0]
    return str(manifest.loc[manifest["relpath"] == rel, "path"].iloc[0]), str(row[column]), row


def _resize(path: str, dw: int, dh: int) -> None:
    with Image.open(path) as im:
        mode, (w, h) = im.mode, im.size
        im.resize((w + dw, h + dh), Image.NEAREST).convert(mode).save(path)


def _fix(index: Path) -> str:
    return f"rerun the parse rule: snakemake --cores all --forcerun {index}"


def test_the_index_records_each_image_size(tiny):
    index = read_mask_index(_index(tiny))
    for rel, img, sil, h, w in list(zip(index["relpath"], pd.read_csv(tiny / "manifest.csv")["path"],
                                        index["silhouette"], index["height"], index["width"]))[:10]:
        with Image.open(img) as a, Image.open(sil) as b:
            assert a.size == b.size == (w, h)


def test_a_resized_mask_stops_training_before_it_starts_and_parse_repairs_it(tiny, job, tmp_path):
    image, mask, row = _first_train(tiny)
    _resize(mask, 3, -2)
    out = tmp_path / "run"
    line = job(lambda smk: train_stage(str(tiny / "manifest.csv"), str(_index(tiny)), "silhouette", SETTINGS, 0,
                                       str(out / "model.pt"), str(out / "train_log.csv"), str(out / "state"),
                                       progress=False))
    w, h = int(row["width"]), int(row["height"])
    assert line == (f"mask {mask} is {w + 3}x{h - 2} but its image {image} is {w}x{h} (as the mask index records "
                    f"it): a stale mask or one of another image; {_fix(_index(tiny))}")
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))
    # the fix the line names: parse again (it redoes the mask that does not fit), then training may read it
    res = parse_dataset(tiny / "manifest.csv", tiny / "results" / "masks" / "groundtruth", "groundtruth",
                        progress=False)
    assert res.processed == 1
    data = train_data_from_manifest(pd.read_csv(tiny / "manifest.csv"), read_mask_index(_index(tiny)),
                                    index_path=str(_index(tiny)))
    assert len(data.mask_paths) == len(data)


def test_an_index_without_sizes_checks_against_the_image(tiny, tmp_path):
    """An older workspace's index (no height/width columns, absolute mask paths): the image's header gives
    the size."""
    image, mask, row = _first_train(tiny)
    old = _index(tiny).with_name("old_index.csv")       # beside the masks, as an older parse stage wrote it
    copy = _index(tiny).with_name("old_sil.png")
    try:
        frame = read_mask_index(_index(tiny)).drop(columns=["height", "width"])
        with Image.open(mask) as im:
            im.resize((im.width * 2, im.height * 2), Image.NEAREST).save(copy)
        frame.loc[frame["relpath"] == row["relpath"], "silhouette"] = str(copy)
        frame.to_csv(old, index=False)
        w, h = int(row["width"]), int(row["height"])
        with pytest.raises(MaskError) as e:
            train_data_from_manifest(pd.read_csv(tiny / "manifest.csv"), read_mask_index(old), index_path=str(old))
        assert str(e.value) == (f"mask {copy} is {2 * w}x{2 * h} but its image {image} is {w}x{h}: a stale mask or "
                                f"one of another image; {_fix(old)}")
        assert isinstance(e.value, ImageReadError)
    finally:
        old.unlink(missing_ok=True)
        copy.unlink(missing_ok=True)


def _grey(path: Path, size, value: int = 128, mode: str = "L") -> Path:
    w, h = size
    arr = np.zeros((h, w), np.uint8)
    arr[h // 4: 3 * h // 4] = value
    img = Image.fromarray(arr)
    (img.convert(mode) if mode != "L" else img).save(path)
    return path


def test_mask_modes_and_values(tiny, tmp_path):
    image, _, row = _first_train(tiny)
    size = (int(row["width"]), int(row["height"]))
    rgb = _grey(tmp_path / "rgb.png", size, 255, mode="RGB")
    with pytest.raises(MaskError, match=r"silhouette mask \S+rgb.png has image mode RGB, but a silhouette mask is L "
                                        r"or 1 \(as the parse stage writes it\); rerun the parse rule"):
        check_mask_file(str(rgb), "silhouette", image, size)
    grey = _grey(tmp_path / "grey.png", size, 128)
    check_mask_file(str(grey), "silhouette", image, size)                 # the header is fine ...
    with pytest.raises(MaskError, match=r"grey.png holds value\(s\) 128 besides 0 and 255"):
        load_mask(str(grey), "silhouette")                                 # ... the pixels are not
    with pytest.raises(MaskError, match=r"parts mask \S+grey.png has image mode L, but a parts mask is RGB or P"):
        check_mask_file(str(grey), "parts", image, size)
    ok = _grey(tmp_path / "ok.png", size, 255)
    assert load_mask(str(ok), "silhouette").mode == "RGB"
    one_bit = _grey(tmp_path / "bits.png", size, 255, mode="1")
    assert load_mask(str(one_bit), "silhouette").size == size
    with pytest.raises(MaskError, match=r"silhouette mask \S+gone.png not found; rerun the parse rule"):
        load_mask(str(tmp_path / "gone.png"), "silhouette")
    (tmp_path / "cut.png").write_bytes(ok.read_bytes()[:40])
    with pytest.raises(MaskError, match=r"cut.png cannot be read"):
        load_mask(str(tmp_path / "cut.png"), "silhouette")


def test_a_mask_changed_after_the_check_is_caught_when_read(tiny, tmp_path):
    image, _, row = _first_train(tiny)
    w, h = int(row["width"]), int(row["height"])
    wrong = _grey(tmp_path / "wrong.png", (w - 1, h), 255)
    ds = PairedImageSet([image], [str(wrong)], lambda im: im, lambda im: im, kind="silhouette", fix="FIX")
    with pytest.raises(MaskError) as e:
        ds[(0, 5)]
    assert str(e.value) == (f"mask {wrong} is {w - 1}x{h} but its image {image} is {w}x{h}: a stale mask or one of "
                            f"another image; FIX")


def test_a_broken_index_stops_training(tiny, tmp_path):
    broken = tmp_path / "index.csv"
    text = _index(tiny).read_text()
    broken.write_text(text[: len(text) // 2])
    out = tmp_path / "run"
    with pytest.raises(DatasetError) as e:
        train_stage(str(tiny / "manifest.csv"), str(broken), "silhouette", SETTINGS, 0, str(out / "model.pt"),
                    str(out / "train_log.csv"), str(out / "state"), progress=False)
    assert str(e.value) == f"{broken}: mask index ends in the middle of a line (truncated); {_fix(broken)}"
    assert not (out / "model.pt").exists()


def test_the_tables_stage_checks_the_masks_it_draws(ws, job):
    index = Path(ws["mask_indexes"][("synthcc", "groundtruth")])
    frame = pd.read_csv(index)
    for mask in frame["parts"]:
        _resize(mask, 0, 4)
    row = frame.iloc[0]
    line = job(lambda smk: upstream.report(ws))
    assert line.startswith("mask ") and "but its image" in line and line.endswith(_fix(index))
    assert f"is {int(row['width'])}x{int(row['height']) + 4} but" in line
    upstream.no_outputs(ws)


def test_a_bad_mask_read_in_a_dataloader_worker_is_one_line(tiny, job, tmp_path):
    from torch.utils.data import DataLoader

    image, _, row = _first_train(tiny)
    w, h = int(row["width"]), int(row["height"])
    wrong = _grey(tmp_path / "wrong.png", (w, h + 6), 255)
    ds = PairedImageSet([image], [str(wrong)], lambda im: 0, lambda im: 0, fix="FIX")
    line = job(lambda smk: next(iter(DataLoader(ds, batch_size=1, num_workers=1))))
    assert line == (f"mask {wrong} is {w}x{h + 6} but its image {image} is {w}x{h}: a stale mask or one of another "
                    f"image; FIX")
