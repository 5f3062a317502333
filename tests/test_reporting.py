"""Tests of maskcl.reporting: tables, published numbers, figures and the Snakemake report.

A small but realistic workspace is built once per module: two datasets (SynthCC with LTCC-like
protocols, PRCC with single-shot protocols), run folders whose metrics.json and ranks.npz come from
the real evaluator (``run_protocols`` + ``write_metrics_json`` / ``write_ranks``) on synthetic
features, training logs with each method's columns, a mask index with mask PNGs, and a contact
sheet. Every assertion compares the outputs with those source files.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import fake_cc_manifest, require

from maskcl.config import validate_config
from maskcl.errors import MaskCLError
from maskcl.evaluation import PROTOCOLS, EvalSettings, run_protocols, write_metrics_json, write_ranks
from maskcl.reporting import (ReportingError, aggregate_seeds, build_report, fmt_pct, latex_escape,
                              load_published, load_runs, per_seed_frame, protocol_short)
from maskcl.reporting.labels import PROTOCOL_SHORT
from maskcl.reporting.render import Metric, to_latex, to_markdown
from maskcl.reporting.tables import results_tables
from maskcl.training.settings import TrainSettings

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------------ fixtures

#: (dataset, experiment, masks, seeds, noise) → one run folder per seed; lower noise = better features.
RUNS = [
    ("synthcc", "maskcl", "groundtruth-silhouette", (0, 1), 0.55),
    ("synthcc", "maskcl", "groundtruth-parts", (0,), 0.7),
    ("synthcc", "maskcl_no_crossview", "groundtruth-silhouette", (0,), 0.8),
    ("synthcc", "clustercontrast", "none", (0, 1), 0.9),
    ("synthcc", "maskcl_refresh_concat", "groundtruth-silhouette", (0,), 0.75),
    ("synthcc", "supervised", "none", (0,), 0.3),
    ("synthcc", "untrained", "none", (0, 1), 1.2),
    ("prcc", "maskcl", "none", (3,), 0.6),
]
#: The config's experiments, as rules/common.smk::experiment_settings() hands them to the job.
_GT_SIL = {"masks": "groundtruth-silhouette", "mask_source": "groundtruth", "mask_mode": "silhouette"}
_RGB = {"masks": "none", "mask_source": None, "mask_mode": None}
EXPERIMENTS = {
    "maskcl": {"method": "maskcl", "train": {}, **_GT_SIL},
    "maskcl_no_crossview": {"method": "maskcl", "train": {"crossview_loss": False}, **_GT_SIL},
    "clustercontrast": {"method": "clustercontrast", "train": {}, **_RGB},
    "maskcl_refresh_concat": {"method": "maskcl", "train": {"memory_refresh": True, "cluster_on": "concat"},
                              **_GT_SIL},
    "supervised": {"method": "supervised", "train": {}, **_RGB},
    "untrained": {"method": "untrained", "train": {}, **_RGB},
}
#: Runs of another config (maskcl with mask_mode parts) record their mask source and mode, which this
#: config's experiments cannot tell.
RECORDED_MASKS = {"groundtruth-parts": {"mask_source": "groundtruth", "mask_mode": "parts"}}
MASKCL_LOG = ["epoch", "lr", "loss", "proto_rgb", "nbr_rgb", "proto_mask", "nbr_mask", "crossview", "proto_fused",
              "clusters", "outliers", "singletons", "neighbours_k", "nmi_id", "ari_id", "purity_id", "nmi_clothes",
              "ari_clothes", "purity_clothes", "cluster_s", "epoch_s"]
CC_LOG = ["epoch", "lr", "loss", "contrast", "clusters", "outliers", "singletons", "nmi_id", "ari_id", "purity_id",
          "nmi_clothes", "ari_clothes", "purity_clothes", "cluster_s", "epoch_s"]
SUP_LOG = ["epoch", "lr", "loss", "contrast", "clusters", "outliers", "singletons", "cluster_s", "epoch_s"]


def _image(path: Path, pid: int, outfit: int, k: int) -> None:
    rng = np.random.default_rng([pid, outfit, k])
    h, w = 32, 16
    base = np.array([(pid * 67) % 256, (outfit * 120 + 40) % 256, (pid * 29 + k * 13) % 256], np.float64)
    grad = np.linspace(0.6, 1.2, h)[:, None, None]
    img = np.clip(base * grad + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def _synthcc_manifest(root: Path) -> pd.DataFrame:
    """Four training ids; six test ids (5 and 6 never change clothes), two queries and six gallery images each."""
    return fake_cc_manifest(root, _image, train_ids=range(100, 104), train_views=[(k % 3, k % 2) for k in range(4)],
                            test_ids=range(1, 7), changing=lambda pid: pid <= 4,
                            gallery_views=[(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)])


def _prcc_manifest(root: Path) -> pd.DataFrame:
    recs = []
    for split, cam in (("train", 0), ("query_sc", 1), ("query_cc", 2), ("gallery", 0)):
        for pid in range(1, 6):
            n = 3 if split in ("gallery", "train") else 1
            for k in range(n):
                rel = f"{split}/{pid:03d}_{k}.png"
                _image(root / rel, pid, 1 if split == "query_cc" else 0, k)
                recs.append({"path": str(root / rel), "relpath": rel, "split": split, "pid": pid + (100 if split ==
                             "train" else 0), "camid": cam, "clothes_id": pid * 10 + (1 if cam == 2 else 0)})
    return pd.DataFrame(recs)


def _features(m: pd.DataFrame, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 7)
    ids = {p: rng.standard_normal(16) for p in sorted(m["pid"].unique())}
    outfits = {c: rng.standard_normal(16) for c in sorted(m["clothes_id"].unique())}
    f = np.stack([ids[p] + 0.6 * outfits[c] for p, c in zip(m["pid"], m["clothes_id"])])
    return (f + noise * rng.standard_normal(f.shape)).astype(np.float32)


def _mask_index(ws: Path, dataset: str, source: str, m: pd.DataFrame) -> Path:
    out = ws / "results" / dataset / "masks" / source
    rows = []
    for rel, split in zip(m["relpath"], m["split"]):
        sil = np.zeros((32, 16), np.uint8)
        sil[4:30, 3:13] = 255
        parts = np.zeros((32, 16, 3), np.uint8)
        parts[4:14, 3:13] = (128, 0, 0)
        parts[14:30, 3:13] = (0, 128, 0)
        paths = {k: out / k / rel for k in ("labels", "silhouette", "parts")}
        for p in paths.values():
            p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(sil).save(paths["silhouette"])
        Image.fromarray(parts).save(paths["parts"])
        Image.fromarray((sil > 0).astype(np.uint8)).save(paths["labels"])
        rows.append({"relpath": rel, "split": split, "label": str(paths["labels"]),
                     "silhouette": str(paths["silhouette"]), "parts": str(paths["parts"]), "height": 32, "width": 16,
                     "fg_fraction": round(float((sil > 0).mean()), 6)})
    pd.DataFrame(rows).to_csv(out / "index.csv", index=False)
    return out / "index.csv"


def _train_log(path: Path, experiment: str, dataset: str, seed: int) -> None:
    if experiment == "untrained":        # no epoch: the header only, as the engine writes it
        path.write_text("epoch\n")
        return
    cols = SUP_LOG if experiment == "supervised" else MASKCL_LOG if experiment.startswith("maskcl") else CC_LOG
    if dataset == "prcc":                 # a dataset logged without pseudo-label quality columns
        cols = [c for c in cols if not c.startswith(("nmi", "ari", "purity"))]
    if experiment == "maskcl_no_crossview":
        cols = [c for c in cols if c != "crossview"]
    rng = np.random.default_rng([seed, len(experiment)])
    rows = []
    for e in range(1, 6):
        row = {}
        for c in cols:
            if c == "epoch":
                row[c] = e
            elif c in ("clusters", "outliers", "singletons", "neighbours_k"):
                row[c] = int(20 - e + rng.integers(0, 3))
            elif c.startswith(("nmi", "ari", "purity")):
                row[c] = round(min(1.0, 0.3 + 0.1 * e + 0.02 * rng.random()), 6)
            else:
                row[c] = round(3.0 / e + 0.1 * rng.random(), 6)
        rows.append(row)
    pd.DataFrame(rows, columns=cols).to_csv(path, index=False)


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """The workspace (a Snakemake working directory): datasets, manifests, masks, runs."""
    ws = tmp_path_factory.mktemp("reporting_ws")
    manifests = {"synthcc": _synthcc_manifest(ws / "data" / "synthcc"), "prcc": _prcc_manifest(ws / "data" / "prcc")}
    for d, m in manifests.items():
        out = ws / "results" / d
        out.mkdir(parents=True)
        m.to_csv(out / "manifest.csv", index=False)
        (out / "dataset.json").write_text(json.dumps({"name": d, "root": str(ws / "data" / d)}))
    sheet = np.zeros((60, 90, 3), np.uint8)
    sheet[:, :, 0] = np.linspace(0, 250, 90).astype(np.uint8)[None, :]
    sheet[10:50, 50:80] = (20, 160, 220)
    Image.fromarray(sheet).save(ws / "data" / "synthcc" / "contact_sheet.png")
    _mask_index(ws, "synthcc", "groundtruth", manifests["synthcc"])
    for d, exp, masks, seeds, noise in RUNS:
        for seed in seeds:
            folder = ws / "results" / d / "runs" / exp / masks / f"seed{seed}"
            folder.mkdir(parents=True)
            m = manifests[d]
            res = run_protocols(d, m, _features(m, noise, seed),
                                settings=EvalSettings.from_dict({"seed": 0, "single_shot_trials": 3, "topk": 10}))
            settings = {"metric": "euclidean", "rerank": False, "single_shot_trials": 3, "seed": 0, "topk": 10}
            prov = {"device": "cpu", "flip": False}
            if d == "synthcc":     # as maskcl.evaluation.evaluate_checkpoint records it
                exp_cfg = EXPERIMENTS[exp]
                train = TrainSettings.from_dict({"method": exp_cfg["method"], **exp_cfg["train"]}).to_dict()
                prov["config"] = {"run": {"dataset": d, "experiment": exp, "method": exp_cfg["method"],
                                          "masks": masks, "seed": seed, **RECORDED_MASKS.get(masks, {})},
                                  "train": train}
            else:                  # PRCC: an older file, the run's identity only (no method, no train settings)
                prov["config"] = {"run": {"dataset": d, "experiment": exp, "masks": masks, "seed": seed}}
            write_metrics_json(folder / "metrics.json", res, prov, settings=settings)
            write_ranks(folder / "ranks.npz", res)
            _train_log(folder / "train_log.csv", exp, d, seed)
    return ws


def _experiments() -> Dict[str, dict]:
    return {k: dict(v) for k, v in EXPERIMENTS.items()}


def _inputs(ws: Path) -> dict:
    rel = lambda ps: sorted(str(p) for p in ps)  # noqa: E731
    res = ws / "results"
    return {"metrics": rel(res.glob("*/runs/*/*/seed*/metrics.json")),
            "ranks": rel(res.glob("*/runs/*/*/seed*/ranks.npz")),
            "train_logs": rel(res.glob("*/runs/*/*/seed*/train_log.csv")),
            "manifests": rel(res.glob("*/manifest.csv")), "mask_indexes": rel(res.glob("*/masks/*/index.csv")),
            "dataset_infos": rel(res.glob("*/dataset.json"))}


def _named(inputs: dict) -> dict:
    """``build_report`` keyword arguments: manifests and mask indexes keyed by what they are (the test
    workspace knows its own layout; the workflow passes the same mappings from its plan)."""
    out = dict(inputs)
    out["manifests"] = {Path(p).parent.name: p for p in inputs["manifests"]}
    out["mask_indexes"] = {(Path(p).parts[-4], Path(p).parts[-2]): p for p in inputs["mask_indexes"]}
    return out


@pytest.fixture(scope="module")
def report(ws, tmp_path_factory):
    """``build_report`` run once on the workspace with the packaged published numbers."""
    out = tmp_path_factory.mktemp("report_out")
    inputs = _inputs(ws)
    outputs = build_report(inputs.pop("metrics"), experiments=_experiments(), tables_dir=out / "tables",
                           figures_dir=out / "figures", **_named(inputs), topk_grid=8, num_grid_queries=4)
    return out, outputs


def _doc(ws: Path, dataset: str, exp: str, masks: str, seed: int) -> dict:
    return json.loads((ws / "results" / dataset / "runs" / exp / masks / f"seed{seed}" / "metrics.json").read_text())


def _md_section(md: str, dataset_title: str, protocol: str) -> str:
    """The Markdown of one protocol section of one dataset's results table."""
    start = md.index(f"## {dataset_title}: all protocols")
    end = md.find("\n## ", start + 1)
    block = md[start:end if end > 0 else len(md)]
    s = block.index(f"### Protocol `{protocol}`")
    e = block.find("\n### ", s + 1)
    return block[s:e if e > 0 else len(block)]


