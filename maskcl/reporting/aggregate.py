"""From run documents to two long tables: one row per (run, protocol), and seeds aggregated.

Values stay fractions in [0, 1] here (the CSV files keep them raw); only the renderers turn them
into percentages. Seeds are aggregated as mean and sample standard deviation (ddof=1, NaN for a
single seed) with ``n`` stated, because a single-seed number and a 3-seed mean are not the same
claim.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from ..evaluation.protocols import PROTOCOLS
from ..errors import ReportingError
from ..hardware import describe_hardware
from ..methods import report_order as method_order
from .labels import group_of, protocol_short, run_label, supervision
from .runs import COMPONENTS, METRIC_KEYS, Run, components_of

__all__ = ["HARDWARE_SEP", "METRIC_KEYS", "METRIC_HEADERS", "LAST_QUALITY", "last_epoch_quality", "per_seed_frame", "aggregate_seeds", "protocol_order",
           "dataset_order", "cmc_frame"]

log = logging.getLogger(__name__)

#: Column headers of the summary keys of a protocol (``METRIC_KEYS``, in table order).
METRIC_HEADERS = {"mAP": "mAP", "mINP": "mINP", "rank1": "R1", "rank5": "R5", "rank10": "R10", "rank20": "R20"}
_COUNTS = ("num_queries", "num_valid_queries", "num_skipped_queries", "num_gallery", "num_trials")
IDENTITY = ["dataset", "protocol", "experiment", "method", "masks"]
#: Joins the distinct hardware phrases of one aggregated row (a phrase itself uses "; ").
HARDWARE_SEP = " | "
#: Pseudo-label quality the tables report per run: train_log.csv column → table column (last epoch's value).
LAST_QUALITY: Dict[str, str] = {"ari_id": "last_ari_id", "ari_clothes": "last_ari_clothes"}


def dataset_order(datasets: Sequence[str]) -> List[str]:
    known = list(PROTOCOLS)
    return sorted(set(datasets), key=lambda d: (known.index(d) if d in known else len(known), d))


def protocol_order(dataset: str, protocols: Sequence[str]) -> List[str]:
    """The dataset's protocol order (``maskcl.evaluation.protocols``), unknown names last."""
    known = [p.name for p in PROTOCOLS.get(dataset, ())]
    return sorted(set(protocols), key=lambda p: (known.index(p) if p in known else len(known), p))


def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


