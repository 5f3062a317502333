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
import json
import os
import re
import sys
from importlib import resources
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import yaml
from jsonschema import Draft202012Validator, ValidationError, validators

from .errors import ConfigError
from .layout import RESULTS
from .methods import get_method, key_owners, switch_owners

__all__ = ["load_schema", "validate_config", "load_config", "read_config_file", "check_config_files",
           "check_working_config", "train_settings", "train_origins", "section_defaults", "settings_from_dict",
           "check_rules", "check_train_rules"]


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


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    """``pattern`` with JSON Schema's ``$``, the end of the value: Python's also matches before a final newline,
    which would let ``"maskcl\\n"`` through as a folder name."""
    if not validator.is_type(instance, "string"):
        return
    end = pattern.endswith("$") and not pattern.endswith("\\$")
    if re.search(pattern, instance) is None or (end and re.search(pattern[:-1] + r"\Z", instance) is None):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


#: Draft 2020-12 with whole numbers only for ``integer`` (the draft also accepts 16.0) and an anchored ``$``.
_Strict = validators.extend(Draft202012Validator, {"pattern": _pattern},
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
    if error.validator == "uniqueItems":
        return "write each value once (a repeated one would not add a run, only hide a typo)"
    if error.validator == "propertyNames" and isinstance(error.schema.get("propertyNames"), Mapping):
        return f"allowed: {_allowed(error.schema['propertyNames'])}"
    return f"fix it to match {_SCHEMA_FILE}"


def _more(n: int) -> str:
    return f" ({n} more problem(s) after fixing this one)" if n else ""


def validate_config(config: Dict[str, Any], source: str = "config.yaml",
                    command_line: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Validate ``config`` in place (filling defaults) and return it.

    ``command_line`` is what ``snakemake --config`` set (merged into ``config`` already): Snakemake
    hands a nested value over as text (``train={epochs: 3}`` arrives as ``{"epochs": "3"}``), so each
    such value is read as YAML first wherever the schema does not take text there; an error in a
    value set there names ``--config``, not the files.

    Every section is checked against the schema; then the names that become folder names, every
    override block (``dataset_overrides`` and ``experiments.<name>.train``) through the effective
    ``train`` settings it yields, and the rules between keys the schema cannot express (:func:`check_rules`).

    Raises ``ConfigError`` with one line: the file, the key path as written, the reason and the fix.
    """
    given = command_line or {}
    _read_command_line(config, given)

    def blame(path: Sequence[Any], key: Any = None) -> str:
        return "--config" if given and _given_at(given, path, key) else source

    validator = _Filling(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(list(e.absolute_path)), e.message))
    if errors:
        e = errors[0]
        raise ConfigError(_schema_message(e, blame) + _more(len(errors) - 1))
    _check_names(config, blame)
    _check_override_datasets(config, blame)
    _check_method_switches(config, blame)
    _check_overrides(config, blame)
    check_rules(config, f"{source} and --config" if given else source)
    return config


def _schema_message(e: ValidationError, blame: Callable[..., str]) -> str:
    """One line for a schema error: where it was written, the key path, the reason and the fix."""
    path = list(e.absolute_path)
    if "propertyNames" in e.schema_path:  # a name (a key) of a mapping, not a value
        name = str(e.instance)
        shown = name if len(name) <= 40 else name[:40] + "..."
        what = (f"the name {shown!r} is {len(name)} characters long" if e.validator == "maxLength"
                else f"the name {shown!r} is not allowed")
        rule = e.schema.get("description") or _allowed(e.schema)
        return f"{blame(path, name)}: key {_where(e)}: {what}; rename it: {rule}"
    key = None
    if e.validator == "additionalProperties" and isinstance(e.instance, Mapping):
        known = e.schema.get("properties", {}) if isinstance(e.schema, Mapping) else {}
        key = next((k for k in e.instance if k not in known), None)
    where = blame(path, key)
    fix = _fix(e)
    if where == "--config" and e.validator == "type" and set(_types(e.schema)) & {"object", "array"}:
        fix += f"; {_COMMAND_LINE_FORM}"
    return f"{where}: key {_where(e)}: {e.message}; {fix}"


def _types(schema: Any) -> List[str]:
    types = schema.get("type", []) if isinstance(schema, Mapping) else []
    return [types] if isinstance(types, str) else list(types)


# ------------------------------------------------------------------------- values set by --config

#: How a nested value is written on the command line (Snakemake reads each --config value as YAML).
_COMMAND_LINE_FORM = ("on the command line a nested value is YAML in one argument, e.g. --config "
                      "'train={epochs: 3, iters: 9}' 'seeds=[0, 1]'; or put the keys in a --configfile")


def _schema_at(path: Sequence[Any]) -> Optional[Mapping[str, Any]]:
    """The schema of the value at ``path`` (None where the schema does not describe it)."""
    root = load_schema()
    node: Any = root
    for i, p in enumerate(path):
        if i == 2 and p == "train" and path[0] in ("experiments", "dataset_overrides"):
            node = root["properties"]["train"]  # an override block holds train keys
        elif not isinstance(node, Mapping):
            return None
        elif isinstance(p, int):
            node = node.get("items")
        elif p in node.get("properties", {}):
            node = node["properties"][p]
        else:
            node = node.get("additionalProperties")
    return node if isinstance(node, Mapping) else None


def _typed(text: str, schema: Optional[Mapping[str, Any]]) -> Any:
    """A value Snakemake handed over as text, read as YAML as a config file would be, unless the key takes text.

    A key that takes text keeps it as written (``amp=off`` stays ``"off"``); text that is not YAML is kept
    for the schema to refuse.
    """
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if schema is None:
        return value
    types = _types(schema)
    if value is None and "null" in types:
        return None
    if "string" in types or any(isinstance(v, str) for v in schema.get("enum", ())):
        return text
    return value


def _read_command_line(config: Dict[str, Any], given: Mapping[str, Any], path: Tuple[Any, ...] = ()) -> None:
    """Read every text value that ``--config`` set in ``config`` (see :func:`_typed`), in place."""
    for key, value in given.items():
        here = (*path, key)
        if key not in config:
            continue
        if isinstance(value, Mapping):
            if isinstance(config[key], dict):
                _read_command_line(config[key], value, here)
        elif isinstance(value, str):
            config[key] = _typed(value, _schema_at(here))
        elif isinstance(value, list):  # a new list: the one Snakemake keeps for its jobs stays as it is
            config[key] = [_typed(v, _schema_at((*here, i))) if isinstance(v, str) else v
                           for i, v in enumerate(value)]


def _given_at(given: Mapping[str, Any], path: Sequence[Any], key: Any = None) -> bool:
    """Whether ``--config`` set the value at ``path`` (with ``key``: that key of the mapping at ``path``)."""
    node: Any = given
    for p in path:
        if not isinstance(node, Mapping):
            return True  # a list or a value set whole
        if p not in node:
            return False
        node = node[p]
    return key in node if key is not None and isinstance(node, Mapping) else True


# ------------------------------------------------------------------------------------ config files

class _Loader(yaml.SafeLoader):
    """The safe loader; its composed node tree keeps each key's line for the checks below."""


def _key_text(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    try:
        key = loader.construct_object(node, deep=True)
        hash(key)
        return key
    except (yaml.YAMLError, TypeError):
        return (node.tag, str(node.value))


def _duplicate_key(loader: yaml.SafeLoader, node: yaml.Node, path: Tuple[str, ...],
                   seen_nodes: set) -> Optional[Tuple[str, int, int]]:
    """The first key written twice in one mapping under ``node``: (key path, first line, second line).

    Keys merged in with ``<<: *anchor`` are not written twice: a key written beside them overrides them.
    """
    if id(node) in seen_nodes:
        return None
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: Dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = _key_text(loader, key_node)
            name = ".".join((*path, str(key)))
            if key in lines:
                return name, lines[key], key_node.start_mark.line + 1
            lines[key] = key_node.start_mark.line + 1
            found = _duplicate_key(loader, value_node, (*path, str(key)), seen_nodes)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _duplicate_key(loader, item, (*path, str(i)), seen_nodes)
            if found:
                return found
    return None


def _json_duplicates(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ConfigError(f"key {k} is written twice")
        out[k] = v
    return out


def read_config_file(path: str) -> Dict[str, Any]:
    """One config file, read as Snakemake reads it, refused with one line where Snakemake would say less.

    Snakemake's loader keeps the last of a key written twice (the first block is dropped without a
    word) and names no file or line for a syntax error or a top level that is not a mapping; here
    each of these is a ``ConfigError``: ``<file>:<line>: <cause>; <fix>``.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file; name a .yaml file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None
    loader = _Loader(text)
    try:
        return _read_document(path, text, loader)
    finally:
        loader.dispose()


def _read_document(path: str, text: str, loader: "_Loader") -> Dict[str, Any]:
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        try:  # Snakemake reads JSON first
            return _top_level(path, json.loads(text, object_pairs_hook=_json_duplicates), None)
        except ConfigError as dup:
            raise ConfigError(f"{path}: {dup}; JSON keeps only the last, so merge them into one") from None
        except ValueError:
            pass
        raise ConfigError(f"{path}{_yaml_cause(e)}; fix the syntax there: often an unclosed bracket or quote, a tab "
                          f"in the indentation, or a ': ' inside an unquoted value (quote it)") from None
    if node is not None:
        dup = _duplicate_key(loader, node, (), set())
        if dup:
            key, first, second = dup
            raise ConfigError(f"{path}:{second}: key {key} is written twice (first at line {first}); YAML keeps "
                              f"only the last, so the one at line {first} would be dropped without a word; "
                              f"merge them into one")
    try:
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        raise ConfigError(f"{path}{_yaml_cause(e)}; fix the value there") from None
    return _top_level(path, data, node)


def _yaml_cause(e: yaml.MarkedYAMLError) -> str:
    """``:<line>: not valid YAML: <problem> (<context> at line <n>)`` of a PyYAML error."""
    mark = e.problem_mark or e.context_mark
    line = f":{mark.line + 1}" if mark is not None else ""
    cause = str(e.problem or e.context or "a syntax error")
    if e.context and e.problem:
        at = f" at line {e.context_mark.line + 1}" if e.context_mark is not None else ""
        cause += f" ({e.context}{at})"
    return f"{line}: not valid YAML: {cause}"


def _top_level(path: str, data: Any, node: Optional[yaml.Node]) -> Dict[str, Any]:
    """``data`` if it is a mapping of keys, as a config file's top level must be."""
    if isinstance(data, dict):
        return data
    example = "a config file is `key: value` lines at the top level, e.g. `seeds: [0]`"
    if data is None:
        raise ConfigError(f"{path}: the file holds no keys; {example}")
    line = f":{node.start_mark.line + 1}" if node is not None else ""
    what = "a list (remove the leading '- ')" if isinstance(data, list) else f"a single value ({data!r:.40})"
    raise ConfigError(f"{path}{line}: the top level is {what}, not a mapping of keys; {example}")


def check_config_files(paths: Sequence[str]) -> None:
    """Every file readable as a config file (:func:`read_config_file`); the first problem as a ``ConfigError``."""
    for path in paths:
        read_config_file(str(path))


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_working_config(workdir: str, base: str, configfiles: Sequence[str]) -> None:
    """Refuse a ``config.yaml`` of the working directory that the run would not read.

    The run's configuration is ``base`` (the config.yaml beside the Snakefile) with ``configfiles``
    (``--configfile``) merged over it. A working directory's own config.yaml (``--directory``) that
    is none of these, and differs from ``base``, would be ignored without a word.
    """
    local = os.path.join(workdir, "config.yaml")
    if not os.path.isfile(local) or _same_file(local, base) or any(_same_file(local, f) for f in configfiles):
        return
    try:
        with open(local, "rb") as a, open(base, "rb") as b:
            if a.read() == b.read():
                return
    except OSError:
        pass
    raise ConfigError(f"{local}: this working directory's config.yaml is not read: a run reads {base} (beside the "
                      f"Snakefile) and the --configfile files merged over it; to use it, pass "
                      f"--configfile {local} (or move it out of the working directory)")


def load_config(path: str) -> Dict[str, Any]:
    """One config file (:func:`read_config_file`), validated (:func:`validate_config`)."""
    return validate_config(read_config_file(path), source=path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m maskcl.config FILE...``: check config files as the workflow's start-up does, one line each.

    Snakemake reads ``--configfile`` files before the workflow starts and reports a syntax error in
    one without its name or line; this names both.
    """
    paths = list(sys.argv[1:] if argv is None else argv)
    if not paths:
        print("usage: python -m maskcl.config FILE [FILE...]", file=sys.stderr)
        return 2
    bad = 0
    for path in paths:
        try:
            read_config_file(path)
        except ConfigError as err:
            print(f"ERROR: {err}", file=sys.stderr)
            bad += 1
        else:
            print(f"{path}: readable (syntax, top level, no key written twice); snakemake -n checks the values")
    return 1 if bad else 0


def section_defaults(section: str) -> Dict[str, Any]:
    """Schema defaults of one top-level object section (e.g. ``train``)."""
    props = load_schema()["properties"][section].get("properties", {})
    return {k: copy.deepcopy(v["default"]) for k, v in props.items() if "default" in v}


def dataset_preset(dataset: str) -> Dict[str, Any]:
    """The official ``run_code.sh`` train values of ``dataset`` (``ReIDDataset.train_preset``); none for an
    unknown name (start-up names it elsewhere)."""
    from .datasets import DATASETS  # lazily: the dataset package imports pandas

    return copy.deepcopy(dict(DATASETS.get(dataset).train_preset)) if dataset in DATASETS else {}


def _train_layers(config: Mapping[str, Any], dataset: str, experiment: str) -> Iterator[Tuple[str, Mapping[str, Any]]]:
    """The ``train`` layers of one run, lowest precedence first, each with the key path it is written at.

    The dataset's official preset sits under the user's ``dataset_overrides`` block, key by key, and is
    named by the key that changes it.
    """
    overrides = f"dataset_overrides.{dataset}.train"
    yield "train", config.get("train", {})
    yield overrides, dataset_preset(dataset)
    yield overrides, config.get("dataset_overrides", {}).get(dataset, {}).get("train", {})
    yield f"experiments.{experiment}.train", config["experiments"][experiment].get("train", {})


def train_origins(config: Mapping[str, Any], dataset: str, experiment: str) -> Dict[str, str]:
    """Where each effective ``train`` key of a run is set: the key path as the user writes it.

    The precedence is :func:`train_settings`'s; a key no layer sets is named ``train.<key>``.
    """
    out = {k: f"train.{k}" for k in section_defaults("train")}
    for prefix, layer in _train_layers(config, dataset, experiment):
        out.update({k: f"{prefix}.{k}" for k in layer})
    return out


def _check_names(config: Mapping[str, Any], blame: Callable[..., str]) -> None:
    """Experiment names that differ only in case would share a run folder on a case-insensitive file system.

    The schema's ``propertyNames`` keeps each name one plain folder name; this is the rule between names.
    """
    first: Dict[str, str] = {}
    for name in config.get("experiments", {}):
        other = first.setdefault(name.lower(), name)
        if other != name:
            raise ConfigError(f"{blame(('experiments',), name)}: key experiments.{name}: the name differs from "
                              f"experiments.{other} only in case, and on a case-insensitive file system (macOS, "
                              f"Windows) both would write {RESULTS}/<dataset>/runs/{other.lower()}; rename one")


def _check_override_datasets(config: Mapping[str, Any], blame: Callable[..., str]) -> None:
    """Every key of ``dataset_overrides`` is a registered dataset."""
    from .datasets import DATASETS  # lazily: the dataset package imports pandas

    known = DATASETS.names()
    for name in config.get("dataset_overrides", {}):
        if name not in known:
            raise ConfigError(f"{blame(('dataset_overrides',), name)}: key dataset_overrides.{name}: {name!r} is "
                              f"not a registered dataset; use one of {', '.join(known)} (or remove the block)")


def _check_method_switches(config: Mapping[str, Any], blame: Callable[..., str]) -> None:
    """An experiment sets only its own method's switches and own keys (``maskcl.methods``: each method's facts).

    A switch of another method (``refine`` on a ``clustercontrast`` experiment) would change nothing
    the method computes, yet name a variant; it is refused with the method's own switches.
    """
    for name, exp in config.get("experiments", {}).items():
        facts = get_method(exp["method"])
        for key in exp.get("train", {}):
            path = ("experiments", name, "train", key)
            owners = switch_owners(key)
            if owners and key not in facts.switch_keys:
                raise ConfigError(f"{blame(path)}: key experiments.{name}.train.{key}: method {facts.name} has no "
                                  f"component switch {key} (a switch of {', '.join(owners)}); remove the key or "
                                  f"change experiments.{name}.method; allowed switches of {facts.name}: "
                                  f"{', '.join(facts.switch_keys) or 'none'}")
            owners = key_owners(key)
            if owners and key not in facts.read_keys:
                raise ConfigError(f"{blame(path)}: key experiments.{name}.train.{key}: method {facts.name} does not "
                                  f"read {key} (only {', '.join(owners)} does); remove the key or change "
                                  f"experiments.{name}.method; the method-specific keys {facts.name} reads: "
                                  f"{', '.join(facts.read_keys) or 'none'}")


def _check_overrides(config: Mapping[str, Any], blame: Callable[..., str]) -> None:
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
            where = blame(("dataset_overrides", d, "train", unknown[0]))
            raise ConfigError(f"{where}: key dataset_overrides.{d}.train.{unknown[0]}: unknown train key; "
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
                where = blame(path.split("."))  # names of datasets, experiments and keys hold no dot
                problems.setdefault(path, f"{where}: key {path}: {err.message}; {_fix(err)}")
    if problems:
        first = next(iter(problems.values()))
        raise ConfigError(first + _more(len(problems) - 1))


def check_train_rules(settings: Mapping[str, Any], origins: Mapping[str, str], method: str) -> None:
    """Rules between effective ``train`` keys of one run that the schema cannot express.

    ``origins`` is :func:`train_origins` (each key is named by the path it is written at); ``method``
    is the run's, whose facts (``maskcl.methods``) say which rules apply (the refinement's only to a
    method with the ``refine`` switch). Raises ``ConfigError`` (one line, no file name) on the first
    broken rule. The training job keeps its own checks of the process layout
    (``maskcl.training.settings.check_settings``).
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
    facts = get_method(method)
    refine = "refine" in facts.switch_keys
    if "eps_gap" in facts.read_keys and (not refine or settings["refine"]):  # a tight DBSCAN at eps - eps_gap runs
        eps, gap = float(settings["eps"]), float(settings["eps_gap"])
        if not eps - gap > 0:
            while_on = f" while {path('refine')} is on" if refine else ""
            fix = f" or set {path('refine')}: false" if refine else ""
            raise ConfigError(f"key {name('eps_gap')} must be smaller than {name('eps')}{while_on}: "
                              f"{facts.short_name}'s tight DBSCAN runs at eps - eps_gap, which must be > 0; lower "
                              f"{path('eps_gap')} below {eps}{fix}")
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
    """Schema defaults < config ``train`` < the dataset's official preset < ``dataset_overrides[dataset].train``
    < experiment overrides (:func:`_train_layers`)."""
    if experiment not in config.get("experiments", {}):
        known = ", ".join(sorted(config.get("experiments", {})))
        raise ConfigError(f"config.yaml: experiments.{experiment} is not defined; known experiments: {known}")
    out = section_defaults("train")
    for _, layer in _train_layers(config, dataset, experiment):
        out.update(copy.deepcopy(dict(layer)))
    out["method"] = config["experiments"][experiment]["method"]
    return out


def settings_from_dict(cls: Any, values: Mapping[str, Any], section: str, hidden: frozenset = frozenset()) -> Any:
    """Build a settings dataclass, naming the config section and the known keys on an unknown one."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(k for k in values if k not in names)
    if unknown:
        raise ConfigError(f"config {section}: unknown key(s) {unknown}; known keys: {sorted(names - set(hidden))}")
    return cls(**dict(values))


if __name__ == "__main__":
    sys.exit(main())
