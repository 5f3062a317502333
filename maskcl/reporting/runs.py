"""Run folders and what they hold: identity from the path, method and settings from the run itself.

A run folder is ``results/{dataset}/runs/{experiment}/{masks}/seed{seed}/``. The path is the source
of truth for the run's identity. The method and the component switches used by the ablation tables
come first from what the evaluate stage recorded in ``metrics.json`` (``provenance.config.run`` and
``provenance.config.train``: the trained model's own settings), then from the config's experiments
(passed in, never read here) for files that do not record them. Recorded and configured values
that disagree mean a stale run, and are reported as an error rather than picked between.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ..errors import ReportingError

__all__ = ["RunKey", "Run", "METRICS_FORMATS", "parse_run_path", "load_runs", "component_flags", "COMPONENTS"]

log = logging.getLogger(__name__)

#: metrics.json layouts this package understands (``maskcl.evaluation.output.METRICS_FORMAT``).
METRICS_FORMATS: Tuple[str, ...] = ("maskcl-metrics/1",)

#: MaskCL component switches (``TrainSettings`` keys) compared in the component ablation, with labels.
COMPONENTS: Dict[str, str] = {"crossview_loss": "Cross-view", "neighbour_loss": "Neighbour", "refine": "Refinement"}

_SEED = re.compile(r"^seed(\d+)$")

PathLike = os.PathLike | str


@dataclass(frozen=True, order=True)
class RunKey:
    """Where a run lives: ``results/{dataset}/runs/{experiment}/{masks}/seed{seed}``."""

    dataset: str
    experiment: str
    masks: str
    seed: int

    @property
    def mask_source(self) -> Optional[str]:
        """``groundtruth`` of ``groundtruth-silhouette``; None for RGB-only runs (``none``)."""
        return None if self.masks == "none" else self.masks.split("-", 1)[0]

    @property
    def mask_mode(self) -> Optional[str]:
        if self.masks == "none" or "-" not in self.masks:
            return None
        return self.masks.split("-", 1)[1]

    @property
    def group(self) -> Tuple[str, str, str]:
        """The seeds of one (dataset, experiment, masks) are aggregated together."""
        return (self.dataset, self.experiment, self.masks)


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
    components: Dict[str, bool] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.metrics_path.parent


def parse_run_path(path: PathLike) -> RunKey:
    """Read dataset, experiment, masks and seed from a file inside a run folder.

    Parameters
    ----------
    path : path-like
        ``.../{dataset}/runs/{experiment}/{masks}/seed{seed}/<file>``.

    Returns
    -------
    RunKey

    Raises
    ------
    ReportingError
        The path is not inside a run folder.
    """
    p = Path(path)
    parts = p.parts
    if len(parts) < 6 or parts[-5] != "runs" or not _SEED.match(parts[-2]):
        raise ReportingError(f"{path}: not inside a run folder results/{{dataset}}/runs/{{experiment}}/{{masks}}/"
                             f"seed{{seed}}/; pass the files the evaluate and train rules wrote")
    seed = int(_SEED.match(parts[-2]).group(1))  # type: ignore[union-attr]
    return RunKey(dataset=parts[-6], experiment=parts[-4], masks=parts[-3], seed=seed)


def component_flags(settings: Mapping[str, Any]) -> Dict[str, bool]:
    """The MaskCL component switches of effective train settings (``TrainSettings`` defaults fill gaps)."""
    from ..training.settings import TrainSettings

    defaults = TrainSettings()
    return {k: bool(settings.get(k, getattr(defaults, k))) for k in COMPONENTS}


def _read_metrics(path: Path, key: RunKey) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise ReportingError(f"{path}: metrics file not found; run the evaluate rule for this run") from None
    except json.JSONDecodeError as e:
        raise ReportingError(f"{path}: not valid JSON ({e.msg}, line {e.lineno}); rerun the evaluate rule") from None
    if not isinstance(doc, dict) or doc.get("format") not in METRICS_FORMATS:
        fmt = doc.get("format") if isinstance(doc, dict) else None
        raise ReportingError(f"{path}: metrics format {fmt!r} is not one of {', '.join(METRICS_FORMATS)}; "
                             f"rerun the evaluate rule with this version of maskcl")
    if doc.get("dataset") != key.dataset:
        raise ReportingError(f"{path}: metrics are for dataset {doc.get('dataset')!r} but the run folder is under "
                             f"{key.dataset!r}; rerun the evaluate rule for this run")
    protocols = doc.get("protocols")
    if not isinstance(protocols, dict) or not protocols:
        raise ReportingError(f"{path}: no protocol results; rerun the evaluate rule for this run")
    return doc


def _by_folder(paths: Iterable[PathLike], what: str, folders: Mapping[Path, RunKey]) -> Dict[Path, Path]:
    out: Dict[Path, Path] = {}
    for p in paths:
        p = Path(p)
        if p.parent not in folders:
            raise ReportingError(f"{p}: {what} of a run that has no metrics.json among the inputs; list every "
                                 f"evaluated run's metrics.json (or drop this {what})")
        out[p.parent] = p
    return out


def _recorded(doc: Mapping[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``provenance.config.run`` and ``provenance.config.train`` of a metrics document ({} when absent)."""
    cfg = (doc.get("provenance") or {}).get("config") or {}
    if not isinstance(cfg, dict):
        return {}, {}
    run, train = cfg.get("run"), cfg.get("train")
    return (dict(run) if isinstance(run, dict) else {}), (dict(train) if isinstance(train, dict) else {})


