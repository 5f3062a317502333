"""Configuration validation against the JSON schema, with defaults filled in.

The Snakefile calls ``validate_config`` at parse time, so a bad value fails before any job runs,
with one line naming the key and the fix. ``train_settings`` merges schema defaults, the dataset's
official preset and an experiment's overrides into the flat dict a training job receives; the same
merge, with the key path each value is written at (``train_origins``), is what ``validate_config``
checks for every override block (against the ``train`` schema) and every run (``check_rules``: the
rules between keys the schema cannot express).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from importlib import resources
from typing import Any, Dict, Iterator, Mapping, Tuple

import yaml
from jsonschema import Draft202012Validator, validators

from .errors import ConfigError

__all__ = ["load_schema", "validate_config", "load_config", "train_settings", "train_origins", "section_defaults",
           "settings_from_dict", "check_rules", "check_train_rules"]


@functools.lru_cache(maxsize=None)
def load_schema() -> Dict[str, Any]:
    """The config schema, read once per process (callers must not modify it)."""
    text = resources.files("maskcl").joinpath("schemas/config.schema.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _with_defaults(cls: Any) -> Any:
    validate_props = cls.VALIDATORS["properties"]

    def set_defaults(validator: Any, properties: Mapping[str, Any], instance: Any, schema: Any) -> Iterator[Any]:
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, properties, instance, schema)

    return validators.extend(cls, {"properties": set_defaults})


def _is_integer(checker: Any, instance: Any) -> bool:
    """``integer`` is a whole number written as one: ``16.0`` is refused (a training job's ``range`` would be)."""
    return isinstance(instance, int) and not isinstance(instance, bool)


#: Draft 2020-12 with whole numbers only for ``integer`` (the draft also accepts 16.0).
_Strict = validators.extend(Draft202012Validator,
                            type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer))
_Filling = _with_defaults(_Strict)


def _where(error: Any) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


_SCHEMA_FILE = "maskcl/schemas/config.schema.yaml"
#: Schema keywords on one value, whose failure ``_allowed`` can spell out as the allowed values.
_LEAF_KEYWORDS = frozenset({"type", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                            "pattern", "minLength", "maxLength"})
_TYPE_WORDS = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false",
               "array": "a list", "object": "a mapping", "null": "null"}


def _yaml_word(value: Any) -> str:
    """``value`` as it must be written in YAML (``"off"`` quoted: a bare off reads as false)."""
    if isinstance(value, str):
        try:
            plain = yaml.safe_load(value) == value
        except yaml.YAMLError:
            plain = False
        return value if plain else f'"{value}"'
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _allowed(schema: Mapping[str, Any]) -> str:
    """The values one schema node accepts, in words (``an integer >= 1``, ``one of avg, gem``)."""
    if "enum" in schema:
        return "one of " + ", ".join(_yaml_word(v) for v in schema["enum"])
    if "const" in schema:
        return _yaml_word(schema["const"])
    types = schema.get("type")
    types = [types] if isinstance(types, str) else list(types or [])
    words = " or ".join(_TYPE_WORDS.get(t, t) for t in types) or "a value"
    bounds = [f"{op} {schema[k]}" for k, op in (("minimum", ">="), ("exclusiveMinimum", ">"),
                                                 ("maximum", "<="), ("exclusiveMaximum", "<")) if k in schema]
    if bounds:
        words += " " + " and ".join(bounds)
    if schema.get("minLength") == 1:
        words = "a non-empty " + words.removeprefix("a ")
    if "pattern" in schema:
        words += f" matching {schema['pattern']}"
    return words


