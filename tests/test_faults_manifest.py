"""Fault injection: the manifest and the mask index are checked wherever they are read.

Every stage that reads ``manifest.csv`` (training, the warm-up, evaluation, parse, mask quality, the
tables) goes through ``maskcl.manifest.read_manifest``, and every reader of ``index.csv`` through
``maskcl.masks.index.read_mask_index``. Each case breaks one file of a valid workspace the way a hand
edit or a bad merge would and checks, at the stage's real entry point, that the job stops with exactly
one ``ERROR:`` line naming the file, the line and the column and the command that rebuilds it (never
a traceback labelled as a bug), and leaves no output under its final name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd
import pytest

import test_faults_upstream as upstream

from maskcl.errors import DatasetError, EvaluationError
from maskcl.manifest import check_manifest_frame, read_manifest

# the valid workspace of the upstream faults (manifest, mask index, one evaluated run), a fresh copy per test
pristine, ws = upstream.pristine, upstream.ws

TRAIN = dict(method="clustercontrast", arch="resnet18", pretrained="none", height=32, width=16, epochs=1, iters=1,
             batch_size=4, num_instances=2, workers=0, device="cpu")


def _fix(path) -> str:
    return f"rerun the download rule: snakemake --cores all --forcerun {path}"


def _edit(path: str, change: Callable[[pd.DataFrame], pd.DataFrame]) -> pd.DataFrame:
    frame = pd.read_csv(path)
    out = change(frame.copy())
    out.to_csv(path, index=False)
    return frame


def _evaluate(ws, tmp_path):
    from maskcl.evaluation.stage import evaluate_checkpoint

    out = tmp_path / "eval"
    return lambda smk: evaluate_checkpoint("synthcc", ws["manifests"]["synthcc"], tmp_path / "model.pt",
                                           out / "metrics.json", out / "ranks.npz", settings={"device": "cpu"})


def _train(ws, tmp_path):
    from maskcl.training.stage import train_stage

    out = tmp_path / "run"
    return lambda smk: train_stage(ws["manifests"]["synthcc"], None, "silhouette", TRAIN, 0, str(out / "model.pt"),
                                   str(out / "train_log.csv"), str(out / "state"), progress=False, dataset="synthcc")


def _nothing_written(tmp_path: Path) -> None:
    """No output of the stage (evaluation, training, warm-up) under any name."""
    left = [p for d in ("eval", "run", "w") for p in (tmp_path / d).rglob("*") if p.is_file()]
    assert not left, left


# ------------------------------------------------------------------------------ duplicated rows, splits

def test_a_duplicated_row_is_refused_before_its_queries_are_scored_twice(ws, job, tmp_path):
    path = ws["manifests"]["synthcc"]
    frame = _edit(path, lambda f: pd.concat([f, f[f["split"] == "query"].iloc[:1]]))
    q = int((frame["split"] == "query").to_numpy().nonzero()[0][0])
    line = job(_evaluate(ws, tmp_path))
    assert line == (f"{path}: manifest line {len(frame) + 2}, column 'path': repeats line {q + 2} "
                    f"({frame['path'][q]}): a listed image would be used twice (a query scored twice); {_fix(path)}")
    _nothing_written(tmp_path)


def test_an_image_in_two_splits_is_refused(ws, job, tmp_path):
    path = ws["manifests"]["synthcc"]

    def move(f):
        extra = f[f["split"] == "query"].iloc[:1].assign(split="gallery")
        return pd.concat([f, extra]).sort_values(["split", "relpath"], kind="stable").reset_index(drop=True)
    _edit(path, move)
    line = job(_evaluate(ws, tmp_path))
    assert line.startswith(f"{path}: manifest line ") and ", column 'path': " in line
    assert "is in split 'query' but line" in line and "has it in split 'gallery': an image belongs to one split" \
        in line
    assert line.endswith(_fix(path))
    _nothing_written(tmp_path)


def test_an_unknown_split_name_is_refused_with_the_dataset_splits(ws, job, tmp_path):
    path = ws["manifests"]["synthcc"]
    frame = _edit(path, lambda f: f.assign(split=f["split"].replace("gallery", "galery")))
    i = int((frame["split"] == "gallery").to_numpy().nonzero()[0][0])
    line = job(_evaluate(ws, tmp_path))
    assert line == (f"{path}: manifest line {i + 2}, column 'split': unknown split 'galery' (this dataset's "
                    f"splits: train, query, gallery); {_fix(path)}")
    _nothing_written(tmp_path)


# ------------------------------------------------------------------------------ ids and types

@pytest.mark.parametrize("column, value, says", [
    ("pid", "7a", "'7a' is not an id (a non-negative integer)"),
    ("clothes_id", 1.5, "1.5 is not an id (a non-negative integer)"),
    ("camid", -1, "-1 is not an id (a non-negative integer)"),
    ("pid", None, "empty"),
], ids=["letters", "fraction", "negative", "empty"])
def test_a_bad_id_is_one_line_in_training_not_a_bug(ws, job, tmp_path, column, value, says):
    path = ws["manifests"]["synthcc"]
    _edit(path, lambda f: f.assign(**{column: f[column].astype(object).where(f.index != 3, value)}))
    line = job(_train(ws, tmp_path))
    assert line == f"{path}: manifest line 5, column {column!r}: {says}; {_fix(path)}"
    _nothing_written(tmp_path)


def test_a_bad_id_is_one_line_in_the_warm_up_stage(ws, job, tmp_path):
    from maskcl.training.stage import pretrain_stage

    path = ws["manifests"]["synthcc"]
    _edit(path, lambda f: f.assign(clothes_id=f["clothes_id"].astype(object).where(f.index != 0, "x")))
    line = job(lambda smk: pretrain_stage(path, {"epochs": 1}, 0, str(tmp_path / "w" / "backbone.pt"),
                                          progress=False, dataset="synthcc"))
    assert line == f"{path}: manifest line 2, column 'clothes_id': 'x' is not an id (a non-negative integer); " \
                   f"{_fix(path)}"
    _nothing_written(tmp_path)


def test_cloth_changing_must_be_a_boolean(ws, job, tmp_path):
    path = ws["manifests"]["synthcc"]
    _edit(path, lambda f: f.assign(cloth_changing=f["cloth_changing"].astype(object).where(f.index != 2, "maybe")))
    line = job(_evaluate(ws, tmp_path))
    assert line == f"{path}: manifest line 4, column 'cloth_changing': 'maybe' is not True or False; {_fix(path)}"


def test_ids_and_flags_come_back_typed(ws):
    frame = read_manifest(ws["manifests"]["synthcc"], splits=("train", "query", "gallery"))
    assert all(frame[c].dtype == "int64" for c in ("pid", "camid", "clothes_id", "outfit"))
    assert frame["cloth_changing"].dtype == bool


# ------------------------------------------------------------------------------ columns and paths

def test_a_missing_column_stops_the_tables_stage(ws, job):
    path = ws["manifests"]["synthcc"]
    _edit(path, lambda f: f.drop(columns=["camid"]))
    line = job(lambda smk: upstream.report(ws))
    assert line == f"{path}: manifest lacks column(s) camid; {_fix(path)}"
    upstream.no_outputs(ws)


def test_a_path_that_is_not_root_plus_relpath_is_refused(ws, job):
    path = ws["manifests"]["synthcc"]
    frame = _edit(path, lambda f: f.assign(relpath=f["relpath"].where(f.index != 4, "train/other.png")))
    line = job(lambda smk: upstream.report(ws))
    assert line == (f"{path}: manifest line 6, column 'path': {frame['path'][4]} does not end with its relpath "
                    f"train/other.png (every path is <dataset root>/<relpath>); {_fix(path)}")
    upstream.no_outputs(ws)


def test_two_dataset_roots_in_one_manifest_are_refused(ws, tmp_path):
    path = ws["manifests"]["synthcc"]
    frame = _edit(path, lambda f: f.assign(path=f["path"].where(f.index != 3, str(tmp_path / "elsewhere") + "/" +
                                                                  f["relpath"])))
    with pytest.raises(DatasetError) as e:
        read_manifest(path, splits=None)
    root = frame["path"][0][: -len(frame["relpath"][0]) - 1]
    assert str(e.value) == (f"{path}: manifest line 5, column 'path': {tmp_path / 'elsewhere'}/{frame['relpath'][3]} "
                            f"lies in the dataset root {tmp_path / 'elsewhere'}, but line 2's image in {root}: a "
                            f"manifest holds one dataset; {_fix(path)}")


# ------------------------------------------------------------------------------ parse and mask quality

def test_parse_refuses_a_duplicated_row_before_writing_a_mask(ws, tmp_path):
    from maskcl.masks import parse_dataset

    path = ws["manifests"]["synthcc"]
    frame = _edit(path, lambda f: pd.concat([f, f.iloc[[0]]]))
    out = tmp_path / "masks" / "groundtruth"
    with pytest.raises(DatasetError) as e:
        parse_dataset(path, out, "groundtruth", progress=False, splits=("train", "query", "gallery"))
    assert str(e.value).startswith(f"{path}: manifest line {len(frame) + 2}, column 'path': repeats line 2 ")
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))


def test_mask_quality_checks_its_manifest(ws, tmp_path):
    from maskcl.masks import write_quality_report

    path = ws["manifests"]["synthcc"]
    _edit(path, lambda f: f.assign(pid=f["pid"].astype(object).where(f.index != 1, "p1")))
    index = ws["mask_indexes"][("synthcc", "groundtruth")]
    with pytest.raises(DatasetError) as e:
        write_quality_report(path, {"groundtruth": index}, tmp_path / "q.csv", tmp_path / "q.md", dataset="synthcc",
                             splits=("train", "query", "gallery"))
    assert str(e.value) == f"{path}: manifest line 3, column 'pid': 'p1' is not an id (a non-negative integer); " \
                           f"{_fix(path)}"
    assert not (tmp_path / "q.csv").exists() and not (tmp_path / "q.md").exists()


def test_a_frame_in_memory_gets_the_same_checks(ws):
    frame = pd.read_csv(ws["manifests"]["synthcc"])
    with pytest.raises(EvaluationError) as e:
        check_manifest_frame(pd.concat([frame, frame.iloc[[2]]]), splits=None, error=EvaluationError)
    assert str(e.value).startswith(f"manifest line {len(frame) + 2}, column 'path': repeats line 4 ")


# ------------------------------------------------------------------------------ mask index

def test_two_images_sharing_one_mask_file_are_refused(ws, job):
    index = ws["mask_indexes"][("synthcc", "groundtruth")]
    frame = _edit(index, lambda f: f.assign(silhouette=f["silhouette"].where(f.index != 5, f["silhouette"][2])))
    line = job(lambda smk: upstream.report(ws))
    assert line == (f"{index}: mask index line 7, column 'silhouette': {frame['silhouette'][2]} is also another "
                    f"image's mask (each image has its own); rerun the parse rule: snakemake --cores all --forcerun "
                    f"{index}")
    upstream.no_outputs(ws)
