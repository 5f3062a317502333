"""Configuration faults caught at start-up: override blocks meet the schema, cross-key rules hold.

Every case copies the shipped ``config.yaml``, breaks one thing, and expects one ``ConfigError`` line
that names the key path as the user wrote it and says how to fix it, before any job runs.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict

import pytest
import yaml
from snakemake.utils import update_config

from maskcl.config import (check_rules, check_train_rules, check_working_config, load_config, main,
                           read_config_file, train_origins, train_settings, validate_config)
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

def test_overriding_one_dataset_keeps_every_other_official_preset():
    from maskcl.config import train_origins, train_settings

    cfg = validate_config(_broken(lambda c: c.update(datasets=["synthcc", "ltcc", "prcc"],
                                                      dataset_overrides={"ltcc": {"train": {"allknn": 4}}})))
    # the user's key wins; the other key of the same preset (iters) and the other datasets' presets stay
    ltcc = train_settings(cfg, "ltcc", "maskcl")
    assert (ltcc["allknn"], ltcc["iters"]) == (4, 200)
    assert train_settings(cfg, "prcc", "maskcl")["allknn"] == 5
    assert train_settings(cfg, "synthcc", "maskcl")["allknn"] == 3
    # a preset key is named by the key that changes it; the top-level train is under every preset
    cfg["train"]["allknn"] = 7
    assert train_settings(cfg, "prcc", "maskcl")["allknn"] == 5
    assert train_origins(cfg, "prcc", "maskcl")["allknn"] == "dataset_overrides.prcc.train.allknn"
    assert train_origins(cfg, "prcc", "maskcl")["lr"] == "train.lr"


def test_wrong_type_in_experiment_override():
    msg = _error(_broken(_experiment({"epochs": "ten"})))
    assert msg.startswith("config.yaml: key experiments.maskcl.train.epochs: 'ten' is not of type 'integer'")
    assert msg.endswith("allowed: an integer >= 1")


def test_experiment_block_without_method_says_which_key_to_add():
    # a user writing only the override they want: the block replaces the default experiment whole
    msg = _error(_broken(lambda c: c.update(experiments={"maskcl": {"train": {"epochs": 2}}})))
    assert msg.startswith("config.yaml: key experiments.maskcl: 'method' is a required property; add the key method "
                          "(one of maskcl, clustercontrast, cacl, spcl, ise, supervised, untrained) to that block")


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
    assert "use one of celebreid, celebreid_light, custom, deepchange, ltcc, prcc, synthcc, vcclothes" in msg


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
    msg = _error(_broken(_experiment({"eps_gap": 0.6}, name="cc", method="clustercontrast")))  # no refinement
    assert "method clustercontrast does not read eps_gap (only maskcl, cacl, spcl does)" in msg
    _start_up(_broken(_experiment({"eps_gap": 0.6, "refine": False})))
    # a method whose tight DBSCAN always runs (no refine switch) is held to the rule whenever it reads eps_gap
    msg = _error(_broken(_experiment({"eps_gap": 0.6}, name="sp", method="spcl")))
    assert msg.endswith("key experiments.sp.train.eps_gap (0.6) must be smaller than train.eps (0.6): SpCL's "
                        "tight DBSCAN runs at eps - eps_gap, which must be > 0; lower experiments.sp.train.eps_gap "
                        "below 0.6 (run synthcc/sp)")
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


# ---------------------------------------------------------------- methods: their facts (maskcl.methods)

def test_unknown_method_names_the_allowed_ones():
    msg = _error(_broken(_experiment({}, name="x", method="nosuch")))
    assert msg == ("config.yaml: key experiments.x.method: 'nosuch' is not one of ['maskcl', 'clustercontrast', "
                   "'cacl', 'spcl', 'ise', 'supervised', 'untrained']; allowed: one of maskcl, clustercontrast, cacl, "
                   "spcl, ise, supervised, untrained")


def test_component_switch_of_another_method_is_refused():
    msg = _error(_broken(_experiment({"refine": False}, name="cc", method="clustercontrast")))
    assert msg == ("config.yaml: key experiments.cc.train.refine: method clustercontrast has no component switch "
                   "refine (a switch of maskcl); remove the key or change experiments.cc.method; allowed switches of "
                   "clustercontrast: none")
    msg = _error(_broken(_experiment({"cluster_on": "fused"}, name="bound", method="supervised")))
    assert msg.startswith("config.yaml: key experiments.bound.train.cluster_on: method supervised has no component "
                          "switch cluster_on")
    # its own method's switch, or a switch set for every method (top level, dataset presets), is fine
    _start_up(_broken(_experiment({"refine": False, "cluster_on": "fused"})))
    plan = _start_up(_broken(lambda c: c["train"].update(refine=False)))
    assert plan.run("synthcc", "clustercontrast", 0).settings["refine"] is False


def test_a_key_only_other_methods_read_is_refused():
    msg = _error(_broken(_experiment({"focal_gamma": 2.0}, name="cc", method="clustercontrast")))
    assert msg == ("config.yaml: key experiments.cc.train.focal_gamma: method clustercontrast does not read "
                   "focal_gamma (only maskcl, cacl does); remove the key or change experiments.cc.method; the "
                   "method-specific keys clustercontrast reads: none")
    # its own method's key, a key every method reads, or one set for every method is fine
    _start_up(_broken(_experiment({"focal_gamma": 2.0, "lr": 1e-4})))
    plan = _start_up(_broken(lambda c: c["train"].update(focal_gamma=2.0)))
    assert plan.run("synthcc", "clustercontrast", 0).settings["focal_gamma"] == 2.0


def test_mask_method_without_its_mask_source():
    msg = _error(_broken(lambda c: c.update(masks={"sources": ["groundtruth"], "train_source": "schp"})))
    assert msg == ("masks.train_source is 'schp' but masks.sources is ['groundtruth'], and experiments.maskcl (method "
                   "maskcl) trains on the masks of masks.train_source; add schp to masks.sources or set "
                   "masks.train_source to one of groundtruth")
    # without a method that consumes masks, masks.train_source is never read
    rgb_only = _broken(lambda c: c.update(masks={"sources": ["groundtruth"], "train_source": "schp"},
                                          experiments={"clustercontrast": {"method": "clustercontrast"}}))
    assert [r.masks for r in _start_up(rgb_only).all_runs()] == ["none"]


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
    cfg = read_config_file(str(ROOT / "config.yaml"))  # each file read as the start-up reads it (strictly)
    for name in (extra or "").split():
        # merged in order over config.yaml, as the workflow merges --configfile files (the tests' tiny config too)
        update_config(cfg, read_config_file(str(ROOT / name)))
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
    (_experiment({}, name="x", method="nosuch"),  # a method that is not registered
     "key experiments.x.method: 'nosuch' is not one of ['maskcl', 'clustercontrast', 'cacl', 'spcl', 'ise', "
     "'supervised', 'untrained']; allowed: one of maskcl, clustercontrast, cacl, spcl, ise, supervised, untrained"),
    (_experiment({"refine": False}, name="cc", method="clustercontrast"),  # another method's switch
     "key experiments.cc.train.refine: method clustercontrast has no component switch refine (a switch of maskcl); "
     "remove the key or change experiments.cc.method; allowed switches of clustercontrast: none"),
    (lambda c: c.update(masks={"sources": ["groundtruth"], "train_source": "schp"}),  # a mask method, no source
     "masks.train_source is 'schp' but masks.sources is ['groundtruth'], and experiments.maskcl (method maskcl) "
     "trains on the masks of masks.train_source; add schp to masks.sources or set masks.train_source to one of "
     "groundtruth"),
], ids=["override-bounds", "cross-key", "plan", "unknown-method", "foreign-switch", "mask-method-no-source"])
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


# ------------------------------------------------------------------ config files: syntax, shape, keys twice

def _file(tmp_path: Path, text: str, name: str = "x.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _read_error(path: str) -> str:
    with pytest.raises(ConfigError) as err:
        read_config_file(path)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("text, start", [
    ("seeds: [0\ntrain: {epochs: 2}\n",
     ":2: not valid YAML: expected ',' or ']', but got ':' (while parsing a flow sequence at line 1); fix the syntax"),
    ("train:\n  epochs: 2\n\titers: 3\n", ":3: not valid YAML: found character '\\t' that cannot start any token"),
    ('data:\n  root: "resources\n', ":3: not valid YAML: found unexpected end of stream (while scanning a quoted "
                                    "scalar at line 2)"),
    ("- seeds\n- train\n", ":1: the top level is a list (remove the leading '- '), not a mapping of keys; a config "
                            "file is `key: value` lines at the top level, e.g. `seeds: [0]`"),
    ("seeds\n", ":1: the top level is a single value ('seeds'), not a mapping of keys"),
    ("# only a comment\n", ": the file holds no keys; a config file is `key: value` lines at the top level"),
], ids=["unclosed-bracket", "tab", "unclosed-quote", "list", "scalar", "empty"])
def test_config_file_problem_names_the_file_and_line(tmp_path, text, start):
    path = _file(tmp_path, text)
    assert _read_error(path).startswith(path + start)


def test_key_written_twice_names_both_lines(tmp_path):
    path = _file(tmp_path, "seeds: [0]\ntrain:\n  epochs: 2\nseeds: [1]\n")
    assert _read_error(path) == (f"{path}:4: key seeds is written twice (first at line 1); YAML keeps only the last, "
                                 f"so the one at line 1 would be dropped without a word; merge them into one")
    path = _file(tmp_path, "experiments:\n  maskcl: {method: maskcl}\n  cc: {method: clustercontrast}\n"
                           "  maskcl:\n    method: maskcl\n    train: {epochs: 3, epochs: 4}\n")
    assert _read_error(path).startswith(f"{path}:4: key experiments.maskcl is written twice (first at line 2)")
    path = _file(tmp_path, "train: {epochs: 3, iters: 2, epochs: 4}\n")
    assert _read_error(path).startswith(f"{path}:1: key train.epochs is written twice (first at line 1)")
    # keys merged in from an anchor are overridden, not written twice (configs/synthcc_headroom.yaml does this)
    path = _file(tmp_path, "experiments:\n  a: {method: supervised, train: &t {epochs: 2, iters: 3}}\n"
                           "  b: {method: supervised, train: {<<: *t, epochs: 4}}\n")
    assert read_config_file(path)["experiments"]["b"]["train"] == {"epochs": 4, "iters": 3}
    # JSON, which Snakemake also reads
    path = _file(tmp_path, json.dumps({"seeds": [0]})[:-1] + ', "seeds": [1]}', "x.json")
    assert "key seeds is written twice" in _read_error(path)


def test_every_shipped_config_file_is_read_as_written(tmp_path):
    files = [ROOT / "config.yaml", *sorted((ROOT / "configs").glob("*.yaml")), ROOT / "tests/data/config_tiny.yaml"]
    for f in files:
        assert read_config_file(str(f)) == yaml.safe_load(f.read_text()), f


def test_config_checker_names_file_and_line(tmp_path, capsys):
    good = _file(tmp_path, "seeds: [0]\n", "good.yaml")
    bad = _file(tmp_path, "seeds: [0\n", "bad.yaml")
    assert main([good, bad]) == 1
    out = capsys.readouterr()
    assert out.err.splitlines() == [f"ERROR: {bad}:2: not valid YAML: expected ',' or ']', but got '<stream end>' "
                                    f"(while parsing a flow sequence at line 1); fix the syntax there: often an "
                                    f"unclosed bracket or quote, a tab in the indentation, or a ': ' inside an "
                                    f"unquoted value (quote it)"]
    assert out.out.startswith(f"{good}: readable")
    assert main([good]) == 0


# ----------------------------------------------------------------- the working directory's config.yaml

def test_working_directory_config_that_would_not_be_read_is_refused(tmp_path):
    base = _file(tmp_path, "seeds: [0]\n", "base.yaml")
    work = tmp_path / "wd"
    work.mkdir()
    check_working_config(str(work), base, [])  # none there
    local = _file(work, "seeds: [0]\n", "config.yaml")
    check_working_config(str(work), base, [])  # a byte-identical copy: nothing is lost
    Path(local).write_text("seeds: [5]\n")
    check_working_config(str(work), base, [local])  # passed with --configfile
    check_working_config(str(work), local, [])  # it is the base (the working directory is the Snakefile's)
    with pytest.raises(ConfigError) as err:
        check_working_config(str(work), base, [str(tmp_path / "other.yaml")])
    assert str(err.value) == (f"{local}: this working directory's config.yaml is not read: a run reads {base} "
                              f"(beside the Snakefile) and the --configfile files merged over it; to use it, pass "
                              f"--configfile {local} (or move it out of the working directory)")


# ------------------------------------------------------------------------------ values set by --config

def _with_command_line(*entries: str):
    """The merged config and the --config values, exactly as Snakemake builds them."""
    from snakemake.cli import parse_config

    given = parse_config(list(entries))
    cfg = copy.deepcopy(DEFAULT)
    update_config(cfg, given)
    return cfg, given


def test_nested_command_line_values_are_read_as_yaml():
    cfg, given = _with_command_line("train={epochs: 3, amp: off, erasing: 0.25, refine: false}", "seeds=[1, 2]",
                                    "masks={schp: {sha256: null}}",
                                    "experiments={cc2: {method: clustercontrast, train: {pooling: gem}}}")
    sent = copy.deepcopy(given)
    plan = build_plan(validate_config(cfg, command_line=given))
    s = plan.run("synthcc", "maskcl", 2).settings
    assert (s["epochs"], s["amp"], s["erasing"], s["refine"]) == (3, "off", 0.25, False)  # amp: text, as written
    assert s["iters"] == DEFAULT["train"]["iters"]  # merged into the file's train section, not replacing it
    assert cfg["seeds"] == [1, 2] and cfg["masks"]["schp"]["sha256"] is None
    assert plan.run("synthcc", "cc2", 1).settings["pooling"] == "gem"
    assert given == sent  # Snakemake hands its own copy on to its jobs


@pytest.mark.parametrize("entry, line", [
    ("train={epochs: 0}", "--config: key train.epochs: 0 is less than the minimum of 1; allowed: an integer >= 1"),
    ("experiments={maskcl: {method: maskcl, train: {k1: 1}}}",
     "--config: key experiments.maskcl.train.k1: 1 is less than the minimum of 2"),
    ("train={epoch: 3}", "--config: key train: Additional properties are not allowed ('epoch' was unexpected)"),
    ("train={epochs: 3", "--config: key train: '{epochs: 3' is not of type 'object'; allowed: a mapping; on the "
                         "command line a nested value is YAML in one argument, e.g. --config "
                         "'train={epochs: 3, iters: 9}' 'seeds=[0, 1]'; or put the keys in a --configfile"),
    ("seeds=0", "--config: key seeds: 0 is not of type 'array'; allowed: a list; on the command line"),
], ids=["value", "override", "unknown-key", "not-yaml", "not-a-list"])
def test_command_line_error_blames_the_command_line(entry, line):
    cfg, given = _with_command_line(entry)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, source="config.yaml", command_line=given)
    assert str(err.value).startswith(line)


def test_file_error_still_blames_the_file_next_to_command_line_values():
    cfg, given = _with_command_line("seeds=[1]")
    cfg["train"]["epochs"] = 0
    with pytest.raises(ConfigError, match=r"^config\.yaml: key train\.epochs: 0 is less than the minimum of 1"):
        validate_config(cfg, source="config.yaml", command_line=given)


# --------------------------------------------------------------- the Snakefile's start-up: which config

def _smk(work: Path, *args: str, snakefile: Path = ROOT / "Snakefile") -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(work), "--cores", "1",
           "--workflow-profile", str(ROOT / "profiles" / "default"), "-n", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=work)


def _one_error_line(proc: subprocess.CompletedProcess, work: Path) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    errors = [line for line in out.splitlines() if "ERROR" in line or "Error" in line]
    assert len(errors) == 1 and errors[0].startswith("ERROR: "), out
    assert "Traceback" not in out
    assert not (work / "results").exists()
    return errors[0][len("ERROR: "):]


def test_directory_run_reads_the_repository_config(tmp_path):
    """`--directory D --configfile X` with no D/config.yaml: config.yaml beside the Snakefile is the base (it was
    skipped, and the run planned the schema defaults: ResNet-50, SCHP masks, other experiments)."""
    work = tmp_path / "wd"
    work.mkdir()
    overlay = _file(tmp_path, "seeds: [7]\n", "overlay.yaml")
    proc = _smk(work, "--configfile", overlay)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "results/synthcc/masks/groundtruth/index.csv" in out and "schp" not in out  # config.yaml's masks
    assert "results/synthcc/runs/clustercontrast/none/seed7/model.pt" in out  # with the overlay's seed
    proc = _smk(work)  # no --configfile at all: config.yaml beside the Snakefile, not "missing D/config.yaml"
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_working_directory_config_not_passed_stops_start_up(tmp_path):
    work = tmp_path / "wd"
    work.mkdir()
    (work / "config.yaml").write_text("seeds: [5]\n")
    line = _one_error_line(_smk(work), work)
    assert line.startswith(f"{work}/config.yaml: this working directory's config.yaml is not read: a run reads "
                           f"{ROOT}/config.yaml (beside the Snakefile)")
    assert line.endswith(f"pass --configfile {work}/config.yaml (or move it out of the working directory)")
    proc = _smk(work, "--configfile", str(work / "config.yaml"))
    assert proc.returncode == 0 and "seed5/model.pt" in proc.stdout + proc.stderr
    shutil.copy(ROOT / "config.yaml", work / "config.yaml")  # an identical copy changes nothing
    assert _smk(work).returncode == 0


def test_key_written_twice_in_a_configfile_stops_start_up(tmp_path):
    work = tmp_path / "wd"
    work.mkdir()
    overlay = _file(tmp_path, "train:\n  epochs: 2\n  iters: 3\ntrain:\n  epochs: 4\n", "overlay.yaml")
    line = _one_error_line(_smk(work, "--configfile", overlay), work)
    assert line.startswith(f"{overlay}:4: key train is written twice (first at line 1)")


def _checkout(tmp_path: Path, config_text: str) -> Path:
    """A copy of the workflow files with another config.yaml beside the Snakefile (the package is the same)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "Snakefile", repo)
    for d in ("rules", "report", "workflow_scripts", "envs"):
        shutil.copytree(ROOT / d, repo / d)
    (repo / "config.yaml").write_text(config_text)
    return repo