def _fix(error: Any) -> str:
    """The fix part of a schema error's message: the allowed values, the known keys, or the schema file."""
    if error.validator in _LEAF_KEYWORDS and isinstance(error.schema, Mapping):
        quote = ""
        if isinstance(error.instance, bool) and any(isinstance(v, str) and _yaml_word(v) != v
                                                    for v in error.schema.get("enum", ())):
            quote = " (YAML reads a bare on/off/yes/no as true/false: quote it)"
        return f"allowed: {_allowed(error.schema)}{quote}"
    if error.validator == "additionalProperties" and isinstance(error.schema, Mapping) \
            and error.schema.get("properties"):
        return f"known keys: {', '.join(sorted(error.schema['properties']))}"
    if error.validator == "required" and isinstance(error.schema, Mapping) and isinstance(error.instance, Mapping):
        missing = [k for k in error.validator_value if k not in error.instance]
        if missing:
            sub = error.schema.get("properties", {}).get(missing[0], {})
            what = f" ({_allowed(sub)})" if sub else ""
            return (f"add the key {missing[0]}{what} to that block (a block written in the config replaces the "
                    f"schema's default block whole; nothing is filled in from it)")
    if error.validator == "propertyNames" and isinstance(error.schema.get("propertyNames"), Mapping):
        return f"allowed: {_allowed(error.schema['propertyNames'])}"
    return f"fix it to match {_SCHEMA_FILE}"


def _more(n: int) -> str:
    return f" ({n} more problem(s) after fixing this one)" if n else ""


def validate_config(config: Dict[str, Any], source: str = "config.yaml") -> Dict[str, Any]:
    """Validate ``config`` in place (filling defaults) and return it.

    Every section is checked against the schema; then every override block (``dataset_overrides``
    and ``experiments.<name>.train``) through the effective ``train`` settings it yields, and the
    rules between keys the schema cannot express (:func:`check_rules`).

    Raises ``ConfigError`` with one line: the file, the key path as written, the reason and the fix.
    """
    validator = _Filling(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(list(e.absolute_path)), e.message))
    if errors:
        e = errors[0]
        raise ConfigError(f"{source}: key {_where(e)}: {e.message}; {_fix(e)}{_more(len(errors) - 1)}")
    _check_override_datasets(config, source)
    _check_overrides(config, source)
    check_rules(config, source)
    return config