def _rows(section: str, label: str) -> List[List[str]]:
    """Cells of every Markdown table row whose first cell is ``label``."""
    out = []
    for line in section.splitlines():
        if line.startswith("| "):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells[0] == label:
                out.append(cells)
    return out


def _row(section: str, label: str) -> List[str]:
    rows = _rows(section, label)
    assert len(rows) == 1, f"{len(rows)} rows {label!r} in\n{section}"
    return rows[0]


# --------------------------------------------------------------------------------------------- tables

def test_results_values_and_seed_aggregation(ws, report):
    """mean ± std over seeds (sample std), n stated, one decimal, raw fractions in the CSV."""
    out, _ = report
    docs = [_doc(ws, "synthcc", "maskcl", "groundtruth-silhouette", s) for s in (0, 1)]
    csv = pd.read_csv(out / "tables" / "results.csv")
    md = (out / "tables" / "results.md").read_text()
    for protocol in ("general", "cc", "cc_maskcl"):
        sel = csv[(csv.dataset == "synthcc") & (csv.protocol == protocol) & (csv.experiment == "maskcl")
                  & (csv.masks == "groundtruth-silhouette")]
        assert len(sel) == 1
        row = sel.iloc[0]
        assert row["n"] == 2 and row["seeds"] == "0;1"
        section = _md_section(md, "SynthCC", protocol)
        cells = [c for c in _rows(section, "MaskCL (re-impl.)") if c[1] == "`groundtruth-silhouette`"]
        assert len(cells) == 1
        md_cells = dict(zip(["label", "masks", "n", "mAP", "mINP", "rank1", "rank5", "rank10"], cells[0]))
        assert md_cells["n"] == "2"
        for key in ("mAP", "mINP", "rank1", "rank5", "rank10"):
            vals = np.array([d["protocols"][protocol][key] for d in docs], np.float64)
            assert row[f"{key}_mean"] == pytest.approx(vals.mean(), abs=1e-12)
            assert row[f"{key}_std"] == pytest.approx(vals.std(ddof=1), abs=1e-12)
            assert md_cells[key] == f"{100 * vals.mean():.1f} ± {100 * vals.std(ddof=1):.1f}"
    # a single seed shows the value alone, with n = 1
    one = _doc(ws, "synthcc", "supervised", "none", 0)["protocols"]["cc"]
    cells = _row(_md_section(md, "SynthCC", "cc"), "supervised (upper bound)")
    assert cells[2] == "1" and cells[3] == f"{100 * one['mAP']:.1f}" and "±" not in cells[3]


