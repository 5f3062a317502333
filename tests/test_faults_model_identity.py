"""Fault injection: a ``model.pt`` that is not the run's, or not whole, never reaches a table.

Class 2 of issue #25: a self-consistent model of another architecture (or other settings, or
another seed) placed in a run folder was evaluated and published under the run's name. Every reader
now compares what the file records with the run it is read for: the evaluate stage
(``check_run_model``, fed the plan's settings by the evaluate rule) and the tables stage (the
model's recorded settings in metrics.json against the plan's, so an old metrics.json cannot carry a
foreign model either). Class 5: a file whose weights do not fit its recorded architecture, or whose
metadata is missing or of the wrong type, is one ``CheckpointError`` line, not a traceback.

Each failure goes through ``maskcl.workflow.run_job`` (the ``job`` fixture): exit 1, one line naming
the file, the first differing field (recorded vs expected) and the command that retrains the run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest
import torch
import yaml

import test_faults_upstream as upstream

from maskcl.errors import CheckpointError, ReportingError
from maskcl.evaluation import check_run_model, evaluate_checkpoint
from maskcl.models.backbone import ReIDBackbone
from maskcl.models.export import MODEL_FORMAT, load_model, save_model
from maskcl.reporting import load_runs
from maskcl.training.settings import RUN_EXEMPT, TrainSettings, settings_difference

ROOT = Path(__file__).resolve().parents[1]
MODEL = "results/synthcc/runs/maskcl/groundtruth-silhouette/seed0/model.pt"
RETRAIN = f"rebuild it by retraining this run: snakemake --cores all --forcerun {MODEL}"
#: The run's settings as the plan merges them (the tiny test config's values that matter here).
PLAN = TrainSettings.from_dict(dict(method="maskcl", arch="resnet18", pretrained="none", height=64, width=32,
                                    workers=0, device="cpu")).to_dict()

pristine, ws = upstream.pristine, upstream.ws


def write_model(path: Path, spec: Dict[str, Any], seed: int = 0, **override: Any) -> Path:
    """A self-consistent ``model.pt`` of settings ``spec`` (fresh weights of its arch), as training writes it.

    ``override`` replaces payload keys after the fact (``state_dict=...``, ``input_size=...``; a
    value of ``None`` drops the key) to build malformed files.
    """
    s = TrainSettings.from_dict(spec)
    net = ReIDBackbone(s.arch, pretrained="none", last_stride=s.last_stride, pooling=s.pooling)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(path, method=s.method, arch=s.arch, dim=net.dim, pooling=s.pooling, last_stride=s.last_stride,
               input_size=[s.height, s.width], settings=dict(spec), seed=seed, epochs=s.epochs,
               train_images=10, weights={"state_dict": net.state_dict()})
    if override:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        for k, v in override.items():
            if v is None:
                obj.pop(k)
            else:
                obj[k] = v
        torch.save(obj, path)
    return path


def check(path: str, seed: int = 0) -> None:
    """What the evaluate stage does with a model before it computes anything."""
    _, _, meta = load_model(path)
    check_run_model(path, meta, PLAN, seed)



def write_valid_manifest(path: Path) -> None:
    """A manifest every check passes (its dataset folder exists), so the model is what must be refused."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("path,relpath,split,pid,camid,clothes_id\nimages/a.png,a.png,query,0,0,0\n")
    (path.parent / "images").mkdir(exist_ok=True)

@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)   # the workflow folder: the fix names the relative train target
    return tmp_path


# ------------------------------------------------------------------------------------------ the run's own model
def test_the_runs_own_model_passes(workdir):
    write_model(workdir / MODEL, PLAN)
    check(MODEL)


def test_key_order_does_not_matter_and_the_plans_dict_is_completed_by_its_defaults(workdir):
    write_model(workdir / MODEL, dict(reversed(list(PLAN.items()))))
    _, _, meta = load_model(MODEL)
    check_run_model(MODEL, meta, {k: v for k, v in PLAN.items() if k != "extras"}, 0)   # the plan has no extras


def test_an_older_file_lacking_a_setting_is_refused_even_at_todays_default(workdir, job):
    """``neighbour_weights`` did not exist before a later version: a model trained then did what the
    code did then, not what today's default says, so it is not this run's model."""
    older = {k: v for k, v in PLAN.items() if k != "neighbour_weights"}
    write_model(workdir / MODEL, PLAN, settings=older)
    line = job(lambda smk: check(MODEL))
    assert line == (f"{MODEL}: not this run's model: train.neighbour_weights is not recorded in the file (a model "
                    f"of an older version) but is 'official' in this run's config; {RETRAIN}")