@pytest.mark.parametrize("text, line", [
    ("seeds: [0\ntrain: {epochs: 2}\n", "config.yaml:2: not valid YAML: expected ',' or ']', but got ':'"),
    ("- seeds\n- train\n", "config.yaml:1: the top level is a list (remove the leading '- ')"),
    ("seeds: [0]\nseeds: [1]\n", "config.yaml:2: key seeds is written twice (first at line 1)"),
], ids=["syntax", "list", "twice"])
def test_broken_base_config_names_file_and_line(tmp_path, text, line):
    repo = _checkout(tmp_path, text)
    assert _one_error_line(_smk(repo, snakefile=repo / "Snakefile"), repo).startswith(line)


def test_broken_configfile_is_refused_before_the_workflow_starts(tmp_path):
    """Snakemake reads --configfile files itself, before this workflow runs: it refuses a broken one (no run, no
    file written) in its own words, which name no file; `python -m maskcl.config` names the file and line."""
    work = tmp_path / "wd"
    work.mkdir()
    overlay = _file(tmp_path, "train:\n  epochs: [2\n", "overlay.yaml")
    proc = _smk(work, "--configfile", overlay)
    assert proc.returncode != 0 and not (work / "results").exists()
    checker = subprocess.run([sys.executable, "-m", "maskcl.config", overlay], capture_output=True, text=True,
                             timeout=300)
    assert checker.returncode == 1
    assert checker.stderr.splitlines()[0].startswith(f"ERROR: {overlay}:3: not valid YAML"), checker.stderr


@pytest.mark.parametrize("args, line", [
    (["train={epochs: 0}"], "--config: key train.epochs: 0 is less than the minimum of 1"),
    (["train={epochs: 3"], "--config: key train: '{epochs: 3' is not of type 'object'"),
], ids=["value", "not-yaml"])
def test_command_line_values_at_start_up(tmp_path, args, line):
    work = tmp_path / "wd"
    work.mkdir()
    assert _one_error_line(_smk(work, "--config", *args), work).startswith(line)


def test_nested_command_line_values_plan_the_runs(tmp_path):
    work = tmp_path / "wd"
    work.mkdir()
    proc = _smk(work, "--config", "seeds=[3, 4]", "train={epochs: 3}", "--quiet", "rules")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    assert counts["train"] == "4"  # 2 experiments x seeds 3 and 4