def test_per_seed_csv_keeps_every_number(ws, report):
    out, _ = report
    runs = pd.read_csv(out / "tables" / "runs.csv")
    total = sum(len(_doc(ws, d, e, m, s)["protocols"]) for d, e, m, seeds, _ in RUNS for s in seeds)
    assert len(runs) == total
    r = runs[(runs.dataset == "prcc") & (runs.protocol == "cc_singleshot")].iloc[0]
    doc = _doc(ws, "prcc", "maskcl", "none", 3)["protocols"]["cc_singleshot"]
    assert r["mAP"] == pytest.approx(doc["mAP"]) and r["mAP_draw_std"] == pytest.approx(doc["mAP_std"])
    assert r["num_trials"] == 3 and r["seed"] == 3
    assert Path(r["metrics_path"]).name == "metrics.json"


def test_protocol_labels_spelled_out(report):
    out, _ = report
    md = (out / "tables" / "results.md").read_text()
    tex = (out / "tables" / "results.tex").read_text()
    for dataset, title in (("synthcc", "SynthCC"), ("prcc", "PRCC")):
        for p in PROTOCOLS[dataset]:
            section = _md_section(md, title, p.name)
            assert protocol_short(dataset, p.name) in section.splitlines()[0]
            assert r"\texttt{" + latex_escape(p.name) + "}: " + latex_escape(protocol_short(dataset, p.name)) in tex
    # skipped queries (cloth-consistent ids under cc) are stated next to the protocol
    assert "4 without a valid match, skipped" in _md_section(md, "SynthCC", "cc").splitlines()[0]
    assert "3 draws" in _md_section(md, "PRCC", "cc_singleshot").splitlines()[0]
    assert md.count("Ranking: euclidean distance, without re-ranking.") == 2           # one caption per dataset


def test_every_protocol_has_a_short_label():
    for dataset, protocols in PROTOCOLS.items():
        for p in protocols:
            assert (dataset, p.name) in PROTOCOL_SHORT, f"add a short description for {dataset}/{p.name}"


def test_supervised_is_an_upper_bound_in_every_table(report):
    out, _ = report
    for f in sorted((out / "tables").glob("*.md")):
        text = f.read_text()
        for line in text.splitlines():
            if line.startswith("| ") and re.search(r"\bsupervised\b", line.split("|")[1]) and "unsupervised" not in \
                    line.split("|")[1].lower():
                assert "upper bound" in line, f"{f.name}: {line}"
    # within a section, supervised rows come after the supervised group title, never among ours
    section = _md_section((out / "tables" / "results.md").read_text(), "SynthCC", "cc")
    lines = section.splitlines()
    i_uns = next(i for i, x in enumerate(lines) if "**Unsupervised (this pipeline)**" in x)
    i_sup = next(i for i, x in enumerate(lines) if "**Supervised (upper bound, this pipeline)**" in x)
    i_row = next(i for i, x in enumerate(lines) if x.startswith("| supervised (upper bound) |"))
    assert i_uns < i_sup < i_row
    assert all(not x.startswith("| supervised") for x in lines[i_uns:i_sup])
    tex = (out / "tables" / "results.tex").read_text()
    assert r"\textit{Supervised (upper bound, this pipeline)}" in tex
    csv = pd.read_csv(out / "tables" / "results.csv")
    sup = csv[csv.method == "supervised"]
    assert len(sup) and (sup.group == "supervised").all() and sup.label.str.contains("upper bound").all()


def test_published_rows_protocols_and_empty_cells(report):
    out, _ = report
    md = (out / "tables" / "results.md").read_text()
    ms = _md_section(md, "PRCC", "cc_multishot")
    ss = _md_section(md, "PRCC", "cc_singleshot")
    third = "RGB-only method (third party, SiCL issue #4); published, I"
    r = _row(ms, third)
    assert (r[3], r[5]) == ("36.4", "53.3")                    # mAP, R1 as published
    assert r[1] == r[2] == r[4] == r[6] == r[7] == ""           # masks, n, mINP, R5, R10 unknown: empty
    r = _row(ss, third)
    assert (r[3], r[5]) == ("53.0", "40.4")                    # the single-shot numbers, under single-shot only
    assert "53.0" not in ms and "36.4" not in ss
    # a number with no protocol of ours (PRCC, single/multi-shot unstated) is in no column, only in the notes
    table_lines = [x for x in md.split("## PRCC")[1].splitlines() if x.startswith("| ")]
    assert not any("64.8" in x for x in table_lines)
    assert "Not comparable, so in no column: Gated channel attention" in md
    assert "published, V" in _row(ms, "FIRe2 (TIFS 2024) — supervised (upper bound); published, V")[0]
    # published groups never mix with ours
    lines = ms.splitlines()
    i_pub = next(i for i, x in enumerate(lines) if "**Published, unsupervised**" in x)
    assert all("published" not in x for x in lines[:i_pub])
    csv = pd.read_csv(out / "tables" / "results.csv")
    pub = csv[(csv.dataset == "prcc") & csv.status.notna()]
    assert set(pub.status) <= {"V", "I"}
    row = pub[(pub.protocol == "cc_multishot") & pub.label.str.startswith("RGB-only")].iloc[0]
    assert row["mAP_mean"] == pytest.approx(0.364) and np.isnan(row["mINP_mean"])
    assert not (pub.label.str.startswith("Gated")).any()


def test_published_flag_off_hides_rows(ws, tmp_path):
    inputs = _inputs(ws)
    metrics = [m for m in inputs["metrics"] if "/prcc/" in m]
    build_report(metrics, experiments=_experiments(), tables_dir=tmp_path / "t", figures_dir=tmp_path / "f",
                 published=False)
    md = (tmp_path / "t" / "results.md").read_text()
    assert "published" not in md.lower().replace("published numbers", "")
    assert "AIM" in (tmp_path / "t" / "published.md").read_text()       # the curated list is still written


def _latex_ok(tex: str) -> None:
    body = "\n".join(x for x in tex.splitlines() if not x.lstrip().startswith("%"))
    stripped = re.sub(r"\\[{}_&%$#]", "", body)
    depth = 0
    for ch in stripped:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0, "unbalanced braces"
    assert depth == 0, "unbalanced braces"
    assert not re.search(r"(?<!\\)[_%#]", stripped.replace(r"\\", "")), "unescaped _ % or #"
    stack = []
    for kind, env in re.findall(r"\\(begin|end)\{(\w+)\}", body):
        if kind == "begin":
            stack.append(env)
        else:
            assert stack and stack.pop() == env, f"\\end{{{env}}} does not close the open environment"
    assert not stack, f"unclosed environments {stack}"
    assert body.count(r"\begin{table}") == body.count(r"\end{table}") >= 1
    tabulars = re.findall(r"\\begin\{tabular\}\{((?:[^{}]|\{[^{}]*\})*)\}(.*?)\\end\{tabular\}", body, re.S)
    assert tabulars and len(tabulars) == body.count(r"\begin{tabular}")
    for spec, inner in tabulars:
        ncol = len(re.findall(r"p\{[^}]*\}|[lcr]", spec))
        assert inner.count(r"\toprule") == 1 and inner.count(r"\bottomrule") == 1 and r"\midrule" in inner
        for line in inner.splitlines():
            line = line.strip()
            if not line.endswith(r"\\"):
                continue
            spans = sum(int(n) - 1 for n in re.findall(r"\\multicolumn\{(\d+)\}", line))
            cells = len(re.findall(r"(?<!\\)&", line)) + 1 + spans
            assert cells == ncol, f"{cells} cells for {ncol} columns: {line}"


