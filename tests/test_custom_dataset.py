"""A user's own dataset (``custom``): the labels CSV and the file-name pattern, row by row; the protocols
offered with and without clothes ids; the download stage in place; and the whole DAG on a folder built here.

Every expected value is worked out from the folder the test writes (``build_folder``), never from the loader.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from maskcl.datasets import get_dataset
from maskcl.datasets.custom import CustomFolder
from maskcl.errors import ConfigError, DatasetError, EvaluationError

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "config_tiny.yaml"
MARKET = r"(?P<pid>\d+)_c(?P<camid>\d+)"
WITH_CLOTHES = r"(?P<pid>\d+)_c(?P<camid>\d+)_o(?P<clothes_id>\d+)"


# ------------------------------------------------------------------------------------------ the folder
def build_folder(root: Path, train_ids: int = 6, test_ids: int = 3) -> List[Dict[str, object]]:
    """``train/``, ``query/``, ``gallery/`` of 32x16 images named ``<pid>_c<cam>_o<outfit>_<n>.jpg``; its rows.

    Train: ``train_ids`` people × 2 cameras × 2 images, outfit = camera. Test people (pids from 100):
    query 2 images in camera 0, outfit 0; gallery one image in camera 1 outfit 0 (same clothes) and
    one in camera 1 outfit 1 (changed clothes). Each person has a colour of their own.
    """
    rows: List[Dict[str, object]] = []

    def image(split: str, pid: int, cam: int, outfit: int, n: int) -> None:
        rel = f"{split}/{pid:04d}_c{cam}_o{outfit}_{n}.jpg"
        (root / split).mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(pid * 100 + cam * 10 + n)
        base = np.array([(pid * 53) % 256, (pid * 97) % 256, (pid * 29) % 256], np.uint8)
        noise = rng.integers(0, 40, (32, 16, 3), dtype=np.uint8)
        Image.fromarray(base + noise).save(root / rel)
        rows.append({"path": rel, "pid": pid, "camid": cam, "clothes_id": outfit})

    for pid in range(train_ids):
        for cam in (0, 1):
            for n in (0, 1):
                image("train", pid, cam, cam, n)
    for pid in range(100, 100 + test_ids):
        for n in (0, 1):
            image("query", pid, 0, 0, n)
        image("gallery", pid, 1, 0, 0)
        image("gallery", pid, 1, 1, 1)
    return rows


def write_csv(path: Path, rows: List[Dict[str, object]], columns=("path", "pid", "camid", "clothes_id")) -> Path:
    pd.DataFrame(rows)[list(columns)].to_csv(path, index=False)
    return path


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "mydata"
    root.mkdir()
    write_csv(root / "labels.csv", build_folder(root))
    return root


def load(root: Path, **settings: Optional[str]) -> pd.DataFrame:
    return get_dataset("custom", folder=CustomFolder.from_config({"root": str(root), **settings})).load(root)


# ------------------------------------------------------------------------------------------ the labels CSV
def test_labels_with_clothes_ids(folder):
    frame = load(folder, labels="labels.csv")
    assert list(frame.columns) == ["path", "relpath", "split", "pid", "camid", "clothes_id", "outfit"]
    counts = frame.groupby("split").size().to_dict()
    assert counts == {"train": 24, "query": 6, "gallery": 6}
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in frame["path"])
    # one clothes id per (split group, pid, outfit): query and gallery share one, train is its own group
    q = frame[(frame["split"] == "query") & (frame["pid"] == 100)].iloc[0]
    g = frame[(frame["split"] == "gallery") & (frame["pid"] == 100)].set_index("outfit")
    assert q["clothes_id"] == g.loc[0, "clothes_id"] != g.loc[1, "clothes_id"]
    assert frame["clothes_id"].nunique() == 6 * 2 + 3 * 2
    assert frame.attrs["clothes_ids"] == "given"


def test_labels_without_clothes_ids_one_outfit_per_person_and_group(folder):
    write_csv(folder / "labels.csv", build_folder(folder), columns=("path", "pid", "camid"))
    frame = load(folder, labels=str(folder / "labels.csv"))  # an absolute path works as well
    assert "outfit" not in frame.columns
    per = frame.assign(group=frame["split"].eq("train")).groupby(["group", "pid"])["clothes_id"].nunique()
    assert (per == 1).all() and frame["clothes_id"].nunique() == 6 + 3


def test_unlisted_images_are_left_out_and_logged(folder, caplog):
    rows = build_folder(folder)
    write_csv(folder / "labels.csv", [r for r in rows if r["path"] != "train/0000_c0_o0_0.jpg"])
    frame = load(folder, labels="labels.csv")
    assert len(frame) == len(rows) - 1
    assert "1 image(s)" in caplog.text and "train/0000_c0_o0_0.jpg" in caplog.text


def _bad_csv(folder: Path, text: str) -> str:
    (folder / "labels.csv").write_text(text)
    with pytest.raises(DatasetError) as err:
        load(folder, labels="labels.csv")
    msg = str(err.value)
    assert "\n" not in msg
    return msg


GOOD = "train/0000_c0_o0_0.jpg,0,0,0\n"


@pytest.mark.parametrize("text,line,column,problem", [
    ("path,pid,clothes_id\n" + GOOD, 1, "camid", "missing (the header is path,pid,clothes_id)"),
    ("path,pid,camid,clothes,clothes_id\n" + GOOD, 1, "clothes", "unknown column"),
    ("path,pid,camid,clothes_id\n" + GOOD + "train/0000_c1_o1_0.jpg,-3,1,1\n", 3, "pid", "'-3' is not an id"),
    ("path,pid,camid,clothes_id\n" + GOOD + "train/0000_c1_o1_0.jpg,0,c1,1\n", 3, "camid", "'c1' is not an id"),
    ("path,pid,camid,clothes_id\n" + GOOD + "train/0000_c1_o1_0.jpg,0,1,\n", 3, "clothes_id", "'' is not an id"),
    ("path,pid,camid,clothes_id\n" + GOOD + "train/nothere.jpg,0,1,1\n", 3, "path", "does not exist"),
    ("path,pid,camid,clothes_id\n" + GOOD + "labels.csv,0,1,1\n", 3, "path", "is in no split"),
    ("path,pid,camid,clothes_id\n" + GOOD + "test/0000_c1_o1_0.jpg,0,1,1\n", 3, "path", "is in no split"),
    ("path,pid,camid,clothes_id\n" + GOOD + "../mydata/train/0000_c1_o1_0.jpg,0,1,1\n", 3, "path",
     "not a relative path inside the dataset root"),
    ("path,pid,camid,clothes_id\n" + GOOD + "\n" + GOOD, 4, "path", "listed on line 2 already"),
    ("path,pid,camid,clothes_id\n" + GOOD + "train/0000_c1_o1_0.jpg,0,1\n", 3, "clothes_id", "3 cells"),
])
def test_each_bad_row_is_one_line_naming_file_row_and_column(folder, text, line, column, problem):
    msg = _bad_csv(folder, text)
    assert msg.startswith(f"{folder / 'labels.csv'}: line {line}, column {column!r}: "), msg
    assert problem in msg and "; " in msg  # the problem, then the fix


def test_missing_labels_file_names_it(folder):
    with pytest.raises(DatasetError, match=r"nothere\.csv: labels CSV not found; fix data\.custom\.labels"):
        load(folder, labels="nothere.csv")


def test_an_empty_split_and_a_missing_split_folder_are_named(folder):
    rows = [r for r in build_folder(folder) if not str(r["path"]).startswith("query/")]
    write_csv(folder / "labels.csv", rows)
    with pytest.raises(DatasetError, match=r"split 'query' has no images \(labels .*labels\.csv\)"):
        load(folder, labels="labels.csv")
    shutil.rmtree(folder / "gallery")
    with pytest.raises(DatasetError, match=r"lacks gallery/; put the images in train/, query/ and gallery/"):
        load(folder, labels="labels.csv")


# ------------------------------------------------------------------------------------------ the pattern
def test_pattern_with_and_without_clothes_ids(folder):
    with_clothes = load(folder, pattern=WITH_CLOTHES)
    from_csv = load(folder, labels="labels.csv")
    pd.testing.assert_frame_equal(with_clothes.drop(columns="path").reset_index(drop=True),
                                  from_csv.drop(columns="path").reset_index(drop=True), check_dtype=False)
    market = load(folder, pattern=MARKET)
    assert "outfit" not in market.columns and len(market) == len(from_csv)


def test_pattern_walks_person_folders(tmp_path):
    root = tmp_path / "nested"
    for split in ("train", "query", "gallery"):
        (root / split / "0007").mkdir(parents=True)
        Image.new("RGB", (16, 32)).save(root / split / "0007" / "0007_c1_x.jpg")
    frame = load(root, pattern=MARKET)
    assert sorted(frame["relpath"]) == ["gallery/0007/0007_c1_x.jpg", "query/0007/0007_c1_x.jpg",
                                        "train/0007/0007_c1_x.jpg"]


def test_a_file_the_pattern_does_not_match_is_named(folder):
    Image.new("RGB", (16, 32)).save(folder / "gallery" / "junk.jpg")
    with pytest.raises(DatasetError) as err:
        load(folder, pattern=MARKET)
    assert str(err.value).startswith(f"{folder / 'gallery' / 'junk.jpg'}: the file name does not match "
                                     f"data.custom.pattern")


def test_a_group_that_matches_no_integer_is_named(folder):
    with pytest.raises(DatasetError, match=r"0000_c0_o0_0\.jpg: group 'pid' of data\.custom\.pattern matched "
                                           r"'0000_c0_o0', not an id"):
        load(folder, pattern=r"(?P<pid>.+)_(?P<camid>\d+)\.jpg")


@pytest.mark.parametrize("settings,message", [
    ({"labels": "labels.csv", "pattern": MARKET}, "set exactly one of labels .* both are set"),
    ({}, "set exactly one of labels .* neither is set"),
    ({"pattern": r"(?P<pid>\d+)_c\d+"}, "lacks the named group\\(s\\) camid"),
    ({"pattern": r"(?P<pid>\d+)_c(?P<cam>\d+)"}, "lacks the named group\\(s\\) camid"),
    ({"pattern": r"(?P<pid>\d+)_c(?P<camid>\d+)(?P<day>\d)"}, "names the group\\(s\\) day"),
    ({"pattern": r"(?P<pid>\d+"}, "is not a regular expression"),
])
def test_settings_that_do_not_hold_together(settings, message):
    with pytest.raises(ConfigError, match=message):
        CustomFolder.from_config({"root": "somewhere", "labels": None, "pattern": None, **settings})


def test_the_plan_parses_data_custom_once():
    from maskcl.config import validate_config
    from maskcl.plan import build_plan

    cfg = yaml.safe_load(TINY.read_text())
    cfg["datasets"] = ["custom"]
    cfg["masks"] = {"sources": ["schp"], "train_source": "schp"}
    cfg["data"]["custom"] = {"root": "/data/mine", "pattern": MARKET}
    validate_config(cfg)
    plan = build_plan(cfg)
    assert plan.folders["custom"] == CustomFolder(root="/data/mine", pattern=MARKET)
    cfg["data"]["custom"]["labels"] = "labels.csv"
    with pytest.raises(ConfigError, match=r"^data\.custom: set exactly one of labels"):
        build_plan(cfg)


# ------------------------------------------------------------------------------------------ protocols
def _features(frame: pd.DataFrame) -> np.ndarray:
    """A feature per row that puts each person's images together (and the gallery's outfit-0 image first)."""
    rng = np.random.default_rng(0)
    centres = {pid: rng.normal(size=16) for pid in frame["pid"].unique()}
    return np.stack([centres[p] + 0.01 * rng.normal(size=16) for p in frame["pid"]])


def test_protocols_offered_with_and_without_clothes_ids(folder):
    from maskcl.evaluation.protocols import list_protocols, run_protocols

    with_clothes = load(folder, labels="labels.csv")
    assert [p.name for p in list_protocols("custom", with_clothes)] == ["general", "cc"]
    res = run_protocols("custom", with_clothes, _features(with_clothes))
    assert list(res) == ["general", "cc"]
    # cc: the same-clothes gallery image is junk, so each query has one good match instead of two
    assert res["general"]["num_valid_queries"] == res["cc"]["num_valid_queries"] == 6
    assert res["general"]["mAP"] == pytest.approx(1.0) and res["cc"]["mAP"] == pytest.approx(1.0)

    write_csv(folder / "labels.csv", build_folder(folder), columns=("path", "pid", "camid"))
    without = load(folder, labels="labels.csv")
    assert [p.name for p in list_protocols("custom", without)] == ["general"]
    assert list(run_protocols("custom", without, _features(without))) == ["general"]
    with pytest.raises(EvaluationError, match=r"custom/cc needs the manifest column 'outfit'"):
        run_protocols("custom", without, _features(without), protocols=["cc"])


# ------------------------------------------------------------------------------------------ the download stage
def test_prepare_dataset_reads_the_folder_in_place(folder, tmp_path, monkeypatch):
    from maskcl.datasets import dataset_splits
    from maskcl.download import prepare_dataset
    from maskcl.manifest import read_dataset_info, read_manifest

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    out = work / "results" / "custom"
    prepare_dataset("custom", None, None, "resources/datasets", "resources/downloads", True, None,
                    out / "manifest.csv", out / "stats.csv", out / "dataset.json", progress=False,
                    folder={"root": str(folder), "labels": "labels.csv", "pattern": None})
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before  # nothing written there
    assert not (work / "resources").exists()  # nothing copied
    stored = pd.read_csv(out / "manifest.csv")
    assert all(Path(p).is_absolute() and p.startswith(str(folder)) for p in stored["path"])
    frame = read_manifest(out / "manifest.csv", splits=dataset_splits("custom"))
    assert "outfit" in frame.columns and len(frame) == 36
    info = read_dataset_info(out / "dataset.json")
    assert info["source_kind"] == "directory" and info["attrs"]["clothes_ids"] == "given"


def test_a_bad_row_stops_the_download_job_with_one_error_line(folder, tmp_path, job):
    from maskcl.download import prepare_dataset

    (folder / "labels.csv").write_text("path,pid,camid\ntrain/0000_c0_o0_0.jpg,zero,0\n")
    out = tmp_path / "results" / "custom"

    def main(_smk):
        prepare_dataset("custom", None, None, tmp_path / "d", tmp_path / "c", False, None, out / "manifest.csv",
                        out / "stats.csv", out / "dataset.json", progress=False,
                        folder={"root": str(folder), "labels": "labels.csv", "pattern": None})

    line = job(main)
    assert line.startswith(f"{folder / 'labels.csv'}: line 2, column 'pid': 'zero' is not an id")
    assert not out.exists()


# ------------------------------------------------------------------------------------------ the whole DAG
def _snakemake(workdir: Path, *args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "2", "--workflow-profile",
           str(ROOT / "profiles" / "default"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def _workdir(tmp_path: Path, custom: Dict[str, object]) -> Path:
    """A working folder whose config runs MaskCL on ``custom``, masks from SCHP with a random checkpoint."""
    import torch

    from maskcl.masks.checkpoint import random_state_dict

    work = tmp_path / "wd"
    work.mkdir()
    torch.save({"state_dict": random_state_dict(20, seed=0), "cycle_n": 3}, tmp_path / "lip.pth")
    cfg = yaml.safe_load(TINY.read_text())
    cfg["datasets"] = ["custom"]
    cfg["data"] = {"custom": custom}
    cfg["masks"] = {"sources": ["schp"], "train_source": "schp", "mode": "silhouette",
                    "schp": {"source": str(tmp_path / "lip.pth"), "device": "cpu"}}
    cfg["experiments"] = {"maskcl": {"method": "maskcl"}}
    cfg["train"].update(num_instances=2, batch_size=8, min_samples=2)
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    return work


@pytest.mark.slow
def test_the_whole_dag_runs_on_a_folder_built_here(tmp_path):
    folder = tmp_path / "mydata"
    folder.mkdir()
    # small: SCHP parses every image at 473x473 (seconds each on a CPU)
    write_csv(folder / "labels.csv", build_folder(folder, train_ids=4, test_ids=2))
    work = _workdir(tmp_path, {"root": str(folder), "labels": "labels.csv"})
    proc = _snakemake(work)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    manifest = pd.read_csv(work / "results/custom/manifest.csv")
    index = pd.read_csv(work / "results/custom/masks/schp/index.csv")
    assert sorted(index["relpath"]) == sorted(manifest["relpath"])
    run = work / "results/custom/runs/maskcl/schp-silhouette/seed0"
    for f in ("model.pt", "train_log.csv", "metrics.json", "ranks.npz"):
        assert (run / f).is_file(), f
    doc = json.loads((run / "metrics.json").read_text())
    assert doc["dataset"] == "custom" and doc["headline_protocol"] == "general"
    assert list(doc["protocols"]) == ["general", "cc"]
    md = (work / "results/tables/results.md").read_text()
    assert "Own dataset" in md and "Protocol `general` (headline)" in md and "Protocol `cc`" in md
    # the gallery (4 images) is smaller than tables.topk_grid (10): the grid shows all of it, not an error
    grid = pd.read_csv(work / "results/figures/retrieval/custom/maskcl/schp-silhouette/seed0/general.csv")
    assert doc["protocols"]["general"]["num_gallery"] == 4 and grid["position"].max() == 4
    # a rerun has nothing to do; editing the labels rebuilds from the manifest on
    again = _snakemake(work, "-n", timeout=300)
    assert "Nothing to be done" in again.stdout + again.stderr
    write_csv(folder / "labels.csv", build_folder(folder, train_ids=4, test_ids=2), columns=("path", "pid", "camid"))
    dry = _snakemake(work, "-n", timeout=300)
    assert dry.returncode == 0 and "download" in dry.stdout


def test_a_config_error_in_data_custom_is_one_line_before_anything_runs(tmp_path):
    work = _workdir(tmp_path, {"root": str(tmp_path), "labels": "labels.csv", "pattern": MARKET})
    proc = _snakemake(work, "-n", timeout=300)
    out = proc.stdout + proc.stderr
    errors = [line for line in out.splitlines() if line.startswith("ERROR: ")]
    assert proc.returncode != 0 and len(errors) == 1, out
    assert "data.custom: set exactly one of labels" in errors[0]
