"""Configuration validation against the JSON schema, with defaults filled in.

The Snakefile calls ``validate_config`` at parse time, so a bad value fails before any job runs,
with one line naming the key and the fix. ``train_settings`` merges schema defaults, the dataset's
official preset and an experiment's overrides into the flat dict a training job receives.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from importlib import resources
from typing import Any, Dict, Iterator, Mapping

import yaml
from jsonschema import Draft202012Validator, validators

from .errors import ConfigError

__all__ = ["load_schema", "validate_config", "load_config", "train_settings", "section_defaults",
           "settings_from_dict"]


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


_Filling = _with_defaults(Draft202012Validator)


def _where(error: Any) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def validate_config(config: Dict[str, Any], source: str = "config.yaml") -> Dict[str, Any]:
    """Validate ``config`` in place (filling defaults) and return it.

    Raises ``ConfigError`` with one line: the file, the key path, the reason and the fix.
    """
    validator = _Filling(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(list(e.absolute_path)), e.message))
    if errors:
        e = errors[0]
        more = f" ({len(errors) - 1} more problem(s) after fixing this one)" if len(errors) > 1 else ""
        raise ConfigError(f"{source}: key {_where(e)}: {e.message}; fix it to match "
                          f"maskcl/schemas/config.schema.yaml{more}")
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