def test_latex_is_well_formed(report):
    out, _ = report
    for f in sorted((out / "tables").glob("*.tex")):
        tex = f.read_text()
        _latex_ok(tex)
        assert r"\usepackage{booktabs}" in tex.splitlines()[1]
    tex = (out / "tables" / "results.tex").read_text()
    assert r"\texttt{maskcl\_no\_crossview}" in tex and "maskcl_no" not in tex
    assert r"96.9 $\pm$" in tex or r" $\pm$ " in tex
    assert r"\caption{SynthCC: accuracy (\%)" in tex


def test_latex_compiles_with_pdflatex(report, tmp_path):
    """Every generated table compiles in a minimal document (users paste them into papers)."""
    require(shutil.which("pdflatex") is not None, "pdflatex (texlive-latex-base + texlive-latex-recommended)")
    out, _ = report
    stems = sorted(p.stem for p in (out / "tables").glob("*.tex"))
    assert {"results", "headline", "ablation_components", "published"} <= set(stems), stems
    for stem in stems:
        doc = tmp_path / f"{stem}_doc.tex"
        doc.write_text("\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{booktabs}\n"
                       "\\usepackage[margin=1cm,landscape]{geometry}\n\\begin{document}\n"
                       f"\\input{{{out / 'tables' / (stem + '.tex')}}}\n\\end{{document}}\n")
        run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout[-2000:]
        assert (tmp_path / f"{stem}_doc.pdf").stat().st_size > 1000


def test_render_formatting_units():
    assert fmt_pct(0.63949) == "63.9" and fmt_pct(1.0) == "100.0" and fmt_pct(None) == "" and fmt_pct(np.nan) == ""
    assert latex_escape("a_b & 50% #1 {x} ~ ^ \\") == r"a\_b \& 50\% \#1 \{x\} \textasciitilde{} \textasciicircum{} " \
                                                     r"\textbackslash{}"
    from maskcl.reporting.render import Column, RowGroup, Section, Table
    t = Table(title="T", caption=("c",), label="tab:x", columns=[Column("a", "A"), Column("m", "mAP", "r")],
              sections=[Section(heading=("h",), short=("h",), groups=[
                  RowGroup("g1", [{"a": "x_1", "m": Metric(0.5, 0.0123)}]),
                  RowGroup("g2", [{"a": "y", "m": Metric(None)}])])])
    md = to_markdown(t)
    assert "| x\\_1 | 50.0 ± 1.2 |" in md and "| y |  |" in md
    tex = to_latex(t)
    _latex_ok(tex)
    assert r"x\_1 & 50.0 $\pm$ 1.2 \\" in tex and r"\addlinespace" in tex


def test_ablation_tables(report, ws):
    out, _ = report
    comp = pd.read_csv(out / "tables" / "ablation_components.csv")
    row = comp[(comp.experiment == "maskcl_no_crossview") & (comp.protocol == "cc")].iloc[0]
    assert not bool(row["crossview_loss"]) and bool(row["neighbour_loss"]) and bool(row["refine"])
    # every method of the dataset is in the component table: the baselines, the bound and the reference
    assert set(comp[comp.dataset == "synthcc"].method) == {"maskcl", "clustercontrast", "supervised", "untrained"}
    md = (out / "tables" / "ablation_components.md").read_text()
    cells = lambda start: [c.strip() for c in next(x for x in md.splitlines() if x.startswith(start)).split("|")]  # noqa: E731
    line = cells("| `maskcl_no_crossview`")
    # columns: experiment, masks, cross-view, neighbour, nbr weights, nbr reduction, refinement, memory refresh,
    # clustered on, ARI id, ARI outfit
    assert line[3:10] == ["off", "on", "official", "official", "on", "off", "rgb"]
    assert cells("| `maskcl_refresh_concat`")[3:10] == ["on", "on", "official", "official", "on", "on", "concat"]
    # official recipe first, then by the number of switches changed (one each here), then the other methods
    order = [x.split("|")[1].strip() for x in md.splitlines() if x.startswith("| ") and "---" not in x][1:]
    assert order.index("`maskcl`") < order.index("`maskcl_no_crossview`") < order.index(
        "ClusterContrast (re-impl.)") and "untrained network (reference)" in order
    # the ARI columns are the last epoch's pseudo-label ARI, mean ± std over the seeds
    logs = [pd.read_csv(ws / "results" / "synthcc" / "runs" / "maskcl" / "groundtruth-silhouette" / f"seed{s}" /
                        "train_log.csv").iloc[-1] for s in (0, 1)]
    ari = np.array([lg["ari_id"] for lg in logs])
    official = comp[(comp.experiment == "maskcl") & (comp.masks == "groundtruth-silhouette") & (comp.protocol == "cc")]
    assert official["last_ari_id_mean"].iloc[0] == pytest.approx(ari.mean())
    assert official["last_ari_id_std"].iloc[0] == pytest.approx(ari.std(ddof=1))
    assert cells("| `maskcl` | `groundtruth-silhouette`")[10] == f"{100 * ari.mean():.1f} ± {100 * ari.std(ddof=1):.1f}"
    # rows without pseudo-labels leave the ARI cells empty (the supervised log has none; untrained has no epoch)
    assert cells("| supervised (upper bound)")[10:12] == ["", ""]
    assert cells("| untrained network (reference)")[10:12] == ["", ""] and "Untrained network (reference" in md
    masks = pd.read_csv(out / "tables" / "ablation_masks.csv")
    assert set(masks[masks.dataset == "synthcc"].masks) == {"groundtruth-silhouette", "groundtruth-parts"}
    assert set(masks.mask_mode.dropna()) == {"silhouette", "parts"}
    md = (out / "tables" / "ablation_masks.md").read_text()
    assert "| MaskCL (re-impl.) | `groundtruth` | parts |" in md and "| MaskCL (re-impl.) | `groundtruth` | silhouette |" in md
    meth = pd.read_csv(out / "tables" / "ablation_methods.csv")
    assert not {"maskcl_no_crossview", "maskcl_refresh_concat"} & set(meth.experiment)  # ablations, not methods
    assert {"maskcl", "clustercontrast", "supervised", "untrained"} <= set(meth.experiment)
    # the wide ablation cells are the same numbers as the long table
    agg = pd.read_csv(out / "tables" / "results.csv")
    # a run off the official switches is labelled a variant, never MaskCL
    labels = dict(zip(agg.experiment, agg.label))
    assert labels["maskcl"] == "MaskCL (re-impl.)"
    assert labels["maskcl_no_crossview"] == "MaskCL (re-impl.) variant: maskcl_no_crossview"
    results_md = (out / "tables" / "results.md").read_text()
    assert "| MaskCL (re-impl.) variant: `maskcl_no_crossview` |" in results_md
    assert "| MaskCL (re-impl.) | `groundtruth-silhouette` |" in results_md
    cc = agg[(agg.experiment == "clustercontrast") & (agg.protocol == "cc_maskcl")].iloc[0]
    mline = next(x for x in (out / "tables" / "ablation_methods.md").read_text().splitlines()
                 if x.startswith("| ClusterContrast (re-impl.) | `none` |"))
    assert f"{100 * cc['mAP_mean']:.1f} ± {100 * cc['mAP_std']:.1f}" in mline


def test_headline_table(report):
    out, _ = report
    head = pd.read_csv(out / "tables" / "headline.csv")
    assert set(zip(head.dataset, head.protocol)) == {("synthcc", "cc"), ("prcc", "cc_multishot")}
    md = (out / "tables" / "headline.md").read_text()
    assert "### SynthCC, protocol `cc`: clothes-changing (CAL)" in md
    assert "53.3" in md and "40.4" not in md           # PRCC published: multi-shot only (the headline)