def test_settings_that_cannot_change_the_weights_are_exempt(workdir):
    assert RUN_EXEMPT == ("workers",)
    write_model(workdir / MODEL, {**PLAN, "workers": 12})
    check(MODEL)
    assert settings_difference({**PLAN, "workers": 12}, PLAN) is None
    assert settings_difference({**PLAN, "device": "cuda"}, PLAN).key == "device"   # device is not exempt


# ------------------------------------------------------------------------------------------ class 2: foreign models
@pytest.mark.parametrize("model, seed, says", [
    ({**PLAN, "arch": "resnet34"}, 0,
     "arch is 'resnet34' in the file but 'resnet18' in this run's config (train.arch)"),
    ({**PLAN, "method": "clustercontrast"}, 0,
     "method is 'clustercontrast' in the file but 'maskcl' in this run's config (the experiment's method)"),
    ({**PLAN, "height": 128}, 0,
     "input_size is [128, 32] in the file but [64, 32] in this run's config (train.height, train.width)"),
    ({**PLAN, "pooling": "gem"}, 0, "pooling is 'gem' in the file but 'avg' in this run's config (train.pooling)"),
    ({**PLAN, "last_stride": 2}, 0,
     "last_stride is 2 in the file but 1 in this run's config (train.last_stride)"),
    (PLAN, 3, "seed is 3 in the file but 0 in this run's config (the run's seed)"),
    ({**PLAN, "lr": 0.01}, 0, "train.lr is 0.01 in the file but 0.00035 in this run's config"),
    ({**PLAN, "neighbour_loss": False}, 0,
     "train.neighbour_loss is False in the file but True in this run's config"),
    ({**PLAN, "device": "cuda"}, 0, "train.device is 'cuda' in the file but 'cpu' in this run's config"),
    ({**PLAN, "gone_setting": 1}, 0,
     "train.gone_setting = 1 in the file is not a training setting of this version"),
], ids=["arch", "method", "input_size", "pooling", "last_stride", "seed", "lr", "switch", "device", "unknown"])
def test_a_foreign_model_is_refused_naming_the_first_difference(model, seed, says, workdir, job):
    if "gone_setting" in model:     # a file of another version: TrainSettings cannot build it, so save raw
        write_model(workdir / MODEL, PLAN, settings=model)
    else:
        write_model(workdir / MODEL, model, seed=seed)
    line = job(lambda smk: check(MODEL))
    assert line == f"{MODEL}: not this run's model: {says}; {RETRAIN}"


def test_the_evaluate_stage_refuses_it_and_writes_nothing(workdir, job):
    write_model(workdir / MODEL, {**PLAN, "arch": "resnet34"})
    manifest = workdir / "results/synthcc/manifest.csv"
    write_valid_manifest(manifest)
    out = workdir / Path(MODEL).parent
    run = {"dataset": "synthcc", "experiment": "maskcl", "method": "maskcl", "masks": "groundtruth-silhouette",
           "seed": 0}
    line = job(lambda smk: evaluate_checkpoint("synthcc", manifest, MODEL, out / "metrics.json", out / "ranks.npz",
                                               settings={"device": "cpu"}, run=run, train=PLAN))
    assert line.startswith(f"{MODEL}: not this run's model: arch is 'resnet34' in the file") and line.endswith(RETRAIN)
    assert not (out / "metrics.json").exists() and not (out / "ranks.npz").exists()
    assert sorted(p.name for p in workdir.rglob("*") if p.is_file()) == ["job.log", "manifest.csv", "model.pt"]


# ------------------------------------------------------------------------------------------ class 5: malformed files
RESNET50 = None


def resnet50_weights() -> Dict[str, torch.Tensor]:
    global RESNET50
    if RESNET50 is None:
        RESNET50 = ReIDBackbone("resnet50", pretrained="none").state_dict()
    return RESNET50


