"""End to end: the whole DAG on tiny SynthCC (download → parse → train ×2 → evaluate → tables → report)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import serve_folder

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "config_tiny.yaml"

pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "2", "--workflow-profile",
           str(ROOT / "profiles" / "default"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def dag_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    shutil.copy(TINY, work / "config.yaml")
    proc = snakemake(work)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return work, proc


def test_default_target_builds_every_stage(dag_run):
    work, _ = dag_run
    runs = {"maskcl": work / "results/synthcc/runs/maskcl/groundtruth-silhouette/seed0",
            "clustercontrast": work / "results/synthcc/runs/clustercontrast/none/seed0"}
    for name, run in runs.items():
        for f in ("model.pt", "train_log.csv", "metrics.json", "ranks.npz"):
            assert (run / f).is_file(), f"{name}: {f} missing"
        doc = json.loads((run / "metrics.json").read_text())
        assert doc["dataset"] == "synthcc" and doc["headline_protocol"] == "cc"
        assert {"general", "cc", "cc_maskcl"} <= set(doc["protocols"])
        for proto in doc["protocols"].values():
            assert 0.0 <= proto["mAP"] <= 1.0
        log = pd.read_csv(run / "train_log.csv")
        assert log["epoch"].tolist() == [1, 2]
        assert {"nmi_id", "nmi_clothes", "clusters"} <= set(log.columns)
    maskcl_log = pd.read_csv(runs["maskcl"] / "train_log.csv")
    assert {"proto_rgb", "proto_mask", "crossview", "proto_fused"} <= set(maskcl_log.columns)
    # the manifest, masks and quality table exist and agree with each other
    manifest = pd.read_csv(work / "results/synthcc/manifest.csv")
    index = pd.read_csv(work / "results/synthcc/masks/groundtruth/index.csv")
    assert len(index) == len(manifest) and (index["relpath"] == manifest["relpath"]).all()
    quality = pd.read_csv(work / "results/synthcc/masks/quality.csv")
    assert quality.loc[quality["source"] == "groundtruth", "silhouette_iou"].iloc[0] == pytest.approx(1.0)


def test_tables_hold_both_methods_and_their_protocols(dag_run):
    work, _ = dag_run
    md = (work / "results/tables/results.md").read_text()
    assert "MaskCL" in md and "ClusterContrast" in md and "Protocol `cc` (headline)" in md
    csv = pd.read_csv(work / "results/tables/results.csv")
    assert {"maskcl", "clustercontrast"} <= set(csv["experiment"])
    assert (work / "results/tables/results.tex").read_text().count("\\toprule") >= 1


def test_a_trained_model_outside_the_dag(dag_run, tmp_path):
    """The default DAG's model: ``maskcl extract`` on its query and gallery images, ranked, gives the run's
    own ``general`` mAP; its model card and the tables name the training hardware (issue #28)."""
    from maskcl.cli import main as cli
    from maskcl.evaluation.protocols import run_protocols
    from maskcl.manifest import read_manifest

    work, _ = dag_run
    run = work / "results/synthcc/runs/clustercontrast/none/seed0"
    manifest = read_manifest(work / "results/synthcc/manifest.csv", splits=("train", "query", "gallery"))
    rows = manifest.index[manifest["split"].isin(["query", "gallery"])].to_numpy()
    listing = tmp_path / "images.txt"
    listing.write_text("\n".join(manifest["path"].iloc[rows]) + "\n")
    out = tmp_path / "features.npz"
    assert cli(["extract", str(run / "model.pt"), "--list", str(listing), "--out", str(out), "--device", "cpu",
                "--quiet"]) == 0
    features = np.load(out)["features"]
    ours = run_protocols("synthcc", manifest, features, feature_rows=rows, protocols=["general"])["general"]
    doc = json.loads((run / "metrics.json").read_text())
    assert ours.summary()["mAP"] == pytest.approx(doc["protocols"]["general"]["mAP"], rel=1e-6)
    # the training hardware: in model.pt, metrics.json, the model card and the tables' footnote
    training = doc["provenance"]["training"]
    assert training["device"] == "cpu" and training["train_time_s"] > 0 and training["torch_threads"] >= 1
    card = (run / "model_card.md").read_text()
    head = doc["protocols"]["cc"]
    assert "# ClusterContrast (re-impl.) on SynthCC (seed 0)" in card and "ise_lp_weight" not in card
    assert f"| `cc` | {100 * head['mAP']:.1f} | {100 * head['rank1']:.1f} |" in card
    assert f"CPU {training['cpu_model']}" in card and "| train |" in card
    md = (work / "results/tables/results.md").read_text()
    assert f"Trained on: CPU {training['cpu_model']}" in md


def test_report_renders(dag_run):
    work, _ = dag_run
    proc = snakemake(work, "--report", str(work / "report.html"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (work / "report.html").read_text(errors="replace")
    assert len(html) > 10_000 and "results.md" in html


def test_rerun_is_a_no_op(dag_run):
    work, _ = dag_run
    proc = snakemake(work, "-n", timeout=300)
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_schp_from_a_url_default_target_with_no_manual_step(tmp_path):
    """masks.sources [schp] and a reachable checkpoint URL (a server on 127.0.0.1 serving a file built
    from the exact LIP manifest): the default target fetches and verifies the checkpoint, parses,
    trains, evaluates and writes the tables; nothing is put in place by hand."""
    import hashlib

    import torch
    import yaml

    from maskcl.masks.checkpoint import random_state_dict

    served = tmp_path / "served"
    served.mkdir()
    torch.save({"state_dict": random_state_dict(20, seed=0), "cycle_n": 3}, served / "lip.pth")
    digest = hashlib.sha256((served / "lip.pth").read_bytes()).hexdigest()

    with serve_folder(served) as url:
        work = tmp_path / "wd"
        work.mkdir()
        cfg = yaml.safe_load(TINY.read_text())
        cfg["data"]["synthcc"]["overrides"] = {"n_train_ids": 4, "n_test_ids": 3}  # SCHP: ~1 image/s on a CPU
        cfg["masks"] = {"sources": ["schp"], "train_source": "schp", "mode": "silhouette",
                        "schp": {"source": f"{url}/lip.pth",
                                 "sha256": digest, "device": "cpu"}}
        cfg["experiments"] = {"maskcl": {"method": "maskcl"}}
        (work / "config.yaml").write_text(yaml.safe_dump(cfg))
        proc = snakemake(work)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    ckpt = work / "resources/checkpoints/exp-schp-201908261155-lip.pth"
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() == digest
    assert "verified (strict load" in (work / "logs/schp_checkpoint.log").read_text()
    manifest = pd.read_csv(work / "results/synthcc/manifest.csv")
    index = pd.read_csv(work / "results/synthcc/masks/schp/index.csv")
    assert sorted(index["relpath"]) == sorted(manifest["relpath"])
    run = work / "results/synthcc/runs/maskcl/schp-silhouette/seed0"
    assert json.loads((run / "metrics.json").read_text())["provenance"]["config"]["run"]["masks"] == "schp-silhouette"
    assert "schp-silhouette" in (work / "results/tables/results.md").read_text()