def _check_identity(path: Path, key: RunKey, recorded: Mapping[str, Any]) -> None:
    for name in ("dataset", "experiment", "masks", "seed"):
        if name in recorded and str(recorded[name]) != str(getattr(key, name)):
            raise ReportingError(f"{path}: written for {name} {recorded[name]!r} but it sits in the run folder of "
                                 f"{name} {getattr(key, name)!r} (a copied or moved file); rerun the evaluate rule")


def load_runs(metrics: Sequence[PathLike], experiments: Optional[Mapping[str, Mapping[str, Any]]] = None, *,
              ranks: Sequence[PathLike] = (), train_logs: Sequence[PathLike] = ()) -> List[Run]:
    """Load every run's ``metrics.json`` and attach its ``ranks.npz`` and ``train_log.csv``.

    Parameters
    ----------
    metrics : sequence of path-like
        One ``metrics.json`` per run folder.
    experiments : mapping, optional
        The config's experiments: experiment → ``{"method": ..., "train": {overrides}}`` (other keys
        ignored). Used for runs whose metrics.json does not record its method and training settings,
        and to check those that do.
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
        No metrics files, a path outside a run folder, a duplicate run, a malformed metrics file, a
        file recorded for another run, recorded and configured methods that disagree, or a run whose
        method is neither recorded nor configured.
    """
    if not metrics:
        raise ReportingError("no metrics.json inputs: run the train and evaluate rules first (the tables rule "
                             "needs at least one evaluated run)")
    experiments = experiments or {}
    folders: Dict[Path, RunKey] = {}
    for m in metrics:
        m = Path(m)
        key = parse_run_path(m)
        if m.parent in folders:
            raise ReportingError(f"{m}: listed twice; pass each run's metrics.json once")
        folders[m.parent] = key
    rank_files = _by_folder(ranks, "ranks.npz", folders)
    log_files = _by_folder(train_logs, "train_log.csv", folders)
    runs: List[Run] = []
    for m in metrics:
        m = Path(m)
        key = folders[m.parent]
        doc = _read_metrics(m, key)
        rec_run, rec_train = _recorded(doc)
        _check_identity(m, key, rec_run)
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
        if rec_train:
            settings = dict(rec_train)
        else:
            settings = dict((configured or {}).get("train") or {})
        settings["method"] = method
        runs.append(Run(key=key, method=method, settings=settings, metrics_path=m, metrics=doc,
                        ranks_path=rank_files.get(m.parent), train_log_path=log_files.get(m.parent),
                        components=component_flags(settings)))
    runs.sort(key=lambda r: r.key)
    log.info("loaded %d run(s): %s", len(runs), ", ".join(sorted({f"{r.key.dataset}/{r.key.experiment}/"
                                                                   f"{r.key.masks}" for r in runs})))
    return runs
