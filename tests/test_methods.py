"""A method is one module: its facts are declared once and every other place reads them.

Adding a method touches its facts module and registration (``maskcl/methods/``), its torch module
(``maskcl/training/methods/``, ``@register_method``), the schema's ``experiments.*.method`` enum and
its row in docs/methods.md (docs/architecture.md, "Where to add things: a method"). Each test here
fails when one of those places is forgotten, or when a method's name is written anywhere else.
"""

from __future__ import annotations

import ast
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from maskcl.config import load_schema
from maskcl.errors import ConfigError
from maskcl.methods import (METHOD_FACTS, METHOD_GROUPS, MethodFacts, Switch, get_method,
                            key_owners, list_methods, register_method_facts, report_order, switch_columns, switch_owners,
                            switched_methods)

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("maskcl", "clustercontrast", "cacl", "spcl", "ise", "supervised", "untrained")


def _train_schema() -> dict:
    return load_schema()["properties"]["train"]["properties"]


# ------------------------------------------------------------------------------------------ registry
def test_registry_holds_the_methods_in_report_order():
    assert report_order() == METHODS
    assert list_methods() == sorted(METHODS)
    with pytest.raises(ConfigError, match=r"unknown method 'nosuch'; known methods: cacl, clustercontrast, ise, maskcl"):
        get_method("nosuch")
    with pytest.raises(ValueError, match="method 'maskcl' is already registered"):
        register_method_facts(get_method("maskcl"))
    assert report_order() == METHODS


@pytest.mark.parametrize("name", METHODS)
def test_every_method_declares_every_fact(name):
    facts = get_method(name)
    assert isinstance(facts, MethodFacts) and facts.name == name
    assert facts.display_name and facts.short_name and facts.citation
    assert facts.group in METHOD_GROUPS
    assert isinstance(facts.uses_masks, bool) and isinstance(facts.trains, bool)
    train = _train_schema()
    for switch in facts.switches:  # a switch is a train key whose official value the schema accepts
        assert isinstance(switch, Switch) and switch.label
        assert switch.key in train, f"{name}: switch {switch.key} is no train key of the schema"
        assert not list(Draft202012Validator(train[switch.key]).iter_errors(switch.official)), (name, switch)
    for key in facts.own_keys:
        assert key in train, f"{name}: own key {key} is no train key of the schema"
    for key, value in facts.recipe.items():
        assert key in train, f"{name}: recipe key {key} is no train key of the schema"
        assert not list(Draft202012Validator(train[key]).iter_errors(value)), (name, key, value)
    if not facts.trains:  # a reference that never trains has nothing to switch and no recipe
        assert facts.group == "reference" and not facts.switches and not facts.recipe


def test_the_methods_facts():
    assert [get_method(m).group for m in METHODS] == ["unsupervised"] * 5 + ["supervised", "reference"]
    assert [m for m in METHODS if get_method(m).uses_masks] == ["maskcl"]
    assert [m for m in METHODS if not get_method(m).trains] == ["untrained"]
    assert switched_methods() == ("maskcl", "cacl", "ise")
    assert get_method("maskcl").official_switches == {
        "crossview_loss": True, "neighbour_loss": True, "neighbour_weights": "official",
        "neighbour_reduction": "official", "refine": True, "memory_refresh": False, "cluster_on": "rgb"}
    assert get_method("cacl").official_switches == {"memory_refresh": False}
    assert switch_owners("refine") == ("maskcl",) and switch_owners("epochs") == ()
    assert switch_owners("memory_refresh") == ("maskcl", "cacl")
    assert key_owners("refine") == key_owners("allknn") == ("maskcl",) and key_owners("lr") == ()
    assert key_owners("focal_gamma") == key_owners("memory_init") == ("maskcl", "cacl")
    assert dict(get_method("cacl").recipe) == {"epochs": 80}
    assert get_method("maskcl").read_keys[:7] == get_method("maskcl").switch_keys
    assert dict(get_method("clustercontrast").recipe) == {"batch_size": 256, "num_instances": 16, "momentum": 0.1,
                                                          "pooling": "gem"}
    assert get_method("supervised").recipe == get_method("clustercontrast").recipe
    # SpCL: MaskCL's model, batch and memory recipe on its own 50 epochs; it reads the memory epsilon and the
    # tight / loose DBSCAN gap, which MaskCL reads too
    assert dict(get_method("spcl").recipe) == {"epochs": 50} and not get_method("spcl").switches
    assert key_owners("softmax_eps") == key_owners("eps_gap") == ("maskcl", "cacl", "spcl")
    assert key_owners("focal_gamma") == key_owners("ratio_cluster") == ("maskcl", "cacl")
    assert get_method("ise").official_switches == {"ise_use_support": True, "ise_supports_update": True,
                                                   "ise_lp_negatives": "official"}
    assert dict(get_method("ise").recipe) == {"batch_size": 256, "num_instances": 16, "eps": 0.4, "epochs": 70,
                                              "step_size": 30}
    assert key_owners("ise_lp_weight") == key_owners("ise_supports_update") == ("ise",)
    with pytest.raises(TypeError):
        get_method("clustercontrast").recipe["epochs"] = 3  # type: ignore[index]


