"""Fault injection: what a stage reads from the stages before it is checked before it is used.

Each case builds a small, valid workspace (one SynthCC-like dataset, a mask index with masks, one
evaluated run with metrics.json, ranks.npz and train_log.csv written by the real writers), breaks
one file the way a killed copy, a bad disk or a hand edit would, and checks that the reading stage
stops with one line naming the file, what is wrong and the command that rebuilds it, and that it
left no output with a final name.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Dict

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import fake_cc_manifest

from maskcl.errors import EvaluationError, MaskCLError, ReportingError
from maskcl.evaluation import EvalSettings, run_protocols, write_metrics_json, write_ranks
from maskcl.reporting import build_report
from maskcl.training.settings import TrainSettings

RUN = ("synthcc", "maskcl", "groundtruth-silhouette", 0)
LOG_COLUMNS = ["epoch", "lr", "loss", "proto_rgb", "clusters", "outliers", "singletons", "nmi_id", "ari_id"]

# ------------------------------------------------------------------------------------------ builders


def _picture(path: Path, pid: int, outfit: int, k: int, size=(16, 32)) -> None:
    w, h = size
    rng = np.random.default_rng([pid, outfit, k])
    colour = np.array([(pid * 53) % 256, (outfit * 97 + 30) % 256, (k * 31) % 256], np.float64)
    img = np.clip(colour + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def _manifest(root: Path) -> pd.DataFrame:
    """Two training ids; four test ids (1-3 change clothes), two queries and four gallery images each."""
    return fake_cc_manifest(root, _picture, train_ids=(100, 101), train_views=[(k % 2, 0) for k in range(3)],
                            test_ids=range(1, 5), changing=lambda pid: pid <= 3,
                            gallery_views=[(0, 0), (1, 0), (0, 1), (1, 1)])


def write_mask_index(out: Path, manifest: pd.DataFrame) -> Path:
    """Masks and ``index.csv`` as the parse stage lays them out (sizes recorded)."""
    rows = []
    for rel, split, img in zip(manifest["relpath"], manifest["split"], manifest["path"]):
        with Image.open(img) as im:
            w, h = im.size
        sil = np.zeros((h, w), np.uint8)
        sil[2:h - 2, 3:w - 3] = 255
        parts = np.zeros((h, w, 3), np.uint8)
        parts[2:h // 2, 3:w - 3] = (128, 0, 0)
        parts[h // 2:h - 2, 3:w - 3] = (0, 128, 0)
        paths = {k: out / k / rel for k in ("labels", "silhouette", "parts")}
        for p in paths.values():
            p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(sil).save(paths["silhouette"])
        Image.fromarray(parts).save(paths["parts"])
        Image.fromarray((sil > 0).astype(np.uint8)).save(paths["labels"])
        rows.append({"relpath": rel, "split": split, "label": str(paths["labels"]),
                     "silhouette": str(paths["silhouette"]), "parts": str(paths["parts"]), "height": h, "width": w,
                     "fg_fraction": round(float((sil > 0).mean()), 6)})
    pd.DataFrame(rows).to_csv(out / "index.csv", index=False)
    return out / "index.csv"


def build_workspace(ws: Path) -> Dict[str, Any]:
    """A valid workspace; returns ``build_report`` keyword arguments (outputs under ``ws/out``)."""
    d, exp, masks, seed = RUN
    manifest = _manifest(ws / "data" / d)
    res_dir = ws / "results" / d
    res_dir.mkdir(parents=True)
    manifest.to_csv(res_dir / "manifest.csv", index=False)
    index = write_mask_index(res_dir / "masks" / "groundtruth", manifest)
    run = res_dir / "runs" / exp / masks / f"seed{seed}"
    run.mkdir(parents=True)
    rng = np.random.default_rng(3)
    ids = {p: rng.standard_normal(8) for p in sorted(manifest["pid"].unique())}
    feats = np.stack([ids[p] for p in manifest["pid"]]) + 0.7 * rng.standard_normal((len(manifest), 8))
    results = run_protocols(d, manifest, feats.astype(np.float32),
                            settings=EvalSettings.from_dict({"seed": 0, "topk": 6}))
    train = TrainSettings.from_dict({"method": "maskcl"}).to_dict()
    prov = {"device": "cpu", "flip": False,
            "config": {"run": {"dataset": d, "experiment": exp, "method": "maskcl", "masks": masks, "seed": seed,
                               "mask_source": "groundtruth", "mask_mode": "silhouette"}, "train": train}}
    write_metrics_json(run / "metrics.json", results, prov, settings={"metric": "euclidean", "rerank": False})
    write_ranks(run / "ranks.npz", results)
    log_rows = [{"epoch": e, "lr": 3.5e-4, "loss": 3.0 / e, "proto_rgb": 2.0 / e, "clusters": 8 - e, "outliers": 1,
                 "singletons": 0, "nmi_id": 0.2 * e, "ari_id": 0.1 * e} for e in (1, 2, 3)]
    pd.DataFrame(log_rows, columns=LOG_COLUMNS).to_csv(run / "train_log.csv", index=False)
    return {"metrics": [str(run / "metrics.json")], "ranks": [str(run / "ranks.npz")],
            "train_logs": [str(run / "train_log.csv")], "manifests": {d: str(res_dir / "manifest.csv")},
            "mask_indexes": {(d, "groundtruth"): str(index)}, "tables_dir": ws / "out" / "tables",
            "figures_dir": ws / "out" / "figures", "topk_grid": 4, "num_grid_queries": 2, "overlay_per_split": 1}


def report(kw: Dict[str, Any]):
    kw = dict(kw)
    return build_report(kw.pop("metrics"), **kw)


def no_outputs(kw: Dict[str, Any]) -> None:
    """Neither a table nor a figure was left with its final name."""
    for key in ("tables_dir", "figures_dir"):
        left = [p for p in Path(kw[key]).rglob("*") if p.is_file()] if Path(kw[key]).exists() else []
        assert not left, f"{key} keeps {left[:3]}"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("faults_ws")
    build_workspace(ws)
    return ws


@pytest.fixture
def ws(pristine, tmp_path) -> Dict[str, Any]:
    """A fresh copy of the valid workspace for one case to break (absolute paths rewritten)."""
    import shutil

    dst = tmp_path / "ws"
    shutil.copytree(pristine, dst)
    for csv in list(dst.rglob("*.csv")):
        text = csv.read_text()
        csv.write_text(text.replace(str(pristine), str(dst)))
    d, exp, masks, seed = RUN
    run = dst / "results" / d / "runs" / exp / masks / f"seed{seed}"
    res = dst / "results" / d
    return {"metrics": [str(run / "metrics.json")], "ranks": [str(run / "ranks.npz")],
            "train_logs": [str(run / "train_log.csv")], "manifests": {d: str(res / "manifest.csv")},
            "mask_indexes": {(d, "groundtruth"): str(res / "masks" / "groundtruth" / "index.csv")},
            "tables_dir": dst / "out" / "tables", "figures_dir": dst / "out" / "figures", "topk_grid": 4,
            "num_grid_queries": 2, "overlay_per_split": 1}


def _fix(path: str, rule: str) -> str:
    return f"rerun the {rule} rule: snakemake --cores all --forcerun {path}"


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# ------------------------------------------------------------------------------------- the valid case

def test_the_valid_workspace_reports(ws):
    out = report(ws)
    assert (Path(ws["tables_dir"]) / "results.md").is_file()
    assert {k for k, v in out.figures.items() if v} >= {"cmc", "retrieval", "training", "masks"}


# ----------------------------------------------------------------------------------------- metrics.json

def _edit_metrics(ws: Dict[str, Any], edit: Callable[[dict], None]) -> str:
    path = ws["metrics"][0]
    doc = json.loads(Path(path).read_text())
    edit(doc["protocols"])
    Path(path).write_text(json.dumps(doc))          # json.dumps writes NaN for a float nan
    return path


def _set(proto: str, key: str, value: Any) -> Callable[[dict], None]:
    def edit(protocols: dict) -> None:
        protocols[proto][key] = value
    return edit


def _drop(proto: str, key: str) -> Callable[[dict], None]:
    return lambda protocols: protocols[proto].pop(key)


def _cmc_dip(protocols: dict) -> None:
    cmc = protocols["general"]["cmc"]
    cmc[3] = cmc[2] - 0.2


@pytest.mark.parametrize("edit, what", [
    (_set("cc", "mAP", 1.7), "metric cc.mAP = 1.7 is outside [0, 1]"),
    (_set("general", "rank1", -0.25), "metric general.rank1 = -0.25 is outside [0, 1]"),
    (_set("cc", "mINP", math.nan), "metric cc.mINP = nan is not finite"),
    (_set("cc", "rank5", "0.8"), "metric cc.rank5 = '0.8' is not a number"),
    (_set("general", "mAP", None), "metric general.mAP is null (undefined) but num_valid_queries is"),
    (_drop("cc", "rank10"), "metric cc.rank10 is missing"),
    (_set("general", "num_valid_queries", -3), "count general.num_valid_queries = -3 is not a non-negative integer"),
    (_cmc_dip, "metric general.cmc decreases at rank 4"),
    (_set("general", "rank1", 0.0), "metric general.rank1 = 0.0 disagrees with general.cmc[0]"),
], ids=["above-1", "negative", "nan", "string", "null", "missing", "count", "cmc-dip", "rank-vs-cmc"])
def test_metrics_out_of_range_or_missing(ws, edit, what):
    path = _edit_metrics(ws, edit)
    with pytest.raises(ReportingError) as e:
        report(ws)
    msg = _one_line(e)
    assert msg.startswith(f"{path}: {what}") and msg.endswith(f"; {_fix(path, 'evaluate')}")
    no_outputs(ws)


def test_truncated_metrics_file_through_the_job(ws, job):
    path = Path(ws["metrics"][0])
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    line = job(lambda smk: report(ws))
    assert line.startswith(f"{path}: not valid JSON (") and "truncated or garbled" in line
    assert line.endswith(_fix(str(path), "evaluate"))
    no_outputs(ws)


# -------------------------------------------------------------------------------------------- ranks.npz

def test_truncated_ranks_through_the_job(ws, job):
    path = Path(ws["ranks"][0])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    line = job(lambda smk: report(ws))
    assert line.startswith(f"{path}: not a whole ranks.npz written by maskcl.evaluation (")
    assert line.endswith(f"truncated or garbled); {_fix(str(path), 'evaluate')}")
    no_outputs(ws)


def _rewrite_ranks(path: str, edit: Callable[[dict], None]) -> None:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    edit(arrays)
    np.savez_compressed(path, **arrays)


def _headline(arrays: dict) -> str:
    return str(np.atleast_1d(arrays["protocols"])[0])


def _flags(arrays):
    arrays[f"{_headline(arrays)}.topk_flags"][0, 0] = 7


def _rows(arrays):
    arrays[f"{_headline(arrays)}.topk_rows"][1, 2] = 999


def _ap(arrays):
    arrays[f"{_headline(arrays)}.ap"][0] = 1.5


def _shape(arrays):
    key = f"{_headline(arrays)}.first_match"
    arrays[key] = arrays[key][:-1]


def _lost(arrays):
    del arrays[f"{_headline(arrays)}.ap"]


@pytest.mark.parametrize("edit, what", [
    (_flags, "topk_flags has code 7"), (_rows, "refers to manifest row 999 but the manifest has"),
    (_ap, "ap has 1.5, outside [0, 1]"), (_shape, "first_match has shape"), (_lost, "lacks array(s) ap"),
], ids=["flag", "row", "ap", "shape", "missing"])
def test_inconsistent_ranks(ws, edit, what):
    path = ws["ranks"][0]
    _rewrite_ranks(path, edit)
    with pytest.raises(ReportingError) as e:
        report(ws)
    msg = _one_line(e)
    assert msg.startswith(f"{path}: ") and what in msg and msg.endswith(_fix(path, "evaluate"))
    no_outputs(ws)


# ---------------------------------------------------------------------------------------- train_log.csv

def _cut_mid_line(text: str) -> str:
    return text[: text.rindex(",") + 2]


def _extra_field(text: str) -> str:
    lines = text.splitlines(keepends=True)
    lines[2] = lines[2].rstrip("\n") + ",0.5\n"
    return "".join(lines)


def _garbled_value(text: str) -> str:
    lines = text.splitlines(keepends=True)
    cells = lines[2].split(",")
    cells[2] = "3.0e-x"
    lines[2] = ",".join(cells)
    return "".join(lines)


def _repeated_epoch(text: str) -> str:
    lines = text.splitlines(keepends=True)
    return "".join(lines[:3] + [lines[2]] + lines[3:])


def _negative_count(text: str) -> str:
    lines = text.splitlines(keepends=True)
    cells = lines[1].split(",")
    cells[LOG_COLUMNS.index("clusters")] = "-4"
    lines[1] = ",".join(cells)
    return "".join(lines)


@pytest.mark.parametrize("edit, what", [
    (_cut_mid_line, "training log ends in the middle of a line (truncated)"),
    (_extra_field, "line 3 of the training log has 10 field(s) but the header has 9 (truncated or garbled)"),
    (_garbled_value, "training log column 'loss' has '3.0e-x' on line 3, not a number (truncated or garbled)"),
    (_repeated_epoch, "training log line 4 is epoch 2, expected 3 (epochs run 1, 2, ... in order; garbled)"),
    (_negative_count, "training log column 'clusters' = -4 on line 2 is outside [0, inf]"),
], ids=["truncated", "ragged", "garbled", "epochs", "count"])
def test_broken_train_log(ws, edit, what):
    path = ws["train_logs"][0]
    Path(path).write_text(edit(Path(path).read_text()))
    with pytest.raises(ReportingError) as e:
        report(ws)
    assert _one_line(e) == f"{path}: {what}; {_fix(path, 'train')}"
    no_outputs(ws)


def test_binary_train_log_through_the_job(ws, job):
    path = ws["train_logs"][0]
    Path(path).write_bytes(b"epoch,loss\n1,\xff\xfe\x00\n")
    line = job(lambda smk: report(ws))
    assert line.startswith(f"{path}: training log is not text") and line.endswith(_fix(path, "train"))
    no_outputs(ws)


# ------------------------------------------------------------------------------- mask index, manifest

def test_truncated_mask_index_in_the_tables_stage(ws):
    path = ws["mask_indexes"][("synthcc", "groundtruth")]
    text = Path(path).read_text()
    Path(path).write_text(text[: len(text) - 7])
    with pytest.raises(ReportingError) as e:
        report(ws)
    assert _one_line(e) == f"{path}: mask index ends in the middle of a line (truncated); {_fix(path, 'parse')}"
    no_outputs(ws)


@pytest.mark.parametrize("edit, what", [
    (lambda f: f.drop(columns=["parts"]), "mask index lacks column(s) parts"),
    (lambda f: pd.concat([f, f.iloc[:1]]), "mask index lists"),
    (lambda f: f.assign(height=f["height"].astype(object).where(f.index != 1, "tall")),
     "mask index column 'height' has 'tall' on line 3, not a number"),
    (lambda f: f.assign(fg_fraction=f["fg_fraction"].where(f.index != 0, 4.2)),
     "mask index column 'fg_fraction' = 4.2 on line 2 is outside [0.0, 1.0]"),
], ids=["column", "duplicate", "size", "fraction"])
def test_inconsistent_mask_index(ws, edit, what):
    path = ws["mask_indexes"][("synthcc", "groundtruth")]
    edit(pd.read_csv(path)).to_csv(path, index=False)
    with pytest.raises(ReportingError) as e:
        report(ws)
    msg = _one_line(e)
    assert msg.startswith(f"{path}: {what}") and msg.endswith(_fix(path, "parse"))
    no_outputs(ws)


def test_truncated_manifest_in_the_tables_stage(ws):
    path = ws["manifests"]["synthcc"]
    text = Path(path).read_text()
    Path(path).write_text(text[: text.rindex(",")])
    with pytest.raises(ReportingError) as e:
        report(ws)
    assert _one_line(e) == f"{path}: manifest ends in the middle of a line (truncated); {_fix(path, 'download')}"
    no_outputs(ws)


def test_a_failure_while_writing_takes_the_tables_back(ws, monkeypatch):
    import maskcl.reporting.stage as stage

    def broken(*a, **k):
        raise MaskCLError("an overlay could not be drawn")
    monkeypatch.setattr(stage, "plot_overlays", broken)
    with pytest.raises(MaskCLError, match="an overlay could not be drawn"):
        report(ws)
    no_outputs(ws)


def test_evaluate_checks_the_manifest_before_the_model(ws, job, tmp_path):
    from maskcl.evaluation.stage import evaluate_checkpoint

    path = ws["manifests"]["synthcc"]
    Path(path).write_text(Path(path).read_text().replace("\n", "\n1,2\n", 2))
    out = tmp_path / "eval"
    line = job(lambda smk: evaluate_checkpoint("synthcc", path, tmp_path / "no-model.pt", out / "metrics.json",
                                               out / "ranks.npz", settings={"device": "cpu"}))
    assert line.startswith(f"{path}: line 2 of the manifest has 2 field(s) but the header has ")
    assert line.endswith(_fix(path, "download"))
    assert not (out / "metrics.json").exists() and not (out / "ranks.npz").exists()
    with pytest.raises(EvaluationError):
        evaluate_checkpoint("synthcc", path, tmp_path / "no-model.pt", out / "m.json", out / "r.npz",
                            settings={"device": "cpu"})
