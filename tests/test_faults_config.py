"""Configuration faults caught at start-up: override blocks meet the schema, cross-key rules hold.

Every case copies the shipped ``config.yaml``, breaks one thing, and expects one ``ConfigError`` line
that names the key path as the user wrote it and says how to fix it, before any job runs.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict

import pytest
import yaml
from snakemake.utils import update_config

from maskcl.config import (check_rules, check_train_rules, load_config, train_origins, train_settings,
                           validate_config)
from maskcl.errors import ConfigError
from maskcl.plan import build_plan

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((ROOT / "config.yaml").read_text())


def _broken(change: Callable[[Dict[str, Any]], None]) -> Dict[str, Any]:
    cfg = copy.deepcopy(DEFAULT)
    change(cfg)
    return cfg


def _start_up(cfg: Dict[str, Any]) -> Any:
    """What rules/common.smk runs at parse time: validation, then the plan."""
    return build_plan(validate_config(cfg))


def _error(cfg: Dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as err:
        _start_up(cfg)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def _experiment(train: Dict[str, Any], name: str = "maskcl", method: str = "maskcl") -> Callable:
    def change(cfg: Dict[str, Any]) -> None:
        cfg["experiments"] = {name: {"method": method, "train": train}, "clustercontrast": {"method": "clustercontrast"}}
    return change


def _dataset_override(dataset: str, block: Dict[str, Any]) -> Callable:
    def change(cfg: Dict[str, Any]) -> None:
        cfg["dataset_overrides"] = {dataset: block}
    return change


# ------------------------------------------------------------------------- override sections, schema

def test_wrong_type_in_experiment_override():
    msg = _error(_broken(_experiment({"epochs": "ten"})))
    assert msg.startswith("config.yaml: key experiments.maskcl.train.epochs: 'ten' is not of type 'integer'")
    assert msg.endswith("allowed: an integer >= 1")


def test_experiment_block_without_method_says_which_key_to_add():
    # a user writing only the override they want: the block replaces the default experiment whole
    msg = _error(_broken(lambda c: c.update(experiments={"maskcl": {"train": {"epochs": 2}}})))
    assert msg.startswith("config.yaml: key experiments.maskcl: 'method' is a required property; add the key method "
                          "(one of maskcl, clustercontrast, supervised, untrained) to that block")


def test_float_for_an_integer_key_is_refused():
    # JSON Schema's integer admits 16.0, which the training loop's range() would refuse mid-DAG
    msg = _error(_broken(_experiment({"epochs": 3.0})))
    assert msg == "config.yaml: key experiments.maskcl.train.epochs: 3.0 is not of type 'integer'; " \
                  "allowed: an integer >= 1"
    msg = _error(_broken(lambda c: c["train"].update(batch_size=32.0)))
    assert msg.startswith("config.yaml: key train.batch_size: 32.0 is not of type 'integer'; allowed: an integer >= 2")


def test_unknown_key_in_experiment_override_names_its_path():
    msg = _error(_broken(_experiment({"epoch": 3})))
    assert "unknown key(s) ['epoch'] at experiments.maskcl.train.epoch; known keys: allknn, amp," in msg
    msg = _error(_broken(_experiment({"method": "supervised"})))  # ignored before: the method comes from .method
    assert "at experiments.maskcl.train.method (the method is set by experiments.maskcl.method)" in msg


def test_out_of_bounds_value_in_dataset_override():
    msg = _error(_broken(_dataset_override("synthcc", {"train": {"lr": 0}})))
    assert "key dataset_overrides.synthcc.train.lr: 0 is less than or equal to the minimum of 0" in msg
    assert msg.endswith("allowed: a number > 0")


def test_preset_of_a_dataset_not_run_is_checked_too():
    msg = _error(_broken(_dataset_override("ltcc", {"train": {"erasing": 1.5}})))
    assert "key dataset_overrides.ltcc.train.erasing: 1.5 is greater than the maximum of 1" in msg
    assert "allowed: a number >= 0 and <= 1" in msg


def test_bad_enum_value_in_override():
    msg = _error(_broken(_experiment({"pooling": "max"})))
    assert "key experiments.maskcl.train.pooling: 'max' is not one of" in msg
    assert msg.endswith("allowed: one of avg, gem")
    msg = _error(_broken(_dataset_override("synthcc", {"train": {"amp": False}})))  # YAML's bare off
    assert "key dataset_overrides.synthcc.train.amp: False is not of type 'string'" in msg
    assert 'allowed: one of "off", bf16, fp16' in msg and "quote it" in msg


def test_experiment_override_beats_dataset_override_in_the_message():
    cfg = _broken(_dataset_override("synthcc", {"train": {"k1": 1}}))
    _experiment({"k1": 0})(cfg)
    msg = _error(cfg)
    assert "key experiments.maskcl.train.k1: 0 is less than the minimum of 2" in msg  # the effective value
    assert "1 more problem(s)" in msg  # clustercontrast still gets dataset_overrides.synthcc.train.k1


def test_top_level_value_names_the_top_level_path():
    msg = _error(_broken(lambda c: c["train"].update(epochs=0)))
    assert msg.startswith("config.yaml: key train.epochs: 0 is less than the minimum of 1; allowed: an integer >= 1")


def test_unknown_dataset_in_dataset_overrides():
    msg = _error(_broken(_dataset_override("market1501", {"train": {"iters": 10}})))
    assert "key dataset_overrides.market1501: 'market1501' is not a registered dataset" in msg
    assert "use one of celebreid, celebreid_light, deepchange, ltcc, prcc, synthcc, vcclothes" in msg


def test_unknown_section_and_key_in_dataset_override():
    msg = _error(_broken(_dataset_override("synthcc", {"evaluate": {"flip": True}})))
    assert "key dataset_overrides.synthcc: Additional properties are not allowed ('evaluate' was unexpected)" in msg
    assert msg.endswith("known keys: train")
    msg = _error(_broken(_dataset_override("prcc", {"train": {"epoch": 3}})))
    assert "key dataset_overrides.prcc.train.epoch: unknown train key; known keys: allknn, amp," in msg


# ------------------------------------------------------------------------------------ cross-key rules

def test_batch_not_divisible_by_instances_from_top_level():
    msg = _error(_broken(lambda c: c["train"].update(batch_size=30)))
    assert msg.startswith("config.yaml: key train.batch_size (30) must be divisible by train.num_instances (4)")
    assert "set train.batch_size to a multiple of 4 (e.g. 28 or 32)" in msg


def test_batch_not_divisible_by_instances_from_override():
    msg = _error(_broken(_experiment({"num_instances": 5})))
    assert "key train.batch_size (64) must be divisible by experiments.maskcl.train.num_instances (5)" in msg
    assert "multiple of 5 (e.g. 60 or 65)" in msg and "(run synthcc/maskcl)" in msg
    msg = _error(_broken(_dataset_override("synthcc", {"train": {"batch_size": 2}})))
    assert "key dataset_overrides.synthcc.train.batch_size (2) must be divisible by train.num_instances (4)" in msg
    assert "multiple of 4 (e.g. 4)" in msg


@pytest.mark.parametrize("key", ["epochs", "iters"])
@pytest.mark.parametrize("where", ["experiment", "dataset"])
def test_schedule_that_trains_nothing(key, where):
    change = (_experiment({key: 0}) if where == "experiment"
              else _dataset_override("synthcc", {"train": {key: 0}}))
    path = f"experiments.maskcl.train.{key}" if where == "experiment" else f"dataset_overrides.synthcc.train.{key}"
    msg = _error(_broken(change))
    assert f"key {path}: 0 is less than the minimum of 1; allowed: an integer >= 1" in msg


def test_schedule_rule_itself_names_both_keys():
    cfg = validate_config(copy.deepcopy(DEFAULT))
    settings = dict(train_settings(cfg, "synthcc", "maskcl"), iters=0)  # as if the schema had let it through
    epochs = settings["epochs"]
    with pytest.raises(ConfigError, match=re.escape("key train.iters (0): the schedule train.epochs x train.iters = "
                                                    f"{epochs} x 0 makes no optimisation step, yet model.pt would be "
                                                    "written; set train.iters to 1 or more")):
        check_train_rules(settings, train_origins(cfg, "synthcc", "maskcl"), "maskcl")


def test_refinement_eps_gap_must_stay_below_eps():
    msg = _error(_broken(_experiment({"eps_gap": 0.6})))
    assert "key experiments.maskcl.train.eps_gap (0.6) must be smaller than train.eps (0.6)" in msg
    assert "set train.refine: false" in msg
    _start_up(_broken(_experiment({"eps_gap": 0.6}, name="cc", method="clustercontrast")))  # no refinement: fine
    _start_up(_broken(_experiment({"eps_gap": 0.6, "refine": False})))
    msg = _error(_broken(_experiment({"eps": 1.0})))  # the clustering refuses eps = 1
    assert "key experiments.maskcl.train.eps: 1.0 is greater than or equal to the maximum of 1" in msg


def test_process_layout_rules_run_at_start_up():
    msg = _error(_broken(_experiment({"world_size": 3})))
    assert "key train.batch_size (64) must be divisible by experiments.maskcl.train.world_size (3)" in msg
    msg = _error(_broken(_dataset_override("synthcc", {"train": {"bn_groups": 3}})))
    assert "key train.batch_size (64) must be divisible by the 3 BatchNorm groups of " \
           "dataset_overrides.synthcc.train.bn_groups/train.world_size" in msg
    msg = _error(_broken(_experiment({"world_size": 2, "bn_groups": 3, "batch_size": 48})))
    assert "key experiments.maskcl.train.bn_groups (3) must be 1 or a multiple of " \
           "experiments.maskcl.train.world_size (2)" in msg
    msg = _error(_broken(_experiment({"world_size": 2, "device": "cuda:1"})))
    assert "key experiments.maskcl.train.device (cuda:1) is one GPU but experiments.maskcl.train.world_size (2)" in msg
    msg = _error(_broken(_experiment({"world_size": 2, "device": "cpu", "dist_backend": "nccl"})))
    assert "key experiments.maskcl.train.dist_backend (nccl) needs GPUs" in msg


def test_evaluate_and_tables_rules():
    msg = _error(_broken(lambda c: c["evaluate"].update(rerank=True, rerank_k1=3, rerank_k2=6)))
    assert "key evaluate.rerank_k2 (6) must be at most evaluate.rerank_k1 + 1 = 4" in msg
    _start_up(_broken(lambda c: c["evaluate"].update(rerank=False, rerank_k1=3, rerank_k2=6)))  # unused: fine
    msg = _error(_broken(lambda c: c.update(tables={"topk_grid": 12})))
    assert "key tables.topk_grid (12) exceeds evaluate.topk (10)" in msg and "lower tables.topk_grid to 10" in msg


# ------------------------------------------------------------------------------------ what still passes

def test_valid_overrides_still_pass_and_take_effect():
    cfg = _broken(_dataset_override("synthcc", {"train": {"iters": 20, "lr": 0.001}}))
    _experiment({"epochs": 3, "num_instances": 8, "amp": "off", "eps_gap": 0.1})(cfg)
    plan = _start_up(cfg)
    s = plan.run("synthcc", "maskcl", 0).settings
    assert (s["epochs"], s["iters"], s["lr"], s["num_instances"], s["amp"]) == (3, 20, 0.001, 8, "off")
    assert plan.run("synthcc", "clustercontrast", 0).settings["epochs"] == DEFAULT["train"]["epochs"]
    check_rules(cfg)  # idempotent on a validated config


@pytest.mark.parametrize("extra", [None, "configs/synthcc_ablation.yaml", "configs/synthcc_benchmark.yaml",
                                   "configs/synthcc_benchmark.yaml configs/synthcc_variant.yaml",
                                   "configs/synthcc_benchmark.yaml configs/synthcc_variant.yaml configs/synthcc_switches.yaml",
                                   "configs/synthcc_benchmark.yaml configs/synthcc_variant.yaml configs/synthcc_switches.yaml"
                                   " configs/synthcc_paper_scale.yaml",
                                   "configs/synthcc_benchmark.yaml configs/synthcc_headroom.yaml",
                                   "tests/data/config_tiny.yaml"])
def test_shipped_configs_validate(extra, tmp_path):
    cfg = copy.deepcopy(DEFAULT)
    for name in (extra or "").split():
        layer = yaml.safe_load((ROOT / name).read_text())
        if name.startswith("configs/"):  # overlays: merged in order, as snakemake --configfile merges them
            update_config(cfg, layer)
        else:                            # the tests' tiny config is a working directory's own config.yaml
            cfg.update(layer)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    build_plan(load_config(str(path)))
    validate_config({})  # the schema defaults (official presets of every dataset) are consistent


# ---------------------------------------------------------------------------- the Snakefile's start-up

@pytest.mark.parametrize("change, line", [
    (_dataset_override("synthcc", {"train": {"lr": -1}}),  # validate_config
     "key dataset_overrides.synthcc.train.lr: -1 is less than or equal to the minimum of 0; allowed: a number > 0"),
    (_experiment({"num_instances": 5}),  # a cross-key rule
     "key train.batch_size (64) must be divisible by experiments.maskcl.train.num_instances (5)"),
    (_experiment({"nosuch": 1}),  # build_plan
     "unknown key(s) ['nosuch'] at experiments.maskcl.train.nosuch"),
], ids=["override-bounds", "cross-key", "plan"])
def test_snakemake_dry_run_fails_with_one_line_before_any_job(tmp_path, change, line):
    cfg = _broken(change)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(tmp_path / "config.yaml"), "--cores", "1", "--workflow-profile",
           str(ROOT / "profiles" / "default"), "-n"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    errors = [line for line in out.splitlines() if "ERROR" in line or "Error" in line]
    assert len(errors) == 1, out
    assert errors[0].startswith("ERROR: ") and line in errors[0], out
    assert "Traceback" not in out
    assert not (tmp_path / "results").exists()
