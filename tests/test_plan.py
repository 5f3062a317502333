"""The run plan (maskcl.plan): one record per run, built once from the config; paths written, never parsed."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any, Dict

import pytest
import yaml

from maskcl.config import train_settings, validate_config
from maskcl.errors import ConfigError
from maskcl.plan import (FIGURE_KINDS, FIGURES, TABLE_STEMS, TABLES, build_plan, ground_truth_datasets,
                         masks_component)

ROOT = Path(__file__).resolve().parents[1]


def _config(**changes: Any) -> Dict[str, Any]:
    """config.yaml with top-level keys replaced, validated (defaults filled) as the Snakefile does."""
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg.update(copy.deepcopy(changes))
    return validate_config(cfg)


def test_one_record_per_run_with_its_paths_and_settings():
    cfg = _config(seeds=[0, 2])
    plan = build_plan(cfg)
    assert list(plan.runs) == [("synthcc", "maskcl", 0), ("synthcc", "maskcl", 2),
                               ("synthcc", "clustercontrast", 0), ("synthcc", "clustercontrast", 2)]
    run = plan.run("synthcc", "maskcl", "2", masks="groundtruth-silhouette")   # wildcards are strings
    assert (run.method, run.mask_source, run.mask_mode, run.warmup) == ("maskcl", "groundtruth", "silhouette", None)
    assert run.masks == "groundtruth-silhouette"
    assert run.run_dir == "results/synthcc/runs/maskcl/groundtruth-silhouette/seed2"
    assert run.state_dir == "results/synthcc/state/maskcl/groundtruth-silhouette/seed2"
    assert run.mask_index == "results/synthcc/masks/groundtruth/index.csv"
    assert run.file("metrics.json") == f"{run.run_dir}/metrics.json"
    assert run.train_settings() == train_settings(cfg, "synthcc", "maskcl")
    assert run.identity() == {"dataset": "synthcc", "experiment": "maskcl", "method": "maskcl",
                              "masks": "groundtruth-silhouette", "seed": 2}
    assert [r.run_dir for r in plan.all_runs()][-1] == "results/synthcc/runs/clustercontrast/none/seed2"
    assert plan.mask_sources == {"synthcc": ("groundtruth",)} and plan.ground_truth == ("synthcc",)


def test_rgb_only_methods_have_no_masks():
    plan = build_plan(_config())
    run = plan.run("synthcc", "clustercontrast", 0, masks="none")
    assert (run.mask_source, run.mask_mode, run.mask_index, run.masks) == (None, None, None, "none")
    assert run.run_dir == "results/synthcc/runs/clustercontrast/none/seed0"
    assert plan.experiments["clustercontrast"].tables_settings() == {
        "method": "clustercontrast", "masks": "none", "mask_source": None, "mask_mode": None,
        "train": {"batch_size": 256, "num_instances": 16, "iters": 9, "momentum": 0.1, "pooling": "gem"}}


def test_mask_mode_override_and_source():
    cfg = _config(experiments={"maskcl": {"method": "maskcl"}, "parts": {"method": "maskcl", "mask_mode": "parts"},
                               "sup": {"method": "supervised", "mask_mode": "parts"}})
    plan = build_plan(cfg)
    assert plan.run("synthcc", "parts", 0).masks == "groundtruth-parts"
    assert plan.run("synthcc", "parts", 0).mask_mode == "parts"
    assert plan.run("synthcc", "maskcl", 0).masks == "groundtruth-silhouette"
    assert plan.run("synthcc", "sup", 0).masks == "none"          # mask_mode means nothing without masks
    assert plan.experiments["parts"].tables_settings()["mask_source"] == "groundtruth"
    assert masks_component("schp", "parts") == "schp-parts" and masks_component(None, None) == "none"


def test_ssl_runs_start_from_the_planned_warmup():
    cfg = _config(experiments={"a": {"method": "maskcl", "train": {"pretrained": "ssl"}},
                               "b": {"method": "clustercontrast", "train": {"pretrained": "ssl"}},
                               "c": {"method": "clustercontrast", "train": {"pretrained": "ssl", "height": 128}},
                               "d": {"method": "clustercontrast"}})
    plan = build_plan(cfg)
    a, b, c, d = (plan.run("synthcc", e, 0) for e in "abcd")
    assert a.warmup == b.warmup and a.warmup is not None and d.warmup is None
    assert a.warmup.path == "results/synthcc/pretrain/resnet18-64x32/backbone.pt"
    assert c.warmup.path == "results/synthcc/pretrain/resnet18-128x32/backbone.pt"
    assert set(plan.warmups) == {("synthcc", "resnet18-64x32"), ("synthcc", "resnet18-128x32")}
    expected = train_settings(cfg, "synthcc", "a")
    assert expected["pretrained"] == "ssl"
    expected["pretrained"] = a.warmup.path
    assert a.train_settings() == expected and d.train_settings()["pretrained"] == "none"
    job = plan.warmup("synthcc", "resnet18-64x32").params()
    pre = {k: v for k, v in cfg["pretrain"].items() if k != "seed"}
    assert job == {"settings": {**pre, "arch": "resnet18", "height": 64, "width": 32, "workers": 0, "device": "auto"},
                   "seed": int(cfg["pretrain"]["seed"])}
    assert list(job["settings"])[-5:] == ["arch", "height", "width", "workers", "device"]
    # every train setting of ssl (also set globally) goes through the warm-up
    glob = build_plan(_config(train={**cfg["train"], "pretrained": "ssl"}))
    assert {r.warmup.name for r in glob.all_runs()} == {"resnet18-64x32"}


def test_records_are_read_only():
    plan = build_plan(_config())
    run = plan.run("synthcc", "maskcl", 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.seed = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        run.settings["epochs"] = 1  # type: ignore[index]
    s = run.train_settings()
    s["epochs"] = 999
    assert plan.run("synthcc", "maskcl", 0).settings["epochs"] != 999


def test_config_mistakes_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"^masks.train_source is groundtruth but prcc has no ground-truth parsing "
                                          r"\(only synthcc does\), and experiments.maskcl \(method maskcl\) trains on "
                                          r"the masks of masks.train_source; use schp or mediapipe$"):
        build_plan(_config(datasets=["synthcc", "prcc"]))
    with pytest.raises(ConfigError, match=r"^masks.train_source is 'schp' but masks.sources is \['groundtruth'\], and "
                                          r"experiments.maskcl \(method maskcl\) trains on the masks of "
                                          r"masks.train_source; add schp to masks.sources or set masks.train_source "
                                          r"to one of groundtruth$"):
        build_plan(_config(masks={"sources": ["groundtruth"], "train_source": "schp"}))
    # no method of the config consumes masks (the methods' facts): masks.train_source is never read
    rgb_only = {"clustercontrast": {"method": "clustercontrast"}}
    plan = build_plan(_config(masks={"sources": ["groundtruth"], "train_source": "schp"}, experiments=rgb_only))
    assert plan.run("synthcc", "clustercontrast", 0).mask_index is None
    plan = build_plan(_config(datasets=["synthcc", "prcc"], experiments=rgb_only))
    assert {r.masks for r in plan.all_runs()} == {"none"}
    with pytest.raises(ConfigError, match=r"^experiments.x on synthcc: config train: unknown key\(s\) \['nosuch'\]"):
        build_plan(_config(experiments={"x": {"method": "maskcl", "train": {"nosuch": 1}}}))
    plan = build_plan(_config())
    with pytest.raises(ConfigError, match=r"run synthcc/maskcl/seed5 is not in the config"):
        plan.run("synthcc", "maskcl", 5)
    with pytest.raises(ValueError, match="run folder masks=groundtruth-parts does not match experiment maskcl "
                                         r"\(expected groundtruth-silhouette\)"):
        plan.run("synthcc", "maskcl", 0, masks="groundtruth-parts")
    with pytest.raises(ConfigError, match=r"no run of the config starts from this warm-up; planned warm-ups: none"):
        plan.warmup("synthcc", "resnet50-256x128")


def test_dataset_facts_come_from_the_dataset_classes():
    assert ground_truth_datasets() == ("synthcc",)
    plan = build_plan(_config(datasets=["synthcc", "prcc"],
                              masks={"sources": ["groundtruth", "schp"], "train_source": "schp"}))
    assert plan.mask_sources == {"synthcc": ("groundtruth", "schp"), "prcc": ("schp",)}
    assert plan.run("prcc", "maskcl", 0).mask_index == "results/prcc/masks/schp/index.csv"


def test_tables_layout_is_one_list_with_a_caption_per_entry():
    assert TABLE_STEMS == ("results", "headline", "comparison", "ablation_masks", "ablation_methods",
                           "ablation_components", "published")
    assert FIGURE_KINDS == ("cmc", "retrieval", "training", "pseudo_labels", "masks", "datasets")
    assert [t.formats for t in TABLES if t.stem == "runs"] == [("csv",)]
    for name in [t.stem for t in TABLES] + list(FIGURE_KINDS):
        assert (ROOT / "report" / f"{name}.rst").is_file(), name
    retrieval = next(f for f in FIGURES if f.kind == "retrieval")
    assert retrieval.wildcards == ("dataset", "experiment", "masks", "seed", "protocol")
