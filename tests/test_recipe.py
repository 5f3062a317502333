"""The SynthCC configs are a faithful miniature of the published recipes (docs/training.md, the scaling table).

Each config is read as Snakemake reads it (``--configfile`` merged recursively over config.yaml,
then validated), and every dimensionless quantity the scaling rule keeps is checked on the
effective settings of every run: a changed preset, batch or epoch count that breaks a proportion
fails here, not silently in a benchmark hours later.
"""

from __future__ import annotations

import copy
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict

import pytest
import yaml
from snakemake.utils import update_config

from maskcl.config import train_settings, validate_config
from maskcl.datasets.synthcc.config import expected_counts, resolve_config
from maskcl.methods import get_method
from maskcl.training.neighbours import curriculum_k

ROOT = Path(__file__).resolve().parents[1]
VARIANT = "configs/synthcc_benchmark.yaml configs/synthcc_variant.yaml"       # stages 1 and 2
BENCHMARK = f"{VARIANT} configs/synthcc_switches.yaml"                          # all three stages
METHODS_STAGE = "configs/synthcc_benchmark.yaml configs/synthcc_methods.yaml"
CONFIGS = ["config.yaml", "configs/synthcc_benchmark.yaml", VARIANT, BENCHMARK, "configs/synthcc_ablation.yaml",
           METHODS_STAGE, f"{BENCHMARK} configs/synthcc_paper_scale.yaml"]
#: Official MaskCL draws 1.27-1.43 samples per training image per epoch (iters x batch / N, per dataset).
SAMPLES_PER_IMAGE = (1.25, 1.45)
#: The methods the benchmark runs on their own repository schedule (configs/synthcc_methods.yaml): samples per
#: training image per epoch on Market-1501, the first rate drop as a fraction of the epochs and the number of
#: drops (CACL SIC.py 80 x 400 x 64, StepLR(20); SpCL spcl_train_usl.py 50 x 400 x 64, StepLR(20); ISE
#: ISE_train_market1501.sh 70 x 400 x 256, StepLR(30)). The others run MaskCL's (equal compute).
OWN_SCHEDULE = {"cacl": (400 * 64 / 12936, Fraction(1, 4), 3), "spcl": (400 * 64 / 12936, Fraction(2, 5), 2),
                "ise": (400 * 256 / 12936, Fraction(3, 7), 2)}
#: Schedule keys a miniature shrinks, so a recipe's value of them is not kept.
SCHEDULE_KEYS = {"epochs", "step_size", "iters"}


def _effective(extra: str) -> Dict[str, Any]:
    """config.yaml, with the files of ``extra`` merged over it in order as ``snakemake --configfile`` does, validated."""
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    for name in extra.split():
        if name != "config.yaml":
            update_config(cfg, yaml.safe_load((ROOT / name).read_text()))
    return validate_config(copy.deepcopy(cfg))


def _train_images(cfg: Dict[str, Any]) -> int:
    syn = cfg["data"]["synthcc"]
    return expected_counts(resolve_config(syn["preset"], syn.get("overrides")))["train"]["images"]