@pytest.mark.parametrize("override, says", [
    ({"state_dict": "resnet50"},
     "its weights do not fit its arch resnet18: 27 tensor(s) of another shape, e.g. base.4.0.conv1.weight "
     "[64, 64, 1, 1] where resnet18 has [64, 64, 3, 3]"),
    ({"state_dict": "drop-one"}, "its weights do not fit its arch resnet18: 1 missing tensor(s) ['neck.weight'], "
                                 "0 unexpected []"),
    ({"state_dict": [1, 2]}, "state_dict is not a dict of named tensors"),
    ({"state_dict": {"base.0.weight": "x"}}, "state_dict is not a dict of named tensors"),
    ({"input_size": None, "settings": None}, "metadata lacks input_size, settings"),
    ({"input_size": "64x32"}, "input_size '64x32' is not [height, width] in pixels"),
    ({"input_size": [64, 32.5]}, "input_size [64, 32.5] is not [height, width] in pixels"),
    ({"input_size": [64]}, "input_size [64] is not [height, width] in pixels"),
    ({"last_stride": "1"}, "last_stride '1' is not 1 or 2"),
    ({"arch": "resnet9000"}, "arch 'resnet9000' is not one of the backbones (resnet101, resnet18, resnet34, "
                             "resnet50)"),
    ({"arch": ["resnet18"]}, "arch ['resnet18'] is not one of the backbones (resnet101, resnet18, resnet34, "
                             "resnet50)"),
    ({"pooling": "max"}, "pooling 'max' is not one of avg, gem"),
    ({"method": 3}, "method 3 is not a name"),
    ({"seed": "0"}, "seed '0' is not an integer"),
    ({"settings": ["arch", "resnet18"]}, "settings is a list, not the training settings"),
], ids=["resnet50-weights", "missing-tensor", "weights-list", "weights-str", "missing-keys", "size-str",
        "size-float", "size-short", "stride-str", "arch-unknown", "arch-list", "pooling", "method", "seed", "settings"])
def test_a_malformed_model_is_one_line(override, says, workdir, job):
    if override.get("state_dict") == "resnet50":
        override = {"state_dict": resnet50_weights()}
    elif override.get("state_dict") == "drop-one":
        own = ReIDBackbone("resnet18", pretrained="none").state_dict()
        override = {"state_dict": {k: v for k, v in own.items() if k != "neck.weight"}}
    write_model(workdir / MODEL, PLAN, **override)
    line = job(lambda smk: check(MODEL))
    assert line == f"{MODEL}: malformed {MODEL_FORMAT} file: {says}; {RETRAIN}"


def test_resnet50_weights_under_resnet18_through_the_evaluate_stage(workdir, job):
    """The issue's case, end to end in the stage: a load_state_dict RuntimeError was reported as a bug."""
    write_model(workdir / MODEL, PLAN, state_dict=resnet50_weights())
    manifest = workdir / "manifest.csv"
    write_valid_manifest(manifest)
    out = workdir / Path(MODEL).parent
    line = job(lambda smk: evaluate_checkpoint("synthcc", manifest, MODEL, out / "metrics.json", out / "ranks.npz",
                                               settings={"device": "cpu"}, run={"seed": 0}, train=PLAN))
    assert line.startswith(f"{MODEL}: malformed {MODEL_FORMAT} file: its weights do not fit its arch resnet18")
    assert not (out / "metrics.json").exists()
    with pytest.raises(CheckpointError):
        load_model(MODEL)


# ------------------------------------------------------------------------------------------ the tables stage
def _recorded_train(ws: Dict[str, Any]) -> Dict[str, Any]:
    return json.loads(Path(ws["metrics"][0]).read_text())["provenance"]["config"]["train"]


def _rel_ws(ws: Dict[str, Any], monkeypatch) -> str:
    """Work in the workspace (as the tables job does); return the run folder relative to it."""
    root = Path(ws["tables_dir"]).parents[1]
    monkeypatch.chdir(root)
    return str(Path(ws["metrics"][0]).parent.relative_to(root))


def _planned(settings: Dict[str, Any], dataset: str = "synthcc") -> Dict[str, Any]:
    """The tables rule's ``experiments`` param for the workspace's one experiment (its merged settings)."""
    return {"maskcl": {"method": "maskcl", "masks": "groundtruth-silhouette", "mask_source": "groundtruth",
                       "mask_mode": "silhouette", "train": {}, "settings": {dataset: settings}}}


def test_tables_refuse_an_old_metrics_file_of_a_foreign_model(ws, job, monkeypatch):
    run = _rel_ws(ws, monkeypatch)
    planned = {**_recorded_train(ws), "arch": "resnet18"}   # the workspace's model recorded resnet50
    kw = dict(ws)
    line = job(lambda smk: upstream.build_report(kw.pop("metrics"), experiments=_planned(planned), **kw))
    assert line == (f"{ws['metrics'][0]}: not this run's model: train.arch is 'resnet50' in metrics.json "
                    f"(provenance.config.train, the model's own) but 'resnet18' in the config; rebuild it by "
                    f"retraining this run: snakemake --cores all --forcerun {run}/model.pt")
    upstream.no_outputs(ws)


