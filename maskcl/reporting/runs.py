"""Run folders and what they hold: identity, method and settings from what the run recorded.

A run folder is ``results/{dataset}/runs/{experiment}/{masks}/seed{seed}/``. A run's identity
(dataset, experiment, masks, seed) is what the evaluate stage recorded in ``metrics.json``
(``provenance.config.run``); the folder is only checked to be the one that identity names, never
parsed. The method and the component switches used by the ablation tables come first from the
recorded ``provenance.config.run`` and ``provenance.config.train`` (the trained model's own
settings), then from the config's experiments (passed in, never read here) for files that do not
record them; so do the mask source and mode. Recorded and configured values that disagree mean a
stale run, and are reported as an error rather than picked between.

Every number a table shows is checked on load (:func:`check_metrics`): each protocol has every
metric of ``METRIC_KEYS``, as a fraction in [0, 1] (``maskcl.evaluation.output`` writes fractions;
only the renderers make percentages), null only where no query had a valid match; CMC values are
fractions that never decrease and agree with the rank-k values; counts are non-negative integers.
A file that fails is reported with its path, the value and the command that re-evaluates the run.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ..io import read_text_file
from ..errors import ReportingError
from ..methods import METHOD_FACTS, switch_columns
from ..repair import model_repair_hint
from ..upstream import rerun_hint

__all__ = ["RunKey", "Run", "METRICS_FORMATS", "METRIC_KEYS", "load_runs", "check_metrics", "component_flags",
           "COMPONENTS", "official_switches", "components_of"]

log = logging.getLogger(__name__)

#: metrics.json layouts this package understands (``maskcl.evaluation.output.METRICS_FORMAT``).
METRICS_FORMATS: Tuple[str, ...] = ("maskcl-metrics/1",)

#: Summary keys of a protocol in metrics.json, in table order: fractions in [0, 1].
METRIC_KEYS: Tuple[str, ...] = ("mAP", "mINP", "rank1", "rank5", "rank10", "rank20")
#: Counts of a protocol summary (non-negative integers where present).
COUNT_KEYS: Tuple[str, ...] = ("num_queries", "num_valid_queries", "num_skipped_queries", "num_gallery",
                               "num_gallery_pool", "num_trials", "num_query_ids", "num_gallery_ids")
#: Slack of the consistency checks (rank-k against the CMC, CMC monotone): float noise of a mean.
_TOL = 1e-6

#: Every registered method's component switches (``TrainSettings`` keys) compared in the component
#: ablation, with their column labels: a view of the methods' facts (``maskcl.methods.switch_columns``).
COMPONENTS: Dict[str, str] = {key: switch.label for key, switch in switch_columns().items()}


def components_of(methods: Iterable[str]) -> Dict[str, str]:
    """The :data:`COMPONENTS` that ``methods`` have, in column order: a report shows the switches of the
    methods it has runs of, so adding a method to the registry adds no empty column to anyone's tables."""
    have = {k for m in set(methods) for k in official_switches(m)}
    return {k: label for k, label in COMPONENTS.items() if k in have}


def official_switches(method: str) -> Dict[str, Any]:
    """Each component switch of ``method`` with its value in the method's official code (none for a method
    without switches, or no longer registered): a run that differs in any is a variant."""
    return METHOD_FACTS.get(method).official_switches if method in METHOD_FACTS else {}


#: What ``provenance.config.run`` must hold: the run's identity.
IDENTITY: Tuple[str, ...] = ("dataset", "experiment", "masks", "seed")
#: The ``masks`` of runs trained without masks.
NO_MASKS = "none"

PathLike = os.PathLike | str