def _md_table(md: str) -> Dict[str, List[Dict[str, str]]]:
    """Label → rows of the first Markdown table in ``md``, each a header → cell dict."""
    lines = [x for x in md.splitlines() if x.startswith("| ")]
    split = lambda x: [c.strip() for c in x.strip().strip("|").split("|")]  # noqa: E731
    header = split(lines[0])
    out: Dict[str, List[Dict[str, str]]] = {}
    for x in lines[2:]:
        cells = split(x)
        out.setdefault(cells[0], []).append(dict(zip(header, cells)))
    return out


def test_comparison_table(ws, report):
    out, _ = report
    csv = pd.read_csv(out / "tables" / "comparison.csv")
    ours = csv[csv.status.isna()]
    # each dataset's headline and the companion protocol papers print beside it, nothing else
    assert set(zip(csv.dataset, csv.protocol)) == {("synthcc", "cc"), ("synthcc", "general"),
                                                   ("prcc", "cc_multishot"), ("prcc", "sc_multishot")}
    # each method at its official switches: the component variants are ablations, not rows
    assert set(ours.experiment) == {"maskcl", "clustercontrast", "supervised", "untrained"}
    md = (out / "tables" / "comparison.md").read_text()
    rows = _md_table(md)
    sil = [r for r in rows["MaskCL (re-impl.)"] if r["Masks"] == "`groundtruth-silhouette`"]
    assert len(sil) == 1
    docs = [_doc(ws, "synthcc", "maskcl", "groundtruth-silhouette", s) for s in (0, 1)]
    for protocol, key, header in (("cc", "mAP", "SynthCC cc mAP"), ("general", "rank1", "SynthCC general R1")):
        vals = np.array([d["protocols"][protocol][key] for d in docs], np.float64)
        assert sil[0][header] == f"{100 * vals.mean():.1f} ± {100 * vals.std(ddof=1):.1f}"
    assert sil[0]["SynthCC n"] == "2" and sil[0]["PRCC n"] == ""   # no silhouette run on PRCC
    # groups in order: unsupervised, the bound, the reference, then published rows
    order = [x.split("|")[1].strip() for x in md.splitlines() if x.startswith("| **")]
    assert order[:3] == ["**Unsupervised (this pipeline)**", "**Supervised (upper bound, this pipeline)**",
                         "**Untrained network (reference, this pipeline)**"]
    # published: only numbers verified in their source (V), one row across its protocols
    aim = rows["AIM (CVPR 2023) — supervised (upper bound); published, V"][0]
    assert aim["PRCC cc\\_multishot mAP"] == "58.3" and aim["PRCC sc\\_multishot mAP"] == "99.9"
    assert aim["SynthCC cc mAP"] == ""
    assert not any(label.startswith("RGB-only") for label in rows)          # status I: not in this table
    assert set(csv.loc[csv.status.notna(), "status"]) == {"V"}
    tex = (out / "tables" / "comparison.tex").read_text()
    assert "\\label{tab:comparison}" in tex and "\\multicolumn{2}{c}{PRCC sc\\_multishot}" in tex


def test_shipped_published_numbers_follow_the_policy():
    entries = load_published()
    assert len(entries) >= 20
    assert {e.status for e in entries} <= {"V", "I"}
    for e in entries:
        if e.protocol is not None:
            assert e.protocol in [p.name for p in PROTOCOLS[e.dataset]]
        assert all(0 <= v <= 1 for v in e.metrics.values()) and e.source
    sicl = [e for e in entries if e.method.startswith("SiCL (MaskCL") and e.protocol == "cc"]
    assert sicl and sicl[0].metrics == {"rank1": pytest.approx(0.717), "mAP": pytest.approx(0.639)}
    # single-shot and multi-shot PRCC numbers of one method never share a protocol
    third = [e for e in entries if e.dataset == "prcc" and e.method.startswith("RGB-only")]
    assert sorted(e.protocol for e in third) == ["cc_multishot", "cc_singleshot"]


@pytest.mark.parametrize("change, message", [
    ({"status": "R"}, "only V (verified) and I"),
    ({"protocol": "cc_multishot", "dataset": "ltcc"}, "is not one of ltcc's protocols"),
    ({"metrics": {"rank1": 171.0}}, "not a percentage"),
    ({"metrics": {"top1": 50.0}}, "unknown metric"),
])
def test_published_file_is_checked(tmp_path, change, message):
    entry = {"method": "X", "supervision": "supervised", "kind": "paper", "dataset": "prcc",
             "protocol": "cc_multishot", "reported_protocol": "r", "metrics": {"rank1": 50.0}, "status": "V",
             "source": "s"}
    entry.update(change)
    p = tmp_path / "pub.yaml"
    p.write_text(yaml.safe_dump({"format": "maskcl-published/1", "units": "percent", "entries": [entry]}))
    with pytest.raises(ReportingError, match=re.escape(message)):
        load_published(p)


# -------------------------------------------------------------------------------------------- errors

def test_unknown_experiment_is_a_clear_error(ws):
    prcc = [p for p in _inputs(ws)["metrics"] if "/prcc/" in p]          # records no method
    with pytest.raises(MaskCLError, match=r"records no method and experiment 'maskcl' is not in the config's "
                                          r"experiments \(known: clustercontrast"):
        load_runs(prcc, {k: v for k, v in EXPERIMENTS.items() if k != "maskcl"})
    synth = [p for p in _inputs(ws)["metrics"] if "/synthcc/" in p]      # records its method: no config needed
    assert {r.method for r in load_runs(synth)} == {"maskcl", "clustercontrast", "supervised", "untrained"}


def _copy_run(ws: Path, tmp_path: Path, edit) -> Path:
    src = ws / "results" / "synthcc" / "runs" / "maskcl" / "groundtruth-silhouette" / "seed0" / "metrics.json"
    dst = tmp_path / "results" / "synthcc" / "runs" / "maskcl" / "groundtruth-silhouette" / "seed0" / "metrics.json"
    dst.parent.mkdir(parents=True)
    doc = json.loads(src.read_text())
    edit(doc)
    dst.write_text(json.dumps(doc))
    return dst


def test_recorded_training_settings_win_and_mismatches_are_errors(ws, tmp_path):
    def refine_off(doc):
        doc["provenance"]["config"]["train"]["refine"] = False
    run = load_runs([_copy_run(ws, tmp_path / "a", refine_off)], _experiments())[0]
    assert run.components == {"crossview_loss": True, "neighbour_loss": True, "neighbour_weights": "official",
                              "neighbour_reduction": "official", "refine": False, "memory_refresh": False,
                              "cluster_on": "rgb"}

    def moved(doc):
        doc["provenance"]["config"]["run"]["seed"] = 7
    with pytest.raises(ReportingError, match=r"not inside a run folder of the run it records: written for seed 7 but "
                                             r"it sits in the run folder \S+/seed0 \(expected \S+/seed7;"):
        load_runs([_copy_run(ws, tmp_path / "b", moved)], _experiments())

    def other_method(doc):
        doc["provenance"]["config"]["run"]["method"] = "clustercontrast"
        doc["provenance"]["config"]["train"]["method"] = "clustercontrast"
    with pytest.raises(ReportingError, match="the method disagrees"):
        load_runs([_copy_run(ws, tmp_path / "c", other_method)], _experiments())