def per_seed_frame(runs: Sequence[Run], quality: Optional[Mapping[Path, Mapping[str, float]]] = None) -> pd.DataFrame:
    """One row per (run, protocol) with raw fractions, counts and where the number came from.

    ``quality`` maps a run folder to its last epoch's pseudo-label quality
    (``maskcl.reporting.curves.last_epoch_quality``); runs without an entry get NaN there.

    Returns
    -------
    pandas.DataFrame
        Columns: dataset, protocol, headline, description, short, rule, single_shot, experiment,
        method, supervision, label, masks, mask_source, mask_mode, seed, the component switches of the
        methods run,
        ``METRIC_KEYS`` (and ``<metric>_draw_std`` for single-shot protocols: spread over gallery
        draws within the run), counts, eval_metric, rerank, flip (from the provenance), hardware (what
        trained the model: ``maskcl.hardware.describe_hardware`` of ``provenance.training``), the
        ``LAST_QUALITY`` columns, metrics_path.
    """
    quality = quality or {}
    comps = components_of(run.method for run in runs)  # the switches of the methods run, not of every method
    rows: List[Dict[str, Any]] = []
    for run in runs:
        doc = run.metrics
        settings = doc.get("settings") or {}
        for name, summ in doc["protocols"].items():
            if not isinstance(summ, dict):
                raise ReportingError(f"{run.metrics_path}: protocol {name!r} is not a summary object; rerun the "
                                     f"evaluate rule")
            row: Dict[str, Any] = {
                "dataset": run.key.dataset, "protocol": name, "headline": name == doc.get("headline_protocol"),
                "description": summ.get("description", ""),
                "short": protocol_short(run.key.dataset, name, summ.get("description")),
                "rule": summ.get("rule"), "single_shot": bool(summ.get("single_shot", False)),
                "experiment": run.key.experiment, "method": run.method, "supervision": supervision(run.method),
                "group": group_of(run.method), "label": run_label(run.key.experiment, run.method, run.variant),
                "variant": run.variant,
                "masks": run.key.masks, "mask_source": run.key.mask_source, "mask_mode": run.key.mask_mode,
                "seed": run.key.seed,
            }
            row.update({k: run.components.get(k) for k in comps})
            for k in METRIC_KEYS:
                row[k] = _num(summ.get(k))
                if row["single_shot"]:
                    row[f"{k}_draw_std"] = _num(summ.get(f"{k}_std"))
            for k in _COUNTS:
                row[k] = summ.get(k)
            row["eval_metric"] = settings.get("metric")
            row["rerank"] = settings.get("rerank")
            row["flip"] = (doc.get("provenance") or {}).get("flip")
            row["hardware"] = describe_hardware((doc.get("provenance") or {}).get("training"), bn_batch=False)
            q = quality.get(run.folder, {})
            row.update({c: float(q.get(c, float("nan"))) for c in LAST_QUALITY.values()})
            row["metrics_path"] = str(run.metrics_path)
            rows.append(row)
    frame = pd.DataFrame(rows)
    return _sorted(frame)


def last_epoch_quality(frame: pd.DataFrame) -> Dict[str, float]:
    """``LAST_QUALITY`` of a checked log's last epoch (NaN where not logged: no epoch, or no pseudo-labels)."""
    out = {col: float("nan") for col in LAST_QUALITY.values()}
    if frame.empty:
        return out
    last = frame.iloc[-1]
    for src, col in LAST_QUALITY.items():
        if src in frame.columns:
            out[col] = float(pd.to_numeric(pd.Series([last[src]]), errors="coerce").iloc[0])
    return out


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame
    ds = dataset_order(frame["dataset"].tolist())
    methods = {m: i for i, m in enumerate(method_order())}  # registered methods in report order, others last
    keys = pd.DataFrame({
        "d": frame["dataset"].map(ds.index),
        "p": [protocol_order(d, frame.loc[frame.dataset == d, "protocol"].tolist()).index(p)
              for d, p in zip(frame["dataset"], frame["protocol"])],
        "g": frame["supervision"].map({"unsupervised": 0, "supervised": 1, "none": 2}),
        "m": frame["method"].map(lambda m: methods.get(m, len(methods))),
        "e": frame["experiment"].map(lambda e: (0, e) if e in methods else (1, e)).astype(str),  # named after one first
        "k": frame["masks"],
    }, index=frame.index)
    if "seed" in frame:
        keys["s"] = frame["seed"]
    order = keys.sort_values(list(keys.columns), kind="stable").index
    return frame.loc[order].reset_index(drop=True)