def test_facts_refuse_what_no_method_can_be():
    with pytest.raises(ValueError, match="group 'bound' is not one of unsupervised, supervised, reference"):
        MethodFacts("x", "X", "X", "nowhere", "bound", False, True)
    with pytest.raises(ValueError, match="must be lower-case"):
        MethodFacts("Spcl", "X", "X", "nowhere", "unsupervised", False, True)
    with pytest.raises(ValueError, match="declared twice"):
        MethodFacts("x", "X", "X", "nowhere", "unsupervised", False, True,
                    switches=(Switch("refine", "R", True), Switch("refine", "R", True)))
    with pytest.raises(ValueError, match="also a switch"):
        MethodFacts("x", "X", "X", "nowhere", "unsupervised", False, True,
                    switches=(Switch("refine", "R", True),), own_keys=("refine",))


# ---------------------------------------------------------------- the places a method is written down
def test_schema_method_enum_matches_the_registry():
    """The schema's experiments.*.method enum is the registered methods, and its descriptions name each."""
    experiments = load_schema()["properties"]["experiments"]
    method = experiments["additionalProperties"]["properties"]["method"]
    assert set(method["enum"]) == set(list_methods())
    for name in list_methods():
        assert name in method["description"] and name in experiments["description"], \
            f"schema: name {name} in the descriptions of experiments and experiments.*.method"


def test_schema_default_experiments_train_each_method_with_its_recipe():
    for name, exp in load_schema()["properties"]["experiments"]["default"].items():
        if name in METHOD_FACTS:  # the experiment named after its method is that method's recipe
            assert exp["method"] == name
            assert exp.get("train", {}) == dict(get_method(name).recipe), name


def test_every_method_has_its_torch_module_and_the_reverse():
    from maskcl.training import methods as impl
    from maskcl.training.methods import METHODS as IMPLEMENTATIONS, MethodBase

    assert set(IMPLEMENTATIONS.names()) == set(list_methods()), "a method without a registered class, or the reverse"
    for name in list_methods():
        cls = IMPLEMENTATIONS.get(name)
        assert issubclass(cls, MethodBase) and cls.facts is get_method(name)
        assert cls.__module__ == f"maskcl.training.methods.{name}", f"{cls.__name__} belongs in its own module"
    modules = {m.name for m in pkgutil.iter_modules(impl.__path__)} - {"base"}
    assert modules == set(list_methods()), "a module of maskcl/training/methods/ that registers no method"


def test_every_facts_module_is_registered():
    import maskcl.methods as facts_package

    modules = {m.name for m in pkgutil.iter_modules(facts_package.__path__)} - {"facts"}
    assert modules == set(list_methods()), "a facts module of maskcl/methods/ that is not registered"
    for name in list_methods():
        module = sys.modules[f"maskcl.methods.{name}"]
        assert get_method(name) in vars(module).values(), f"maskcl/methods/{name}.py declares {name}'s facts"


def _doc_rows(text: str) -> list[str]:
    """The names in the first column of the first Markdown table of ``text`` (`` `name` ``)."""
    table = text.split("\n## ")[0]
    return re.findall(r"^\| `([a-z][a-z0-9_]*)` \|", table, flags=re.M)


def test_every_method_has_a_row_in_the_docs_and_the_reverse():
    text = (ROOT / "docs" / "methods.md").read_text(encoding="utf-8")
    assert _doc_rows(text) == list(report_order()), "docs/methods.md: one row per method, in report order"
    for name in switched_methods():
        for key, value in get_method(name).official_switches.items():
            official = str(value).lower()
            assert f"| `{key}` | `{official}` |" in text, f"docs/methods.md: {name}'s switch {key} ({official})"
    training = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    assert set(_doc_rows(training)) == set(list_methods()), "docs/training.md: a row on what its step does"


# ---------------------------------------------------------------------------- nothing else names them
#: Strings equal to a method's name that are not the method: (file, string) → why.
_NOT_THE_METHOD = {
    ("maskcl/config.py", "maskcl"): "the package (its schema file)",
    ("maskcl/workflow.py", "maskcl"): "the package's logger",
    ("maskcl/cli.py", "maskcl"): "the console script's name and its logger",
    ("maskcl/clustering/dense.py", "clustercontrast"): "the k1 slicing of ClusterContrast's code",
    ("maskcl/clustering/jaccard.py", "clustercontrast"): "the k1 slicing of ClusterContrast's code",
    ("maskcl/clustering/pseudo_labels.py", "clustercontrast"): "the k1 slicing of ClusterContrast's code",
    ("maskcl/clustering/reciprocal.py", "clustercontrast"): "the k1 slicing of ClusterContrast's code",
    ("maskcl/reporting/aggregate.py", "supervised"): "the supervision of a row (a group's word)",
    ("maskcl/reporting/cmc.py", "supervised"): "the supervision of a row (a group's word)",
    ("maskcl/reporting/labels.py", "supervised"): "the row group and its supervision",
    ("maskcl/reporting/published.py", "supervised"): "the supervision of a published number",
}