def test_identity_comes_from_metrics_json_not_the_path(ws, tmp_path):
    def no_identity(doc):
        del doc["provenance"]["config"]["run"]["masks"]
    path = _copy_run(ws, tmp_path / "a", no_identity)
    with pytest.raises(ReportingError, match=re.escape(f"{path}: records no run identity (provenance.config.run "
                                                       f"lacks masks); rerun the evaluate rule")):
        load_runs([path], _experiments())

    def no_config(doc):
        del doc["provenance"]["config"]
    with pytest.raises(ReportingError, match=r"lacks dataset, experiment, masks, seed\); rerun the evaluate rule"):
        load_runs([_copy_run(ws, tmp_path / "b", no_config)], _experiments())
    # mask source and mode: recorded, else the configured experiment's (same masks), never read off the path
    run = load_runs([_copy_run(ws, tmp_path / "c", lambda doc: None)], _experiments())[0]
    assert (run.key.mask_source, run.key.mask_mode) == ("groundtruth", "silhouette")
    other = {**_experiments(), "maskcl": {**EXPERIMENTS["maskcl"], "mask_source": "schp", "mask_mode": "parts"}}
    run = load_runs([_copy_run(ws, tmp_path / "d", lambda doc: None)], other)[0]
    assert (run.key.masks, run.key.mask_source, run.key.mask_mode) == ("groundtruth-silhouette", "schp", "parts")
    stale = {**_experiments(), "maskcl": {**EXPERIMENTS["maskcl"], "masks": "groundtruth-parts"}}
    with pytest.raises(ReportingError, match=r"recorded for masks 'groundtruth-silhouette', but neither metrics.json "
                                             r"nor the config names their mask source and mode \(the config's "
                                             r"experiment trains with masks 'groundtruth-parts': a stale run"):
        load_runs([_copy_run(ws, tmp_path / "e", lambda doc: None)], stale)


def test_bad_inputs_are_clear_errors(ws, tmp_path):
    bad = tmp_path / "results" / "synthcc" / "runs" / "maskcl" / "none" / "seed0" / "metrics.json"
    bad.parent.mkdir(parents=True)
    bad.write_text(json.dumps({"format": "something/9", "dataset": "synthcc", "protocols": {}}))
    with pytest.raises(ReportingError, match="metrics format 'something/9'"):
        load_runs([bad], _experiments())
    loose = tmp_path / "metrics.json"                      # a valid run's file outside its run folder
    shutil.copy(ws / "results" / "synthcc" / "runs" / "maskcl" / "groundtruth-silhouette" / "seed0" / "metrics.json",
                loose)
    with pytest.raises(ReportingError, match="not inside a run folder"):
        load_runs([loose], _experiments())
    with pytest.raises(ReportingError, match="no metrics.json inputs"):
        load_runs([], _experiments())
    inputs = {k: [p for p in v if "/prcc/" in p] for k, v in _inputs(ws).items()}
    with pytest.raises(ReportingError, match="tables.topk_grid is 11 but ranks.npz keeps only the top 10"):
        build_report(inputs.pop("metrics"), experiments=_experiments(), tables_dir=tmp_path / "t",
                     figures_dir=tmp_path / "f", **_named(inputs), topk_grid=11)


def test_aggregation_ignores_undefined_metrics_per_seed(ws):
    runs = load_runs(_inputs(ws)["metrics"], _experiments())
    per = per_seed_frame(runs)
    per.loc[(per.experiment == "clustercontrast") & (per.seed == 1), "mAP"] = np.nan
    agg = aggregate_seeds(per)
    row = agg[(agg.experiment == "clustercontrast") & (agg.protocol == "cc")].iloc[0]
    kept = per[(per.experiment == "clustercontrast") & (per.protocol == "cc") & (per.seed == 0)]["mAP"].iloc[0]
    assert row["mAP_mean"] == pytest.approx(kept) and row["mAP_n"] == 1 and np.isnan(row["mAP_std"])
    assert row["n"] == 2
    tables = results_tables(agg)
    assert [t.label for t in tables] == ["tab:results-synthcc", "tab:results-prcc"]


# -------------------------------------------------------------------------------------------- figures

def _pixels(png: Path) -> np.ndarray:
    with Image.open(png) as im:
        im.verify()
    with Image.open(png) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"), np.float64)


def test_every_figure_is_a_nonblank_png_with_a_sidecar(report):
    out, outputs = report
    pngs = sorted((out / "figures").rglob("*.png"))
    kinds = {p.relative_to(out / "figures").parts[0] for p in pngs}
    assert kinds == {"cmc", "retrieval", "training", "pseudo_labels", "masks", "datasets"}
    assert len(pngs) == sum(1 for v in outputs.figures.values() for p in v if p.suffix == ".png")
    for png in pngs:
        px = _pixels(png)
        assert px.shape[0] > 50 and px.shape[1] > 50
        assert px.std() > 10, f"{png} looks blank"
        packed = (px[..., 0].astype(np.int64) << 16) | (px[..., 1].astype(np.int64) << 8) | px[..., 2].astype(np.int64)
        assert np.unique(packed).size > 3, f"{png} is nearly one flat colour"
        assert png.with_suffix(".csv").is_file() and len(pd.read_csv(png.with_suffix(".csv"))) > 0


def test_cmc_figure_is_drawn_from_the_metrics(ws, report):
    out, _ = report
    for dataset, protocol, expect_len in (("synthcc", "cc", 20), ("prcc", "cc_singleshot", 5)):
        side = pd.read_csv(out / "figures" / "cmc" / dataset / f"{protocol}.csv")
        groups = {(d, e, m): seeds for d, e, m, seeds, _ in RUNS if d == dataset}
        assert set(zip(side.experiment, side.masks)) == {(e, m) for _, e, m in groups}
        for (d, e, m), seeds in groups.items():
            curves = np.array([_doc(ws, d, e, m, s)["protocols"][protocol]["cmc"][:20] for s in seeds], np.float64)
            sub = side[(side.experiment == e) & (side.masks == m)].sort_values("rank")
            assert list(sub["rank"]) == list(range(1, expect_len + 1))
            np.testing.assert_allclose(sub["cmc_mean"], curves.mean(axis=0), atol=1e-12)
            assert (sub["n"] == len(seeds)).all()


def test_retrieval_grid_is_drawn_from_ranks(ws, report):
    out, _ = report
    folder = ws / "results" / "synthcc" / "runs" / "maskcl" / "groundtruth-silhouette" / "seed0"
    side = pd.read_csv(out / "figures" / "retrieval" / "synthcc" / "maskcl" / "groundtruth-silhouette" / "seed0" /
                       "cc.csv", keep_default_na=False)
    manifest = pd.read_csv(ws / "results" / "synthcc" / "manifest.csv")
    index = pd.read_csv(ws / "results" / "synthcc" / "masks" / "groundtruth" / "index.csv").set_index("relpath")
    with np.load(folder / "ranks.npz") as z:
        rows, top, flags, first = (z[f"cc.{k}"] for k in ("query_rows", "topk_rows", "topk_flags", "first_match"))
    assert side["query"].nunique() == 4 and side["position"].max() == 8          # num_grid_queries, topk_grid
    names = {1: "good", 2: "junk", 0: "wrong"}
    for _, q in side[side.position == 0].iterrows():
        qi = int(q["ranks_query"])
        assert first[qi] >= 0                                                     # only queries with a match
        assert int(q["manifest_row"]) == rows[qi] and q["flag"] == "query"
        cells = side[(side["query"] == q["query"]) & (side.position > 0)].sort_values("position")
        np.testing.assert_array_equal(cells["manifest_row"].astype(int), top[qi, :8])
        assert list(cells["flag"]) == [names[int(f)] for f in flags[qi, :8]]
        for _, c in cells.iterrows():
            m = manifest.iloc[int(c["manifest_row"])]
            assert int(c["pid"]) == m["pid"] and c["relpath"] == m["relpath"]
            assert c["mask"] == index.loc[m["relpath"], "silhouette"]             # the run's mask mode
    assert "junk" in set(side.flag) and "good" in set(side.flag) and "wrong" in set(side.flag)
    parts = pd.read_csv(out / "figures" / "retrieval" / "synthcc" / "maskcl" / "groundtruth-parts" / "seed0" / "cc.csv")
    assert parts["mask"].str.contains("/parts/").all()
    rgb = pd.read_csv(out / "figures" / "retrieval" / "synthcc" / "clustercontrast" / "none" / "seed0" / "cc.csv",
                      keep_default_na=False)
    assert (rgb["mask"] == "").all()