def load_config(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    return validate_config(data, source=path)


def section_defaults(section: str) -> Dict[str, Any]:
    """Schema defaults of one top-level object section (e.g. ``train``)."""
    props = load_schema()["properties"][section].get("properties", {})
    return {k: copy.deepcopy(v["default"]) for k, v in props.items() if "default" in v}


def _train_layers(config: Mapping[str, Any], dataset: str, experiment: str) -> Iterator[Tuple[str, Mapping[str, Any]]]:
    """The ``train`` layers of one run, lowest precedence first, each with the key path it is written at."""
    yield "train", config.get("train", {})
    yield f"dataset_overrides.{dataset}.train", config.get("dataset_overrides", {}).get(dataset, {}).get("train", {})
    yield f"experiments.{experiment}.train", config["experiments"][experiment].get("train", {})


def train_origins(config: Mapping[str, Any], dataset: str, experiment: str) -> Dict[str, str]:
    """Where each effective ``train`` key of a run is set: the key path as the user writes it.

    The precedence is :func:`train_settings`'s; a key no layer sets is named ``train.<key>``.
    """
    out = {k: f"train.{k}" for k in section_defaults("train")}
    for prefix, layer in _train_layers(config, dataset, experiment):
        out.update({k: f"{prefix}.{k}" for k in layer})
    return out


def _check_override_datasets(config: Mapping[str, Any], source: str) -> None:
    """Every key of ``dataset_overrides`` is a registered dataset."""
    from .datasets import DATASETS  # lazily: the dataset package imports pandas

    known = DATASETS.names()
    for name in config.get("dataset_overrides", {}):
        if name not in known:
            raise ConfigError(f"{source}: key dataset_overrides.{name}: {name!r} is not a registered dataset; "
                              f"use one of {', '.join(known)} (or remove the block)")


def _check_overrides(config: Mapping[str, Any], source: str) -> None:
    """The effective ``train`` section of every (dataset, experiment) against the ``train`` schema.

    Datasets are the configured ones plus every ``dataset_overrides`` key, so that a bad preset of a
    dataset not run today is caught as well. Top-level values were checked already, so an error names
    the override that set the key. Unknown keys of an experiment are left to ``build_plan``, which names
    them as ``experiments.<name>.train.<key>`` and lists the known ones.
    """
    train_schema = load_schema()["properties"]["train"]
    known = sorted(train_schema["properties"])
    for d, block in config.get("dataset_overrides", {}).items():
        unknown = [k for k in block.get("train", {}) if k not in train_schema["properties"]]
        if unknown:
            raise ConfigError(f"{source}: key dataset_overrides.{d}.train.{unknown[0]}: unknown train key; "
                              f"known keys: {', '.join(known)}")
    check = _Strict(train_schema)
    datasets = list(config["datasets"])
    datasets += [d for d in config.get("dataset_overrides", {}) if d not in datasets]
    problems: Dict[str, str] = {}  # key path -> message, first seen first
    for d in datasets:
        for e in config["experiments"]:
            merged = section_defaults("train")
            for _, layer in _train_layers(config, d, e):
                merged.update(layer)
            origins = train_origins(config, d, e)
            errors = sorted(check.iter_errors(merged), key=lambda err: (_where(err), err.message))
            for err in errors:
                if err.validator == "additionalProperties" or not err.absolute_path:
                    continue
                key = str(err.absolute_path[0])
                rest = "".join(f".{p}" for p in list(err.absolute_path)[1:])
                path = origins.get(key, f"train.{key}") + rest
                problems.setdefault(path, f"{source}: key {path}: {err.message}; {_fix(err)}")
    if problems:
        first = next(iter(problems.values()))
        raise ConfigError(first + _more(len(problems) - 1))


def check_train_rules(settings: Mapping[str, Any], origins: Mapping[str, str], method: str) -> None:
    """Rules between effective ``train`` keys of one run that the schema cannot express.

    ``origins`` is :func:`train_origins` (each key is named by the path it is written at). Raises
    ``ConfigError`` (one line, no file name) on the first broken rule. The training job keeps its own
    checks of the process layout (``maskcl.training.settings.check_settings``).
    """
    def path(key: str) -> str:
        return origins.get(key, f"train.{key}")

    def name(key: str) -> str:
        return f"{path(key)} ({settings[key]})"

    epochs, iters = int(settings["epochs"]), int(settings["iters"])
    if epochs < 1 or iters < 1:
        key = "epochs" if epochs < 1 else "iters"
        raise ConfigError(f"key {name(key)}: the schedule {path('epochs')} x {path('iters')} = {epochs} x {iters} "
                          f"makes no optimisation step, yet model.pt would be written; set {path(key)} to 1 or more")
    batch, k = int(settings["batch_size"]), int(settings["num_instances"])
    if batch % k:
        lower, upper = max(batch // k * k, k), (batch // k + 1) * k
        near = f"{lower} or {upper}" if lower < batch else f"{upper}"
        raise ConfigError(f"key {name('batch_size')} must be divisible by {name('num_instances')}, the images "
                          f"per identity of a batch; set {path('batch_size')} to a multiple of {k} (e.g. {near}) "
                          f"or {path('num_instances')} to a divisor of {batch}")
    if method == "maskcl" and settings["refine"]:
        eps, gap = float(settings["eps"]), float(settings["eps_gap"])
        if not eps - gap > 0:
            raise ConfigError(f"key {name('eps_gap')} must be smaller than {name('eps')} while {path('refine')} is "
                              f"on: the refinement's tight DBSCAN runs at eps - eps_gap, which must be > 0; lower "
                              f"{path('eps_gap')} below {eps} or set {path('refine')}: false")
    w, groups = int(settings["world_size"]), int(settings["bn_groups"])
    if w > 1 and batch % w:
        raise ConfigError(f"key {name('batch_size')} must be divisible by {name('world_size')}: every GPU gets an "
                          f"equal contiguous slice of the batch; use a multiple of {w}")
    if w > 1 and groups > 1 and groups % w:
        raise ConfigError(f"key {name('bn_groups')} must be 1 or a multiple of {name('world_size')}: each GPU "
                          f"normalises its slice in bn_groups/world_size groups")
    split = max(groups, w)
    if split > 1 and batch % split:
        raise ConfigError(f"key {name('batch_size')} must be divisible by the {split} BatchNorm groups of "
                          f"{path('bn_groups')}/{path('world_size')}; use a multiple of {split}")
    device = str(settings["device"])
    if w > 1 and device.startswith("cuda:"):
        raise ConfigError(f"key {name('device')} is one GPU but {name('world_size')} asks for {w}; use auto or "
                          f"cuda, and restrict GPUs with CUDA_VISIBLE_DEVICES")
    if w > 1 and device == "cpu" and settings["dist_backend"] == "nccl":
        raise ConfigError(f"key {name('dist_backend')} needs GPUs but {name('device')}; use auto or gloo")


def check_rules(config: Mapping[str, Any], source: str = "config.yaml") -> None:
    """Rules between keys the schema cannot express, for every run the plan has (validated ``config``).

    The effective ``train`` settings of every (dataset, experiment) (:func:`check_train_rules`),
    ``evaluate.rerank_k2`` against ``evaluate.rerank_k1`` and ``tables.topk_grid`` against
    ``evaluate.topk``. Raises ``ConfigError``: one line, the file, the key path as written and the fix.
    """
    for d in config["datasets"]:
        for e, exp in config["experiments"].items():
            settings = train_settings(config, d, e)
            try:
                check_train_rules(settings, train_origins(config, d, e), exp["method"])
            except ConfigError as err:
                raise ConfigError(f"{source}: {err} (run {d}/{e})") from None
    ev, tables = config.get("evaluate", {}), config.get("tables", {})
    if ev.get("rerank") and ev["rerank_k2"] > ev["rerank_k1"] + 1:
        raise ConfigError(f"{source}: key evaluate.rerank_k2 ({ev['rerank_k2']}) must be at most evaluate.rerank_k1 "
                          f"+ 1 = {ev['rerank_k1'] + 1} while evaluate.rerank is on; lower evaluate.rerank_k2 or "
                          f"raise evaluate.rerank_k1")
    if "topk_grid" in tables and "topk" in ev and tables["topk_grid"] > ev["topk"]:
        raise ConfigError(f"{source}: key tables.topk_grid ({tables['topk_grid']}) exceeds evaluate.topk "
                          f"({ev['topk']}), the ranks the evaluate rule saves; lower tables.topk_grid to "
                          f"{ev['topk']} or less or raise evaluate.topk")


def train_settings(config: Mapping[str, Any], dataset: str, experiment: str) -> Dict[str, Any]:
    """Schema defaults < config ``train`` < ``dataset_overrides[dataset].train`` < experiment overrides."""
    if experiment not in config.get("experiments", {}):
        known = ", ".join(sorted(config.get("experiments", {})))
        raise ConfigError(f"config.yaml: experiments.{experiment} is not defined; known experiments: {known}")
    out = section_defaults("train")
    out.update(copy.deepcopy(dict(config.get("train", {}))))
    out.update(copy.deepcopy(dict(config.get("dataset_overrides", {}).get(dataset, {}).get("train", {}))))
    exp = config["experiments"][experiment]
    out.update(copy.deepcopy(dict(exp.get("train", {}))))
    out["method"] = exp["method"]
    return out


def settings_from_dict(cls: Any, values: Mapping[str, Any], section: str, hidden: frozenset = frozenset()) -> Any:
    """Build a settings dataclass, naming the config section and the known keys on an unknown one."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(k for k in values if k not in names)
    if unknown:
        raise ConfigError(f"config {section}: unknown key(s) {unknown}; known keys: {sorted(names - set(hidden))}")
    return cls(**dict(values))