def test_no_method_name_is_written_outside_the_methods_modules():
    """Only the methods' own modules (and the schema) name a method: the plan, the checks and the reports
    read the facts. Docstrings and comments may name one; a string the code compares may not."""
    names = set(list_methods())
    found = set()
    for path in sorted((ROOT / "maskcl").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(("maskcl/methods/", "maskcl/training/methods/")):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in names and id(node) not in docstrings:
                found.add((rel, node.value))
    unexpected = sorted(found - set(_NOT_THE_METHOD))
    assert not unexpected, f"read the method's facts (maskcl.methods) instead of naming it: {unexpected}"
    workflow = [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk")),
                *sorted((ROOT / "workflow_scripts").glob("*.py"))]
    quoted = re.compile(r"""["'](%s)["']""" % "|".join(map(re.escape, sorted(names))))
    for path in workflow:
        hits = quoted.findall(path.read_text(encoding="utf-8"))
        assert not hits, f"{path.relative_to(ROOT)} names method(s) {hits}"


def test_the_workflow_reads_the_facts_without_torch():
    """rules/common.smk validates the config and builds the plan at every parse: no torch on that path."""
    code = ("import sys, yaml\n"
            "from maskcl.config import validate_config\n"
            "from maskcl.plan import TABLES, build_plan\n"
            "from maskcl.methods import get_method\n"
            "plan = build_plan(validate_config(yaml.safe_load(open('config.yaml'))))\n"
            "assert [r.mask_source is not None for r in plan.all_runs()] == "
            "[get_method(r.method).uses_masks for r in plan.all_runs()]\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


# ------------------------------------------------------------------------ the views that read the facts
def test_reporting_labels_groups_order_and_switches_come_from_the_facts():
    from maskcl.reporting.labels import GROUPS, METHOD_NAMES, group_of, supervision, trains
    from maskcl.reporting.runs import COMPONENTS, official_switches

    assert list(METHOD_NAMES) == list(report_order())
    assert all(METHOD_NAMES[m] == get_method(m).display_name for m in METHOD_NAMES)
    assert set(METHOD_GROUPS) <= set(GROUPS)
    assert {m: group_of(m) for m in METHODS} == {m: get_method(m).group for m in METHODS}
    assert [supervision(m) for m in METHODS] == ["unsupervised"] * 5 + ["supervised", "none"]
    assert supervision("a_method_no_longer_registered") == "unsupervised" and trains("a_method_no_longer_registered")
    assert [trains(m) for m in METHODS] == [True] * 6 + [False]
    assert COMPONENTS == {k: s.label for k, s in switch_columns().items()}
    # CACL's one switch (memory_refresh) is MaskCL's too: no column of its own
    assert list(COMPONENTS) == list(get_method("maskcl").switch_keys) + list(get_method("ise").switch_keys)
    assert official_switches("clustercontrast") == {} and official_switches("gone") == {}


def test_a_variant_is_a_switch_of_the_runs_own_method_off_its_official_value(tmp_path):
    from maskcl.reporting.runs import Run, RunKey, component_flags

    def run(method: str, **settings) -> Run:
        key = RunKey("synthcc", method, "none", 0)
        return Run(key=key, method=method, settings=settings, metrics_path=tmp_path / "metrics.json", metrics={},
                   components=component_flags(settings, method))

    assert not run("maskcl").variant and run("maskcl", refine=False).variant
    assert run("maskcl", cluster_on="concat").variant and not run("maskcl", epochs=3).variant
    assert not run("clustercontrast", refine=False).variant  # not a switch of clustercontrast: no variant
    assert run("cacl", memory_refresh=True).variant and not run("cacl", refine=False).variant


def test_register_method_refuses_unregistered_facts_and_other_classes():
    from maskcl.training.methods import MethodBase, register_method

    stray = MethodFacts("stray", "Stray", "Stray", "nowhere", "unsupervised", False, True)
    with pytest.raises(ConfigError, match="unknown method 'stray'"):
        register_method(stray)(type("Stray", (MethodBase,), {}))
    with pytest.raises(ValueError, match="its facts are not the registered ones"):
        register_method(MethodFacts("maskcl", "X", "X", "x", "unsupervised", True, True))(type("X", (MethodBase,), {}))
    with pytest.raises(TypeError, match="decorates a MethodBase subclass"):
        register_method(get_method("maskcl"))(object)