def test_training_figures_are_drawn_from_the_logs(ws, report):
    out, _ = report
    base = ws / "results" / "synthcc" / "runs"
    side = pd.read_csv(out / "figures" / "training" / "synthcc" / "maskcl" / "groundtruth-silhouette.csv")
    assert sorted(side.seed.unique()) == [0, 1]
    for seed in (0, 1):
        log = pd.read_csv(base / "maskcl" / "groundtruth-silhouette" / f"seed{seed}" / "train_log.csv")
        for series in ("loss", "crossview", "clusters", "nmi_id", "nmi_clothes"):
            got = side[(side.seed == seed) & (side.series == series)].sort_values("epoch")
            np.testing.assert_allclose(got["value"], log[series], atol=1e-12)
            np.testing.assert_array_equal(got["epoch"], log["epoch"])
    nocv = pd.read_csv(out / "figures" / "training" / "synthcc" / "maskcl_no_crossview" / "groundtruth-silhouette.csv")
    assert "crossview" not in set(nocv.series) and "proto_rgb" in set(nocv.series)
    sup = pd.read_csv(out / "figures" / "training" / "synthcc" / "supervised" / "none.csv")
    assert set(sup.panel) == {"loss", "clusters"} and "contrast" in set(sup.series)   # no quality columns logged
    prcc = pd.read_csv(out / "figures" / "training" / "prcc" / "maskcl" / "none.csv")
    assert "quality" not in set(prcc.panel)
    assert not (out / "figures" / "pseudo_labels" / "prcc.png").exists()


def test_pseudo_label_figure_is_seed_mean(ws, report):
    out, _ = report
    side = pd.read_csv(out / "figures" / "pseudo_labels" / "synthcc.csv")
    logs = [pd.read_csv(ws / "results" / "synthcc" / "runs" / "maskcl" / "groundtruth-silhouette" / f"seed{s}" /
                        "train_log.csv") for s in (0, 1)]
    labels = set(side.label)
    assert "MaskCL (re-impl.) variant: maskcl_no_crossview [groundtruth-silhouette]" in labels  # a variant, named so
    got = side[(side.label == "MaskCL (re-impl.) [groundtruth-silhouette]")
               & (side.series == "nmi_clothes")].sort_values("epoch")
    np.testing.assert_allclose(got["mean"], (logs[0]["nmi_clothes"] + logs[1]["nmi_clothes"]) / 2, atol=1e-12)
    assert (got["n"] == 2).all()
    assert not side.label.str.startswith("supervised").any()               # it logs no quality columns


def test_mask_overlays_and_contact_sheet(ws, report):
    out, _ = report
    side = pd.read_csv(out / "figures" / "masks" / "synthcc" / "groundtruth.csv")
    index = pd.read_csv(ws / "results" / "synthcc" / "masks" / "groundtruth" / "index.csv").set_index("relpath")
    assert side.groupby("split").size().to_dict() == {"gallery": 3, "query": 3, "train": 3}
    for _, r in side.iterrows():
        assert r["silhouette"] == index.loc[r["relpath"], "silhouette"]
        assert r["parts"] == index.loc[r["relpath"], "parts"]
        assert r["split"] == index.loc[r["relpath"], "split"]
    src = ws / "data" / "synthcc" / "contact_sheet.png"
    dst = out / "figures" / "datasets" / "synthcc.png"
    assert dst.read_bytes() == src.read_bytes()
    import hashlib

    assert pd.read_csv(dst.with_suffix(".csv"))["sha256"].iloc[0] == hashlib.sha256(src.read_bytes()).hexdigest()


def test_same_inputs_give_identical_outputs(ws, tmp_path):
    inputs = _inputs(ws)
    keep = lambda ps: [p for p in ps if "/prcc/" in p]  # noqa: E731
    sub = {k: keep(v) for k, v in inputs.items()}
    for name in ("a", "b"):
        s = dict(sub)
        build_report(s.pop("metrics"), experiments=_experiments(), tables_dir=tmp_path / name / "t",
                     figures_dir=tmp_path / name / "f", **_named(s), num_grid_queries=3, topk_grid=5)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_missing_contact_sheet_on_synthcc_is_an_error(ws, tmp_path):
    info = tmp_path / "results" / "synthcc" / "dataset.json"
    info.parent.mkdir(parents=True)
    (tmp_path / "nowhere").mkdir()     # the root exists, without the sheet its generator writes
    info.write_text(json.dumps({"name": "synthcc", "root": str(tmp_path / "nowhere")}))
    m = [p for p in _inputs(ws)["metrics"] if "/prcc/" in p]
    with pytest.raises(ReportingError, match="contact sheet not found; rerun the download rule"):
        build_report(m, experiments=_experiments(), tables_dir=tmp_path / "t", figures_dir=tmp_path / "f",
                     dataset_infos=[info])


# ----------------------------------------------------------------------------- config, rule and report

def test_tables_schema_section():
    cfg = validate_config({"tables": {}})
    assert cfg["tables"] == {"published": True, "topk_grid": 10, "num_grid_queries": 6, "figure_seed": 0,
                             "cmc_max_rank": 20, "overlay_per_split": 3}
    with pytest.raises(MaskCLError, match="tables"):
        validate_config({"tables": {"formats": ["md"]}})
    with pytest.raises(MaskCLError, match="tables.topk_grid"):
        validate_config({"tables": {"topk_grid": 0}})
    import inspect

    params = inspect.signature(build_report).parameters
    assert set(cfg["tables"]) <= set(params), "every tables key must be a build_report keyword"


_SNAKEFILE = '''# Test workflow: the repository's tables rule, with glob-based stand-ins for the input functions
# rules/common.smk provides in the real DAG.
import glob

from maskcl.config import validate_config


configfile: "config.yaml"


validate_config(config)


report: "{root}/report/workflow.rst"


def _g(pattern):
    return sorted(glob.glob(pattern))


def all_metrics():
    return _g("results/*/runs/*/*/seed*/metrics.json")


def all_ranks():
    return _g("results/*/runs/*/*/seed*/ranks.npz")


def all_train_logs():
    return _g("results/*/runs/*/*/seed*/train_log.csv")


def all_manifests():
    return _g("results/*/manifest.csv")


def all_mask_indexes():
    return _g("results/*/masks/*/index.csv")


def manifests_by_dataset():
    return {{p.split("/")[1]: p for p in all_manifests()}}


def mask_indexes_by_source():
    return [[p.split("/")[1], p.split("/")[3], p] for p in all_mask_indexes()]


def all_dataset_infos():
    return _g("results/*/dataset.json")


def experiment_settings():
    def masks(x):
        mode = x.get("mask_mode", "silhouette") if x["method"] == "maskcl" else None
        source = "groundtruth" if mode else None
        return {{"masks": f"{{source}}-{{mode}}" if mode else "none", "mask_source": source, "mask_mode": mode}}
    return {{e: {{"method": x["method"], "train": dict(x.get("train", {{}})), **masks(x)}}
            for e, x in config["experiments"].items()}}


include: "{root}/rules/tables.smk"


rule all:
    default_target: True
    input:
        rules.tables.output,
'''