def aggregate_seeds(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std and n over seeds for each (dataset, protocol, experiment, method, masks).

    Returns
    -------
    pandas.DataFrame
        Identity and description columns, ``n``, ``seeds`` (``;``-joined), ``<metric>_mean`` and
        ``<metric>_std`` for every ``METRIC_KEYS`` (std NaN when n = 1; metrics undefined in a seed,
        e.g. no valid query, are left out of that mean and ``<metric>_n`` says how many counted), and
        ``<column>_mean`` / ``<column>_std`` of the ``LAST_QUALITY`` columns, ``hardware`` (the seeds'
        distinct hardware phrases joined by ``HARDWARE_SEP``).
    """
    if per_seed.empty:
        raise ReportingError("no protocol results to aggregate")
    out: List[Dict[str, Any]] = []
    carry = ["headline", "description", "short", "rule", "single_shot", "supervision", "group", "label", "variant",
             "mask_source", "mask_mode", *(k for k in COMPONENTS if k in per_seed)]
    for key, grp in per_seed.groupby(IDENTITY, sort=False, dropna=False):
        row: Dict[str, Any] = dict(zip(IDENTITY, key))
        first = grp.iloc[0]
        row.update({c: first[c] for c in carry})
        row["n"] = int(len(grp))
        row["seeds"] = ";".join(str(int(s)) for s in sorted(grp["seed"]))
        for k in (*METRIC_KEYS, *LAST_QUALITY.values()):
            vals = grp[k].to_numpy(np.float64) if k in grp else np.array([])
            ok = vals[~np.isnan(vals)]
            row[f"{k}_mean"] = float(ok.mean()) if ok.size else float("nan")
            row[f"{k}_std"] = float(ok.std(ddof=1)) if ok.size > 1 else float("nan")
            if k in METRIC_KEYS:
                row[f"{k}_n"] = int(ok.size)
        for k in _COUNTS:
            vals = grp[k].dropna().unique() if k in grp else []
            if len(vals) > 1:
                log.warning("%s/%s %s: %s differs between seeds (%s); the runs were evaluated on different "
                            "manifests", key[0], key[1], key[2], k, sorted(vals))
            row[k] = _count(vals[0]) if len(vals) == 1 else (None if len(vals) == 0 else "varies")
        for k in ("eval_metric", "rerank", "flip"):
            vals = grp[k].dropna().unique()
            row[k] = vals[0] if len(vals) == 1 else (None if len(vals) == 0 else "varies")
        # every seed's hardware, in seed order (a table footnotes them and warns when they differ)
        hw = grp.sort_values("seed")["hardware"] if "hardware" in grp else pd.Series([], dtype=object)
        row["hardware"] = HARDWARE_SEP.join(dict.fromkeys(str(h) for h in hw))
        out.append(row)
    return _sorted(pd.DataFrame(out))


def _count(x: Any) -> Any:
    """Counts come back as floats when a column has gaps; show them as integers."""
    return int(x) if isinstance(x, (float, np.floating)) and float(x).is_integer() else x


def cmc_frame(runs: Sequence[Run], dataset: str, protocol: str, max_rank: int) -> pd.DataFrame:
    """Seed-mean CMC per run group for one protocol: the exact data a CMC figure plots.

    Returns
    -------
    pandas.DataFrame
        Columns dataset, protocol, experiment, method, masks, label, rank (1-based), cmc_mean,
        cmc_std (NaN for one seed), n.
    """
    groups: Dict[tuple, List[List[float]]] = {}
    meta: Dict[tuple, Run] = {}
    for run in runs:
        if run.key.dataset != dataset or protocol not in run.metrics["protocols"]:
            continue
        cmc = run.metrics["protocols"][protocol].get("cmc") or []
        groups.setdefault(run.key.group, []).append([_num(v) for v in cmc[:max_rank]])
        meta.setdefault(run.key.group, run)
    rows: List[Dict[str, Any]] = []
    for g, curves in groups.items():
        length = min(len(c) for c in curves)
        if length == 0:
            continue
        arr = np.array([c[:length] for c in curves], np.float64)
        run = meta[g]
        for r in range(length):
            col = arr[:, r]
            rows.append({"dataset": dataset, "protocol": protocol, "experiment": run.key.experiment,
                         "method": run.method, "masks": run.key.masks,
                         "label": f"{run_label(run.key.experiment, run.method, run.variant)} [{run.key.masks}]",
                         "supervision": supervision(run.method), "rank": r + 1,
                         "cmc_mean": float(np.mean(col)),
                         "cmc_std": float(np.std(col, ddof=1)) if col.size > 1 else float("nan"), "n": int(col.size)})
    return pd.DataFrame(rows)