@pytest.mark.parametrize("extra", CONFIGS)
def test_every_run_keeps_the_official_proportions(extra):
    cfg = _effective(extra)
    n = _train_images(cfg)
    for name, exp in cfg["experiments"].items():
        s = train_settings(cfg, "synthcc", name)
        if exp["method"] == "untrained":
            continue
        draws = s["iters"] * s["batch_size"] / n
        recipe = {k: v for k, v in get_method(exp["method"]).recipe.items() if k not in SCHEDULE_KEYS}
        if exp["method"] in OWN_SCHEDULE:  # its own recipe's proportions and batch, memory and clustering values
            official, first, drops = OWN_SCHEDULE[exp["method"]]
            assert abs(draws / official - 1) < 0.02, (extra, name, draws, official)
            assert Fraction(s["step_size"], s["epochs"]) == first and (s["epochs"] - 1) // s["step_size"] == drops
            assert s["gamma"] == 0.1 and {k: s[k] for k in recipe} == recipe, (extra, name)
            if n != 9792:  # the miniature: a fifth of its recipe's epochs, as MaskCL's 12 of 60
                assert s["epochs"] * 5 == get_method(exp["method"]).recipe["epochs"], (extra, name)
            continue
        assert SAMPLES_PER_IMAGE[0] <= draws <= SAMPLES_PER_IMAGE[1], (extra, name, draws)
        # the rate drops x0.1 at 1/3 and 2/3 of the schedule, as StepLR(20, 0.1) over 60 epochs
        assert s["epochs"] % 3 == 0 and s["step_size"] == s["epochs"] // 3 and s["gamma"] == 0.1, (extra, name)
        if exp["method"] == "maskcl":
            assert (s["batch_size"] // s["num_instances"], s["num_instances"]) == (16, 4), (extra, name)
            assert (s["momentum"], s["pooling"]) == (0.2, "avg"), (extra, name)
            # allknn 3 (VC-Clothes-like): k = 0, 1, 2 in the three rate phases, never above the other outfits
            assert s["allknn"] == 3
            e = s["epochs"]
            phases = [{curriculum_k(s["allknn"], ep, e) for ep in range(p * e // 3, (p + 1) * e // 3)}
                      for p in range(3)]
            assert phases == [{0}, {1}, {2}], (extra, name, phases)
        else:  # ClusterContrast's README recipe (its facts), and the supervised bound trained with it
            assert (s["batch_size"], s["num_instances"], s["momentum"], s["pooling"]) == (256, 16, 0.1, "gem"), \
                (extra, name)
            assert {k: s[k] for k in recipe} == recipe, (extra, name)


@pytest.mark.parametrize("extra", CONFIGS)
def test_every_method_of_a_config_shares_its_schedule_and_initialisation(extra):
    cfg = _effective(extra)
    runs = {name: train_settings(cfg, "synthcc", name) for name in cfg["experiments"]}
    trained = {name: s for name, s in runs.items()
               if cfg["experiments"][name]["method"] not in ("untrained", *OWN_SCHEDULE)}
    assert all(s["pretrained"] == next(iter(trained.values()))["pretrained"] for s in runs.values()
               if s["method"] in OWN_SCHEDULE), extra  # their own schedule, the same initialisation
    assert len({(s["epochs"], s["step_size"], s["pretrained"], s["arch"], s["height"], s["width"])
                for s in trained.values()}) == 1, extra
    start = next(iter(trained.values()))["pretrained"]
    refs = {name: s["pretrained"] for name, s in runs.items() if name not in trained}
    assert all(p in (start, "none") for p in refs.values()) and (not refs or start in refs.values())


@pytest.mark.parametrize("extra", [BENCHMARK, f"{BENCHMARK} configs/synthcc_paper_scale.yaml"])
def test_the_benchmark_switches_one_component_at_a_time(extra):
    cfg = _effective(extra)
    changed = {}
    for name, exp in cfg["experiments"].items():
        if exp["method"] != "maskcl":
            continue
        s = train_settings(cfg, "synthcc", name)
        changed[name] = {k: s[k] for k, v in get_method("maskcl").official_switches.items() if s[k] != v}
    assert changed.pop("maskcl") == {}                        # the official recipe
    best = changed.pop("maskcl_best")
    assert len(best) > 1
    # the paper-described variant: both neighbour keys, nothing else
    assert changed.pop("maskcl_cosine") == {"neighbour_weights": "cosine", "neighbour_reduction": "per_sample"}
    assert all(len(c) == 1 for c in changed.values()), changed
    # every switch the issue names, and both alternative cluster features
    assert sorted((k, v) for c in changed.values() for k, v in c.items()) == sorted(
        [("refine", False), ("memory_refresh", True), ("neighbour_loss", False), ("cluster_on", "fused"),
         ("cluster_on", "concat"), ("crossview_loss", False)])
    methods = {e["method"] for e in cfg["experiments"].values()}
    scaled = set(OWN_SCHEDULE) if "paper_scale" in extra else set()  # the paper scale has every method
    assert methods == {"maskcl", "clustercontrast", "supervised", "untrained"} | scaled
    assert cfg["seeds"] == [0, 1, 2]


def test_each_stage_adds_rows_and_reuses_every_run_of_the_stages_before():
    verdict, variant, switches = (_effective(c) for c in ("configs/synthcc_benchmark.yaml", VARIANT, BENCHMARK))
    assert {n: e["method"] for n, e in verdict["experiments"].items()} == {
        "maskcl": "maskcl", "maskcl_cosine": "maskcl", "clustercontrast": "clustercontrast",
        "supervised": "supervised", "untrained": "untrained", "untrained_random": "untrained"}
    assert set(variant["experiments"]) - set(verdict["experiments"]) == {"maskcl_best"}
    added = set(switches["experiments"]) - set(variant["experiments"])
    assert len(added) == 6 and all(switches["experiments"][n]["method"] == "maskcl" for n in added)
    # a later stage reruns nothing of an earlier one: every run has the same effective settings in both
    for earlier, later in ((verdict, variant), (variant, switches)):
        for name in earlier["experiments"]:
            assert train_settings(later, "synthcc", name) == train_settings(earlier, "synthcc", name), name
    assert switches["seeds"] == variant["seeds"] == verdict["seeds"] == [0, 1, 2]


def test_the_methods_stage_adds_each_method_once_and_reuses_the_verdict():
    verdict, methods = _effective("configs/synthcc_benchmark.yaml"), _effective(METHODS_STAGE)
    added = {n: e["method"] for n, e in methods["experiments"].items() if n not in verdict["experiments"]}
    assert added == {m: m for m in OWN_SCHEDULE}
    for name in verdict["experiments"]:
        assert train_settings(methods, "synthcc", name) == train_settings(verdict, "synthcc", name), name
    assert methods["seeds"] == [0, 1, 2]


def test_the_paper_scale_config_is_the_official_recipe():
    cfg = _effective("configs/synthcc_benchmark.yaml configs/synthcc_paper_scale.yaml")
    s = train_settings(cfg, "synthcc", "maskcl")
    assert (s["arch"], s["pretrained"], s["height"], s["width"], s["epochs"], s["step_size"]) == (
        "resnet50", "imagenet", 256, 128, 60, 20)
    assert _train_images(cfg) == 9792
    for name, (epochs, step) in {"cacl": (80, 20), "spcl": (50, 20), "ise": (70, 30)}.items():  # their own
        s = train_settings(cfg, "synthcc", name)
        assert (s["epochs"], s["step_size"], s["arch"], s["pretrained"]) == (epochs, step, "resnet50", "imagenet")


def test_the_ablation_config_compares_mask_modes_on_the_benchmark_recipe():
    abl, bench = _effective("configs/synthcc_ablation.yaml"), _effective("configs/synthcc_benchmark.yaml")
    assert {e.get("mask_mode", "silhouette") for e in abl["experiments"].values() if e["method"] == "maskcl"} == {
        "silhouette", "parts"}
    # its maskcl and clustercontrast runs are the benchmark's (same effective settings, so Snakemake reuses them)
    for name in ("maskcl", "clustercontrast"):
        assert train_settings(abl, "synthcc", name) == train_settings(bench, "synthcc", name)