def test_tables_rule_and_html_report(ws, tmp_path):
    wd = tmp_path / "wf"
    keep = ("runs/maskcl/groundtruth-silhouette", "runs/maskcl_no_crossview", "runs/supervised")
    shutil.copytree(ws / "results" / "synthcc", wd / "results" / "synthcc", ignore=lambda d, names: [
        n for n in names if Path(d).name == "runs" and not any(k.startswith(f"runs/{n}") for k in keep)
        or (Path(d).name == "maskcl" and n != "groundtruth-silhouette")])
    # a workspace of its own: its dataset copied along and the absolute paths written for ws made its own
    # (a copy that kept naming ws's files would be refused as a copied workspace)
    shutil.copytree(ws / "data" / "synthcc", wd / "data" / "synthcc")
    for f in [*(wd / "results").rglob("*.csv"), *(wd / "results").rglob("*.json")]:
        f.write_text(f.read_text().replace(str(ws), str(wd)))
    (wd / "Snakefile").write_text(_SNAKEFILE.format(root=ROOT))
    (wd / "config.yaml").write_text(yaml.safe_dump({
        "datasets": ["synthcc"], "masks": {"sources": ["groundtruth"], "train_source": "groundtruth"},
        "experiments": {"maskcl": {"method": "maskcl"},
                        "maskcl_no_crossview": {"method": "maskcl", "train": {"crossview_loss": False}},
                        "clustercontrast": {"method": "clustercontrast"}, "supervised": {"method": "supervised"}},
        "tables": {"topk_grid": 6, "num_grid_queries": 2}}))
    smk = [sys.executable, "-m", "snakemake", "--snakefile", str(wd / "Snakefile"), "--directory", str(wd)]
    run = subprocess.run(smk + ["--cores", "1"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for stem in ("results", "headline", "comparison", "ablation_masks", "ablation_methods", "ablation_components", "published"):
        for ext in ("md", "tex", "csv"):
            assert (wd / "results" / "tables" / f"{stem}.{ext}").stat().st_size > 0
    comp = pd.read_csv(wd / "results" / "tables" / "ablation_components.csv")   # settings reached the job
    assert not comp[comp.experiment == "maskcl_no_crossview"]["crossview_loss"].astype(bool).any()
    grid = pd.read_csv(wd / "results" / "figures" / "retrieval" / "synthcc" / "maskcl" / "groundtruth-silhouette" /
                       "seed0" / "cc.csv")
    assert grid["query"].nunique() == 2 and grid["position"].max() == 6       # tables.* reached the job
    assert (wd / "logs" / "tables" / "tables.log").is_file()
    rep = subprocess.run(smk + ["--report", str(wd / "report.html")], capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stdout[-3000:] + rep.stderr[-3000:]
    html = (wd / "report.html").read_text(encoding="utf-8")
    for caption in ("Results under every evaluation protocol", "Headline results: each dataset under its headline",
                    "Ablation by mask source and mask mode", "Ablation by method", "Ablation of method components",
                    "Published numbers curated by hand", "CMC curve of synthcc under protocol cc",
                    "Ranked retrieval of synthcc, experiment maskcl", "MaskCL pipeline report"):
        assert caption in html, caption
    assert "ablation_components.tex" in html and "cc_maskcl.png" in html
    runs = pd.read_csv(wd / "results" / "tables" / "runs.csv")
    assert set(zip(runs.experiment, runs.masks, runs.seed)) == {
        ("maskcl", "groundtruth-silhouette", 0), ("maskcl", "groundtruth-silhouette", 1),
        ("maskcl_no_crossview", "groundtruth-silhouette", 0), ("supervised", "none", 0)}


def test_tables_footnote_the_training_hardware_and_warn_when_it_differs():
    from maskcl.hardware import describe_hardware
    from maskcl.reporting.aggregate import HARDWARE_SEP
    from maskcl.reporting.tables import _eval_note, hardware_runs

    record = {"device": "cpu", "cpu_model": "AMD EPYC", "torch_threads": 1, "world_size": 1, "bn_groups": 1,
              "bn_batch": 256, "precision": "float32", "torch": "2.14.1"}
    assert describe_hardware(record) == "CPU AMD EPYC, 1 thread; BatchNorm batch 256; float32; torch 2.14.1"
    cpu = describe_hardware(record, bn_batch=False)
    assert cpu == "CPU AMD EPYC, 1 thread; float32; torch 2.14.1"
    gpu = describe_hardware({"device": "cuda", "gpu_names": ["NVIDIA H100"] * 4, "world_size": 4, "bn_groups": 4,
                             "bn_batch": 64, "precision": "bf16", "torch": "2.4.0", "cuda": "12.1"})
    assert gpu == "4× NVIDIA H100; BatchNorm batch 64 × 4 groups; bf16; torch 2.4.0, CUDA 12.1"
    assert describe_hardware(None) == "unrecorded"
    # the tables' phrase: a recipe's batch is no hardware difference, the BatchNorm grouping is
    assert "BatchNorm" not in describe_hardware({"device": "cpu", "bn_batch": 16, "bn_groups": 1}, bn_batch=False)
    assert "BatchNorm in 4 groups" in describe_hardware({"device": "cuda", "bn_batch": 64, "bn_groups": 4},
                                                        bn_batch=False)
    same = pd.DataFrame({"label": ["MaskCL", "ClusterContrast"], "eval_metric": ["euclidean"] * 2,
                         "rerank": [False] * 2, "flip": [False] * 2, "hardware": [cpu, cpu]})
    assert _eval_note(same).endswith(f" Trained on: {cpu}.")
    # one row's seeds on the CPU and on GPUs: the caption warns and names which rows ran where
    mixed = same.assign(hardware=[cpu + HARDWARE_SEP + gpu, cpu])
    assert hardware_runs(mixed) == {cpu: ["MaskCL", "ClusterContrast"], gpu: ["MaskCL"]}
    note = _eval_note(mixed)
    assert "Warning: these rows were trained on different hardware" in note
    assert f"{gpu} (MaskCL)" in note and "Trained on" not in note


def test_a_gallery_smaller_than_the_grid_is_drawn_whole_and_a_short_save_is_an_error():
    """The evaluation saves min(evaluate.topk, gallery) columns: a 3-image gallery under topk_grid 10 is a
    3-column grid; 3 saved columns of a 20-image gallery mean evaluate.topk was lowered, which stays an error."""
    from maskcl.reporting.retrieval import retrieval_frame

    manifest = pd.DataFrame({"relpath": [f"{i}.jpg" for i in range(5)], "path": [f"/d/{i}.jpg" for i in range(5)],
                             "pid": [0, 0, 1, 0, 1], "camid": [0, 1, 1, 2, 2], "clothes_id": [0, 1, 2, 3, 4]})
    arrays = {"query_rows": np.array([0, 2]), "topk_rows": np.array([[3, 1, 4], [4, 1, 3]]),
              "topk_flags": np.array([[1, 1, 0], [1, 0, 0]], np.int8), "first_match": np.array([0, 0]),
              "ap": np.array([1.0, 1.0])}
    frame = retrieval_frame(arrays, manifest, np.array([1]), 10, gallery_size=3)
    assert list(frame["position"]) == [0, 1, 2, 3]
    assert list(frame["manifest_row"]) == [2, 4, 1, 3] and list(frame["flag"]) == ["query", "good", "wrong", "wrong"]
    with pytest.raises(ReportingError, match="tables.topk_grid is 10 but ranks.npz keeps only the top 3"):
        retrieval_frame(arrays, manifest, np.array([1]), 10, gallery_size=20)
    with pytest.raises(ReportingError, match="keeps only the top 3"):
        retrieval_frame(arrays, manifest, np.array([1]), 10)