def test_tables_accept_the_runs_own_settings_and_refuse_unplanned_or_unrecorded_runs(ws, monkeypatch):
    _rel_ws(ws, monkeypatch)
    recorded = _recorded_train(ws)
    (run,) = load_runs(ws["metrics"], _planned({**recorded, "workers": 1}))
    assert run.settings["arch"] == "resnet50"
    with pytest.raises(ReportingError, match=r"experiment maskcl plans no run on dataset synthcc \(planned: ltcc\)"):
        load_runs(ws["metrics"], _planned(recorded, dataset="ltcc"))
    doc = json.loads(Path(ws["metrics"][0]).read_text())
    del doc["provenance"]["config"]["train"]
    Path(ws["metrics"][0]).write_text(json.dumps(doc))
    with pytest.raises(ReportingError, match=r"records no training settings of its model .*forcerun "
                                             r".*/metrics\.json$"):
        load_runs(ws["metrics"], _planned(recorded))


def test_tables_without_the_merged_settings_check_the_experiments_overrides(ws, monkeypatch):
    _rel_ws(ws, monkeypatch)
    ok = {"maskcl": {"method": "maskcl", "train": {"neighbour_loss": True, "eps": 0.6}}}
    assert len(load_runs(ws["metrics"], ok)) == 1
    ssl = {"maskcl": {"method": "maskcl", "train": {"pretrained": "ssl"}}}   # a path in the run: not comparable
    assert len(load_runs(ws["metrics"], ssl)) == 1
    off = {"maskcl": {"method": "maskcl", "train": {"eps": 0.6, "neighbour_loss": False}}}
    with pytest.raises(ReportingError, match=r"not this run's model: train\.neighbour_loss is True in metrics\.json "
                                             r".* but False in the config; rebuild it by retraining this run"):
        load_runs(ws["metrics"], off)


# ------------------------------------------------------------------------------------------ the DAG
@pytest.mark.slow
def test_dag_refuses_a_foreign_model_in_a_run_folder(tmp_path):
    """The issue's case through Snakemake: the evaluate rule passes the plan's settings, and a
    self-consistent resnet34 model.pt placed in a resnet18 run folder stops evaluate with one line."""
    cfg = yaml.safe_load((ROOT / "tests/data/config_tiny.yaml").read_text())
    cfg["experiments"] = {"untrained": {"method": "untrained"}}        # no training time, no masks
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    target = "results/synthcc/runs/untrained/none/seed0/metrics.json"
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(tmp_path / "config.yaml"), "--cores", "2", "--workflow-profile",
           str(ROOT / "profiles" / "default"), target]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = tmp_path / Path(target).parent
    # what the tables rule is told (rules/common.smk experiment_settings) fits what the run recorded
    from maskcl.plan import build_plan

    from maskcl.config import read_config_file, validate_config
    from snakemake.utils import update_config

    used = read_config_file(str(ROOT / "config.yaml"))           # the workflow's base, then --configfile over it
    update_config(used, yaml.safe_load((tmp_path / "config.yaml").read_text()))
    plan = build_plan(validate_config(used))
    planned = {e: {**x.tables_settings(), "settings": {"synthcc": plan.run("synthcc", e, 0).train_settings()}}
               for e, x in plan.experiments.items()}
    (loaded,) = load_runs([run / "metrics.json"], planned)
    assert loaded.settings["arch"] == "resnet18"
    own = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
    shutil.copy(run / "model.pt", tmp_path / "own.pt")
    write_model(run / "model.pt", {**own["settings"], "arch": "resnet34"})   # self-consistent, another arch
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    errors = [line for line in out.splitlines() if line.startswith("ERROR: ")]
    model = "results/synthcc/runs/untrained/none/seed0/model.pt"
    assert errors == [f"ERROR: {model}: not this run's model: arch is 'resnet34' in the file but 'resnet18' in "
                      f"this run's config (train.arch); rebuild it by retraining this run: snakemake --cores all "
                      f"--forcerun {model}"], out
    assert "Traceback" not in out
    assert not (run / "metrics.json").exists() and not (run / "ranks.npz").exists()
    shutil.copy(tmp_path / "own.pt", run / "model.pt")                     # the run's own model evaluates again
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0 and (run / "metrics.json").is_file(), proc.stderr[-3000:]