@dataclass(frozen=True, order=True)
class RunKey:
    """Which run: ``results/{dataset}/runs/{experiment}/{masks}/seed{seed}``, plus its mask source and mode.

    ``mask_source`` and ``mask_mode`` are None for RGB-only runs (``masks`` ``none``); they are not
    part of the identity (``masks`` already is).
    """

    dataset: str
    experiment: str
    masks: str
    seed: int
    mask_source: Optional[str] = field(default=None, compare=False)
    mask_mode: Optional[str] = field(default=None, compare=False)

    @property
    def group(self) -> Tuple[str, str, str]:
        """The seeds of one (dataset, experiment, masks) are aggregated together."""
        return (self.dataset, self.experiment, self.masks)

    @property
    def folder_parts(self) -> Tuple[str, ...]:
        """The last components of the run folder: ``{dataset}/runs/{experiment}/{masks}/seed{seed}``."""
        return (self.dataset, "runs", self.experiment, self.masks, f"seed{self.seed}")


@dataclass
class Run:
    """One evaluated run: its key, method, effective settings and file paths."""

    key: RunKey
    method: str
    settings: Dict[str, Any]
    metrics_path: Path
    metrics: Dict[str, Any]
    ranks_path: Optional[Path] = None
    train_log_path: Optional[Path] = None
    components: Dict[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.metrics_path.parent

    @property
    def variant(self) -> bool:
        """A run with a component switch of its method off the official value: labelled a variant, never
        the method (a method without switches has no variant)."""
        return any(k in self.components and self.components[k] != v
                   for k, v in official_switches(self.method).items())


def component_flags(settings: Mapping[str, Any], method: str) -> Dict[str, Any]:
    """Each component switch of ``method`` in effective train settings (``TrainSettings`` defaults fill
    gaps), of its official value's type (bool switches, ``cluster_on`` a feature name); another method's
    switches are not the run's components."""
    from ..training.settings import TrainSettings

    defaults = TrainSettings.defaults()
    own = official_switches(method)
    return {k: type(switch.official)(settings.get(k, getattr(defaults, k)))
            for k, switch in switch_columns().items() if k in own}


def _read_metrics(path: Path) -> Dict[str, Any]:
    fix = rerun_hint(path, "evaluate")
    doc = read_text_file(path, json.load, what="metrics file", error=ReportingError, syntax=(json.JSONDecodeError,),
                         describe=lambda e: f"not valid JSON ({e.msg}, line {e.lineno}: truncated or garbled)",
                         missing="; run the evaluate rule for this run", fix=f"; {fix}")
    if not isinstance(doc, dict) or doc.get("format") not in METRICS_FORMATS:
        fmt = doc.get("format") if isinstance(doc, dict) else None
        raise ReportingError(f"{path}: metrics format {fmt!r} is not one of {', '.join(METRICS_FORMATS)}; "
                             f"rerun the evaluate rule with this version of maskcl: {fix.split(': ', 1)[1]}")
    return doc


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_metrics(path: PathLike, doc: Mapping[str, Any]) -> None:
    """Check every protocol summary of a metrics document (see the module docstring).

    Raises
    ------
    ReportingError
        ``<path>: metric <protocol>.<key> = <value> is outside [0, 1]; rerun the evaluate rule: ...``
        and the like for a missing, null, non-numeric or inconsistent value.
    """
    fix = rerun_hint(path, "evaluate")

    def bad(what: str) -> ReportingError:
        return ReportingError(f"{path}: {what}; {fix}")

    for name, summ in (doc.get("protocols") or {}).items():
        if not isinstance(summ, dict):
            raise bad(f"protocol {name!r} is not a summary object")
        for k in COUNT_KEYS:
            v = summ.get(k)
            if k in summ and v is not None and not (_is_number(v) and math.isfinite(v) and v >= 0 and v == int(v)):
                raise bad(f"count {name}.{k} = {v!r} is not a non-negative integer")
        valid = summ.get("num_valid_queries")
        undefined_ok = valid == 0

        def fraction(label: str, v: Any) -> None:
            if v is None:
                if not undefined_ok:
                    why = f"num_valid_queries is {valid}" if valid is not None else "num_valid_queries is missing"
                    raise bad(f"metric {label} is null (undefined) but {why}")
                return
            if not _is_number(v):
                raise bad(f"metric {label} = {v!r} is not a number")
            if not math.isfinite(v):
                raise bad(f"metric {label} = {v!r} is not finite")
            if not 0.0 <= v <= 1.0:
                raise bad(f"metric {label} = {v!r} is outside [0, 1]")

        for k in METRIC_KEYS:
            if k not in summ:
                raise bad(f"metric {name}.{k} is missing")
            fraction(f"{name}.{k}", summ[k])
            std = summ.get(f"{k}_std")
            if std is not None and not (_is_number(std) and math.isfinite(std) and std >= 0):
                raise bad(f"metric {name}.{k}_std = {std!r} is not a finite non-negative number")
        cmc = summ.get("cmc", [])
        if not isinstance(cmc, list):
            raise bad(f"metric {name}.cmc is not a list")
        for i, v in enumerate(cmc):
            fraction(f"{name}.cmc[{i}]", v)
        values = [v for v in cmc if v is not None]
        drops = [i for i in range(1, len(values)) if values[i] < values[i - 1] - _TOL]
        if drops and len(values) == len(cmc):
            i = drops[0]
            raise bad(f"metric {name}.cmc decreases at rank {i + 1} ({values[i - 1]!r} then {values[i]!r}; a CMC "
                      f"never decreases)")
        ranks = [(int(k[4:]), summ[k]) for k in METRIC_KEYS if k.startswith("rank") and summ[k] is not None]
        for (ka, va), (kb, vb) in zip(ranks, ranks[1:]):
            if vb < va - _TOL:
                raise bad(f"metric {name}.rank{kb} = {vb!r} is below {name}.rank{ka} = {va!r}")
        if len(values) == len(cmc):
            for k, v in ranks:
                if k <= len(cmc) and abs(cmc[k - 1] - v) > _TOL:
                    raise bad(f"metric {name}.rank{k} = {v!r} disagrees with {name}.cmc[{k - 1}] = {cmc[k - 1]!r}")


def _recorded(doc: Mapping[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``provenance.config.run`` and ``provenance.config.train`` of a metrics document ({} when absent)."""
    cfg = (doc.get("provenance") or {}).get("config") or {}
    if not isinstance(cfg, dict):
        return {}, {}
    run, train = cfg.get("run"), cfg.get("train")
    return (dict(run) if isinstance(run, dict) else {}), (dict(train) if isinstance(train, dict) else {})


def _mask_choice(path: Path, rec_run: Mapping[str, Any], masks: str,
                 configured: Optional[Mapping[str, Any]]) -> Tuple[Optional[str], Optional[str]]:
    """Mask source and mode: recorded, else none for ``none``, else the configured experiment's (same masks).

    Without either (``load_runs`` called without the experiments) they are unknown (None); configured
    masks other than the recorded ones are a stale run.
    """
    if rec_run.get("mask_source") is not None or rec_run.get("mask_mode") is not None:
        return rec_run.get("mask_source"), rec_run.get("mask_mode")
    if masks == NO_MASKS:
        return None, None
    if configured is not None and configured.get("masks") == masks:
        return configured.get("mask_source"), configured.get("mask_mode")
    if configured is None or "masks" not in configured:
        log.warning("%s: masks %r without a recorded or configured mask source and mode; shown as unknown", path,
                    masks)
        return None, None
    raise ReportingError(f"{path}: recorded for masks {masks!r}, but neither metrics.json nor the config names their "
                         f"mask source and mode (the config's experiment trains with masks {configured['masks']!r}: "
                         f"a stale run, rerun train and evaluate)")


def _key(path: Path, doc: Mapping[str, Any], rec_run: Mapping[str, Any],
         configured: Optional[Mapping[str, Any]]) -> RunKey:
    """The run's identity from ``provenance.config.run``, checked against the document and the folder."""
    missing = [k for k in IDENTITY if rec_run.get(k) is None]
    if missing:
        raise ReportingError(f"{path}: records no run identity (provenance.config.run lacks {', '.join(missing)}); "
                             f"rerun the evaluate rule for this run")
    try:
        seed = int(rec_run["seed"])
    except (TypeError, ValueError):
        raise ReportingError(f"{path}: provenance.config.run seed {rec_run['seed']!r} is not an integer; rerun the "
                             f"evaluate rule for this run") from None
    key = RunKey(dataset=str(rec_run["dataset"]), experiment=str(rec_run["experiment"]), masks=str(rec_run["masks"]),
                 seed=seed)
    if doc.get("dataset") != key.dataset:
        raise ReportingError(f"{path}: metrics are for dataset {doc.get('dataset')!r} but provenance.config.run "
                             f"names dataset {key.dataset!r}; rerun the evaluate rule for this run")
    protocols = doc.get("protocols")
    if not isinstance(protocols, dict) or not protocols:
        raise ReportingError(f"{path}: no protocol results; rerun the evaluate rule for this run")
    want = key.folder_parts
    have = (("",) * len(want) + path.parent.parts)[-len(want):]
    if have != want:
        names = ("dataset", "", "experiment", "masks", "seed")
        wrong = ", ".join(f"{n} {getattr(key, n)!r}" for n, w, h in zip(names, want, have) if n and w != h)
        raise ReportingError(f"{path}: not inside a run folder of the run it records: written for "
                             f"{wrong or 'a run folder'} but it sits in the run folder {path.parent} (expected "
                             f".../{'/'.join(want)}; a copied or moved file); rerun the evaluate rule")
    source, mode = _mask_choice(path, rec_run, key.masks, configured)
    return replace(key, mask_source=source, mask_mode=mode)


def _by_folder(paths: Iterable[PathLike], what: str, folders: Mapping[Path, RunKey]) -> Dict[Path, Path]:
    out: Dict[Path, Path] = {}
    for p in paths:
        p = Path(p)
        if p.parent not in folders:
            raise ReportingError(f"{p}: {what} of a run that has no metrics.json among the inputs; list every "
                                 f"evaluated run's metrics.json (or drop this {what})")
        out[p.parent] = p
    return out


def _foreign_model(path: Path, key: RunKey, rec_train: Mapping[str, Any],
                   configured: Optional[Mapping[str, Any]]) -> None:
    """Refuse a run whose model recorded other training settings than the config gives its run.

    ``provenance.config.train`` of metrics.json is the evaluated model's own record. Against the
    plan's merged settings of the run (the experiment's ``settings`` of its dataset) every setting is
    compared, as the evaluate stage compares them (``maskcl.training.settings.settings_difference``);
    without them (a caller that passes only the overrides), the experiment's ``train`` overrides
    are. So a foreign model never reaches a table, not even through a metrics.json written before
    the evaluate stage checked its model.
    """
    from ..training.settings import settings_difference

    model = path.parent / "model.pt"
    planned = (configured or {}).get("settings")
    if planned is not None:
        expected = planned.get(key.dataset)
        if expected is None:
            raise ReportingError(f"{path}: experiment {key.experiment} plans no run on dataset {key.dataset} "
                                 f"(planned: {', '.join(sorted(planned)) or 'none'}); list only the config's runs")
        if not rec_train:
            raise ReportingError(f"{path}: records no training settings of its model (provenance.config.train), so "
                                 f"it cannot be shown to be this run's; {rerun_hint(path, 'evaluate')}")
        diff = settings_difference(rec_train, expected)
    else:   # the overrides as the config writes them; ``pretrained: ssl`` becomes the warm-up's path in a run
        overrides = {k: v for k, v in dict((configured or {}).get("train") or {}).items()
                     if not (k == "pretrained" and v == "ssl")}
        diff = settings_difference(rec_train, overrides, only=overrides) if rec_train and overrides else None
    if diff is not None:
        what = diff.describe("metrics.json (provenance.config.train, the model's own)", "the config")
        raise ReportingError(f"{path}: not this run's model: {what}; {model_repair_hint(model)}")


def load_runs(metrics: Sequence[PathLike], experiments: Optional[Mapping[str, Mapping[str, Any]]] = None, *,
              ranks: Sequence[PathLike] = (), train_logs: Sequence[PathLike] = ()) -> List[Run]:
    """Load every run's ``metrics.json`` and attach its ``ranks.npz`` and ``train_log.csv``.

    Parameters
    ----------
    metrics : sequence of path-like
        One ``metrics.json`` per run folder; each records its run (``provenance.config.run``:
        dataset, experiment, masks, seed, and usually method).
    experiments : mapping, optional
        The config's experiments: experiment → ``{"method": ..., "masks": ..., "mask_source": ...,
        "mask_mode": ..., "train": {overrides}, "settings": {dataset: merged training settings}}``
        (``rules/common.smk::experiment_settings``; other keys ignored). Used for runs whose
        metrics.json does not record its method, training settings or mask source and mode, and to
        check those that do: with ``settings``, a run's recorded training settings must equal its
        dataset's (every key but ``workers``), else the ``train`` overrides' keys.
    ranks, train_logs : sequence of path-like
        Files beside the metrics files (each must belong to one of the runs).

    Returns
    -------
    list of Run
        Sorted by key. ``settings`` are the recorded training settings when present, else the
        experiment's ``train`` overrides plus ``method``.

    Raises
    ------
    ReportingError
        No metrics files, a metrics file without a run identity or outside the folder of the run it
        records, a duplicate run, a malformed metrics file or one whose numbers fail
        :func:`check_metrics`, recorded and configured methods that disagree, or a run whose method
        (or mask source and mode) is neither recorded nor configured, or a model whose recorded
        training settings differ from its run's (a foreign model: the fix retrains the run).
    """
    if not metrics:
        raise ReportingError("no metrics.json inputs: run the train and evaluate rules first (the tables rule "
                             "needs at least one evaluated run)")
    experiments = experiments or {}
    loaded: List[Tuple[Path, RunKey, Dict[str, Any], Dict[str, Any], Dict[str, Any]]] = []
    folders: Dict[Path, RunKey] = {}
    for m in metrics:
        m = Path(m)
        if m.parent in folders:
            raise ReportingError(f"{m}: listed twice; pass each run's metrics.json once")
        doc = _read_metrics(m)
        rec_run, rec_train = _recorded(doc)
        key = _key(m, doc, rec_run, experiments.get(str(rec_run.get("experiment"))))
        check_metrics(m, doc)
        folders[m.parent] = key
        loaded.append((m, key, doc, rec_run, rec_train))
    rank_files = _by_folder(ranks, "ranks.npz", folders)
    log_files = _by_folder(train_logs, "train_log.csv", folders)
    runs: List[Run] = []
    for m, key, doc, rec_run, rec_train in loaded:
        configured = experiments.get(key.experiment)
        sources = {"metrics.json (provenance.config.run)": rec_run.get("method"),
                   "metrics.json (provenance.config.train)": rec_train.get("method"),
                   "the config's experiments": configured.get("method") if configured else None}
        found = {k: str(v) for k, v in sources.items() if v}
        if not found:
            known = ", ".join(sorted(experiments)) or "none"
            raise ReportingError(f"{m}: records no method and experiment {key.experiment!r} is not in the config's "
                                 f"experiments (known: {known}); add it or remove the stale run folder")
        if len(set(found.values())) > 1:
            detail = "; ".join(f"{k}: {v}" for k, v in found.items())
            raise ReportingError(f"{m}: the method disagrees ({detail}); the run is stale, rerun train and evaluate")
        method = next(iter(found.values()))
        _foreign_model(m, key, rec_train, configured)
        if rec_train:
            settings = dict(rec_train)
        else:
            settings = dict((configured or {}).get("train") or {})
        settings["method"] = method
        runs.append(Run(key=key, method=method, settings=settings, metrics_path=m, metrics=doc,
                        ranks_path=rank_files.get(m.parent), train_log_path=log_files.get(m.parent),
                        components=component_flags(settings, method)))
    runs.sort(key=lambda r: r.key)
    log.info("loaded %d run(s): %s", len(runs), ", ".join(sorted({f"{r.key.dataset}/{r.key.experiment}/"
                                                                   f"{r.key.masks}" for r in runs})))
    return runs
