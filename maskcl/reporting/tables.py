"""Paper tables from the aggregated results: all protocols, headline, and three ablations.

Each table file comes in three formats written atomically: Markdown, LaTeX (booktabs) and CSV
(raw fractions, one row per number, with its protocol and provenance). Every section names its
protocol and describes it; supervised runs sit in their own "upper bound" group; published numbers
sit in their own groups and only under the protocol they were reported with.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from ..evaluation.protocols import comparison_protocols
from ..io import write_csv_atomic, write_text_atomic
from ..methods import get_method, switched_methods
from .aggregate import HARDWARE_SEP, METRIC_HEADERS, METRIC_KEYS, dataset_order, protocol_order
from .labels import GROUPS, dataset_name, group_title, method_name, protocol_short
from .published import PublishedEntry, published_frame
from .render import Code, Column, Metric, Rich, RowGroup, Section, Table, tables_to_latex, tables_to_markdown
from .runs import COMPONENTS, components_of, official_switches

__all__ = ["TABLE_METRICS", "ABLATION_METRICS", "COMPARISON_METRICS", "results_tables", "headline_table",
           "comparison_table", "comparison_frame", "ablation_mask_tables",
           "ablation_method_tables", "ablation_component_tables", "published_table", "write_table_files",
           "results_csv", "ablation_csv"]

log = logging.getLogger(__name__)

#: Metric columns of the results tables and of the (compact) ablation tables.
TABLE_METRICS = ("mAP", "mINP", "rank1", "rank5", "rank10")
ABLATION_METRICS = ("mAP", "rank1")
#: Metric columns of the comparison table (the papers' layout: mAP and Rank-1 per dataset and protocol).
COMPARISON_METRICS = ("mAP", "rank1")

_SEEDS_NOTE = "mean ± std over n training seeds (no std for n = 1)"
_GROUP_NOTE = ("Supervised rows are upper bounds (trained with identity labels), never competitors of the "
               "unsupervised rows; untrained rows score the initial network every method starts from.")
_LAST_QUALITY_HEADERS = {"last_ari_id": "ARI id", "last_ari_clothes": "ARI outfit"}
_QUALITY_NOTE = ("ARI id / ARI outfit: adjusted Rand index (×100, mean ± std over seeds) of the last epoch's "
                 "pseudo-labels against the true identities and against the outfits (clothes ids); a row whose "
                 "clusters follow outfits rather than people scores high on the second. Empty for rows without "
                 "pseudo-labels (supervised, untrained) and for methods without the switch.")
_PUBLISHED_NOTE = ("Published rows quote the cited source (status V: verified there; I: inferred from an issue "
                   "thread or the authors' own words) and appear only under the protocol they were reported "
                   "with; empty cells were not reported.")


def _label_cell(row: Any) -> Rich:
    """``MaskCL (re-impl.)``, ``MaskCL (re-impl.): <experiment>``, or for a run off the official component
    switches ``MaskCL (re-impl.) variant: <experiment>``, with the experiment in monospace."""
    name = method_name(row["method"])
    flag = row.get("variant", False)
    if isinstance(flag, (bool, np.bool_)) and flag:  # NaN (published rows, old frames) is no variant
        return (name, " variant: ", Code(str(row["experiment"])))
    if row["experiment"] == row["method"]:
        return (name,)
    return (name, ": ", Code(str(row["experiment"])))


def _metric_cells(row: Any, metrics: Sequence[str], prefix: str = "") -> Dict[str, Metric]:
    return {f"{prefix}{k}": Metric(row[f"{k}_mean"], row[f"{k}_std"]) for k in metrics}


def _int(x: Any) -> Optional[str]:
    """A count as text (pandas turns integer columns with gaps into floats); None when absent."""
    if x is None or _nan(x):
        return None
    return str(int(x)) if isinstance(x, (int, float)) and float(x).is_integer() else str(x)


def _counts(row: Any) -> str:
    """``12 queries (4 without a valid match, skipped); gallery 36`` (+ draws for single-shot)."""
    parts = []
    q, skipped, g, trials = (_int(row.get(k)) for k in ("num_queries", "num_skipped_queries", "num_gallery",
                                                         "num_trials"))
    if q is not None:
        parts.append(f"{q} queries" + (f" ({skipped} without a valid match, skipped)" if skipped not in (None, "0")
                                       else ""))
    if g is not None:
        parts.append(f"gallery {g}" + (" per draw" if row.get("single_shot") else ""))
    if row.get("single_shot") and trials is not None:
        parts.append(f"{trials} draws")
    return "; ".join(parts)


def _eval_note(frame: pd.DataFrame) -> str:
    """``Ranking: euclidean distance, without re-ranking[, flipped images added].`` from the runs' settings."""
    def values(col: str) -> List[str]:
        return sorted({str(v) for v in frame[col].dropna()}) if col in frame else []

    metric, rerank, flip = values("eval_metric"), values("rerank"), values("flip")
    words = {"True": "with k-reciprocal re-ranking", "False": "without re-ranking", "varies": "re-ranking varies"}
    m = ", ".join(metric) if metric else "unrecorded"
    r = " / ".join(words.get(x, x) for x in rerank) if rerank else "re-ranking unrecorded"
    f = {"True": ", features of the flipped image added", "varies": ", flip augmentation varies"}
    return f"Ranking: {m} distance, {r}{''.join(f.get(x, '') for x in flip)}.{_hardware_note(frame)}"


def hardware_runs(frame: pd.DataFrame) -> Dict[str, List[str]]:
    """Each distinct training hardware of a table's rows → the row labels trained on it (first-seen order)."""
    out: Dict[str, List[str]] = {}
    if "hardware" not in frame:
        return out
    for label, joined in zip(frame["label"], frame["hardware"]):
        for hw in str(joined).split(HARDWARE_SEP) if isinstance(joined, str) and joined else ["unrecorded"]:
            labels = out.setdefault(hw, [])
            if label not in labels:
                labels.append(label)
    return out


def _hardware_note(frame: pd.DataFrame) -> str:
    """`` Trained on: <hardware>.``, or a warning naming which rows were trained on which hardware."""
    runs = hardware_runs(frame)
    if not runs:
        return ""
    if len(runs) == 1:
        return f" Trained on: {next(iter(runs))}."
    parts = "; ".join(f"{hw} ({', '.join(labels)})" for hw, labels in runs.items())
    return (f" Warning: these rows were trained on different hardware, which moves the numbers (threads, "
            f"BatchNorm batch, precision): {parts}.")


def _protocol_list(dataset: str, protocols: Sequence[str], frame: pd.DataFrame) -> Rich:
    parts: List[Any] = ["Protocols: "]
    for i, p in enumerate(protocols):
        sub = frame[frame["protocol"] == p]
        short = sub["short"].iloc[0] if len(sub) else protocol_short(dataset, p)
        parts += [Code(p), f": {short}" + ("; " if i < len(protocols) - 1 else ".")]
    return tuple(parts)


def _published_rows(entries: Sequence[PublishedEntry], dataset: str, protocol: str,
                    metrics: Sequence[str]) -> Dict[str, List[dict]]:
    out: Dict[str, List[dict]] = {"published_unsupervised": [], "published_supervised": []}
    for e in entries:
        if e.dataset == dataset and e.protocol == protocol:
            row: Dict[str, Any] = {"label": e.label, "masks": None, "n": None}
            row.update({k: Metric(e.metrics.get(k)) for k in metrics})
            out[e.group].append(row)
    return out


def _published_notes(entries: Sequence[PublishedEntry], dataset: str, protocols: Sequence[str],
                     unmapped: bool = True) -> List[Rich]:
    """Sources of the published rows shown, then (``unmapped``) the dataset's not-comparable numbers."""
    notes: List[Rich] = []
    shown = [e for e in entries if e.dataset == dataset and e.protocol in protocols]
    for e in shown:
        notes.append((f"{e.label}: {e.source}; reported as {e.reported_protocol}.",))
    for e in entries if unmapped else ():
        if e.dataset == dataset and e.protocol is None:
            vals = ", ".join(f"{METRIC_HEADERS[k]} {100 * v:.1f}" for k, v in e.metrics.items())
            notes.append((f"Not comparable, so in no column: {e.label}, {vals} ({e.reported_protocol}; "
                           f"{e.source}).",))
    return notes


def _run_row(r: Any, metrics: Sequence[str]) -> dict:
    row = {"label": _label_cell(r), "masks": Code(str(r["masks"])), "n": int(r["n"])}
    row.update(_metric_cells(r, metrics))
    return row


def _result_columns(metrics: Sequence[str]) -> List[Column]:
    return ([Column("label", "Method"), Column("masks", "Masks"), Column("n", "n", "r")]
            + [Column(k, METRIC_HEADERS[k], "r") for k in metrics])


def results_tables(agg: pd.DataFrame, published: Sequence[PublishedEntry] = (),
                   metrics: Sequence[str] = TABLE_METRICS) -> List[Table]:
    """One table per dataset, one section per protocol, rows grouped by supervision and source.

    Parameters
    ----------
    agg : pandas.DataFrame
        From ``aggregate_seeds``.
    published : sequence of PublishedEntry
        Curated numbers (empty: no published rows).
    metrics : sequence of str
        Metric columns (``METRIC_KEYS`` names).

    Returns
    -------
    list of Table
    """
    tables = []
    for d in dataset_order(agg["dataset"].tolist()):
        sub = agg[agg["dataset"] == d]
        protocols = protocol_order(d, sub["protocol"].tolist())
        sections = []
        for p in protocols:
            ps = sub[sub["protocol"] == p]
            first = ps.iloc[0]
            head = " (headline)" if bool(first["headline"]) else ""
            counts = _counts(first)
            heading: Rich = ("Protocol ", Code(p), head, f": {first['short']}" + (f" [{counts}]" if counts else ""))
            groups = {g: RowGroup(group_title(g)) for g in GROUPS}
            for _, r in ps.iterrows():
                groups[r["group"]].rows.append(_run_row(r, metrics))
            for g, rows in _published_rows(published, d, p, metrics).items():
                groups[g].rows.extend(rows)
            sections.append(Section(heading=heading, short=("Protocol ", Code(p), head), groups=list(groups.values())))
        caption: Rich = (f"{dataset_name(d)}: accuracy (%) under every evaluation protocol, {_SEEDS_NOTE}. ",
                         *_protocol_list(d, protocols, sub), f" {_eval_note(sub)} {_GROUP_NOTE}",
                         f" {_PUBLISHED_NOTE}" if published else "")
        tables.append(Table(title=f"{dataset_name(d)}: all protocols", caption=caption, label=f"tab:results-{d}",
                            columns=_result_columns(metrics), sections=sections,
                            notes=_published_notes(published, d, protocols)))
    return tables


def headline_table(agg: pd.DataFrame, published: Sequence[PublishedEntry] = (),
                   metrics: Sequence[str] = TABLE_METRICS) -> Table:
    """Every dataset's headline protocol in one table (one section per dataset)."""
    head = agg[agg["headline"].astype(bool)]
    sections = []
    notes: List[Rich] = []
    protocol_parts: List[Any] = ["Headline protocols: "]
    datasets = dataset_order(head["dataset"].tolist())
    for i, d in enumerate(datasets):
        sub = head[head["dataset"] == d]
        p = str(sub["protocol"].iloc[0])
        short = str(sub["short"].iloc[0])
        groups = {g: RowGroup(group_title(g)) for g in GROUPS}
        for _, r in sub.iterrows():
            groups[r["group"]].rows.append(_run_row(r, metrics))
        for g, rows in _published_rows(published, d, p, metrics).items():
            groups[g].rows.extend(rows)
        sections.append(Section(heading=(f"{dataset_name(d)}, protocol ", Code(p), f": {short}"),
                                short=(f"{dataset_name(d)}, protocol ", Code(p)), groups=list(groups.values())))
        notes += _published_notes(published, d, [p], unmapped=False)
        protocol_parts += [f"{dataset_name(d)} ", Code(p), f": {short}" + ("; " if i < len(datasets) - 1 else ".")]
    caption: Rich = (f"Headline results: accuracy (%) of each dataset's headline protocol, {_SEEDS_NOTE}. ",
                     *protocol_parts, f" {_eval_note(head)} {_GROUP_NOTE}", f" {_PUBLISHED_NOTE}" if published else "")
    return Table(title="Headline protocol of every dataset", caption=caption, label="tab:headline",
                 columns=_result_columns(metrics), sections=sections, notes=notes)


def comparison_frame(agg: pd.DataFrame) -> Tuple[pd.DataFrame, Dict[str, List[str]]]:
    """The comparison table's rows: each method's runs at its official switches (variants are ablations),
    under each dataset's comparison protocols (``ReIDDataset.comparison_protocols``) that have results;
    and those protocols per dataset, in order."""
    sub = agg[_default_components(agg)] if len(agg) else agg
    want: Dict[str, List[str]] = {}
    for d in dataset_order(sub["dataset"].tolist()):
        have = set(sub.loc[sub["dataset"] == d, "protocol"])
        ps = [p for p in comparison_protocols(d) if p in have]
        if ps:
            want[d] = ps
    keep = [p in want.get(d, ()) for d, p in zip(sub["dataset"], sub["protocol"])]
    return sub[keep], want


def comparison_table(agg: pd.DataFrame, published: Sequence[PublishedEntry] = (),
                     metrics: Sequence[str] = COMPARISON_METRICS) -> Optional[Table]:
    """The field's comparison table: methods as rows, datasets x (headline, general) protocols as columns.

    Rows are the unsupervised methods, then the supervised bound, then the untrained reference, each at
    its official switches; published rows sit beside them only where the number was verified in its
    source (status V) under one of the columns' protocols. None when no run has such a result.
    """
    sub, want = comparison_frame(agg)
    if sub.empty:
        return None
    cols = [Column("label", "Method"), Column("masks", "Masks")]
    for d, ps in want.items():
        cols.append(Column(f"{d}:n", "n", "r", group=dataset_name(d)))
        cols += [Column(f"{d}:{p}:{k}", METRIC_HEADERS[k], "r", group=f"{dataset_name(d)} {p}")
                 for p in ps for k in metrics]
    groups: Dict[str, List[dict]] = {g: [] for g in GROUPS}
    for _, grp in sub.groupby(["experiment", "masks"], sort=False, dropna=False):
        first = grp.iloc[0]
        row: Dict[str, Any] = {"label": _label_cell(first), "masks": Code(str(first["masks"]))}
        for d, ps in want.items():
            on = grp[grp["dataset"] == d]
            if on.empty:
                continue
            row[f"{d}:n"] = ", ".join(sorted({str(int(v)) for v in on["n"]}))
            for p in ps:
                pr = on[on["protocol"] == p]
                if len(pr):
                    row.update(_metric_cells(pr.iloc[0], metrics, prefix=f"{d}:{p}:"))
        groups[first["group"]].append(row)
    verified = [e for e in published if e.status == "V" and e.protocol in want.get(e.dataset, ())]
    by_label: Dict[str, Dict[str, Any]] = {}
    for e in verified:
        row = by_label.setdefault(e.label, {"label": e.label, "masks": None, "_group": e.group})
        row.update({f"{e.dataset}:{e.protocol}:{k}": Metric(e.metrics.get(k)) for k in metrics})
    for row in by_label.values():
        groups[row.pop("_group")].append(row)
    parts: List[Any] = ["Protocols: "]
    for i, (d, ps) in enumerate(want.items()):
        for j, p in enumerate(ps):
            short = sub.loc[(sub["dataset"] == d) & (sub["protocol"] == p), "short"].iloc[0]
            last = i == len(want) - 1 and j == len(ps) - 1
            parts += [f"{dataset_name(d)} ", Code(p), (" (headline)" if j == 0 else "") + f": {short}"
                      + ("." if last else "; ")]
    notes: List[Rich] = [(f"{e.label}: {e.source}; reported as {e.reported_protocol}.",) for e in verified]
    caption: Rich = (f"Comparison of methods: mAP and Rank-1 (%) under each dataset's headline protocol and the "
                     f"general (or same-clothes) protocol papers print beside it, {_SEEDS_NOTE}; each method at its "
                     f"official component switches (variants are in the ablation tables). ", *parts,
                     f" {_eval_note(sub)} {_GROUP_NOTE}",
                     " Published rows are numbers verified in their source (status V) under the same protocol; "
                     "empty cells were not reported." if verified else "")
    return Table(title="Comparison of methods", caption=caption, label="tab:comparison", columns=cols,
                 sections=[Section(groups=[RowGroup(group_title(g), groups[g]) for g in GROUPS])], notes=notes)


def _wide(sub: pd.DataFrame, protocols: Sequence[str], keys: Sequence[str],
          cells: Callable[[Any], dict], metrics: Sequence[str]) -> Dict[str, List[dict]]:
    """Rows keyed by ``keys`` with ``<protocol>:<metric>`` cells, split by group."""
    out: Dict[str, List[dict]] = {g: [] for g in GROUPS}
    for _, grp in sub.groupby(list(keys), sort=False, dropna=False):
        first = grp.iloc[0]
        row = cells(first)
        row["n"] = ", ".join(sorted({str(int(v)) for v in grp["n"]}))
        for p in protocols:
            pr = grp[grp["protocol"] == p]
            if len(pr):
                row.update(_metric_cells(pr.iloc[0], metrics, prefix=f"{p}:"))
        out[first["group"]].append(row)
    return out


def _ablation_table(agg: pd.DataFrame, dataset: str, sub: pd.DataFrame, what: str, name: str,
                    label_cols: List[Column], keys: Sequence[str], cells: Callable[[Any], dict],
                    metrics: Sequence[str], note: str = "") -> Table:
    protocols = protocol_order(dataset, agg.loc[agg["dataset"] == dataset, "protocol"].tolist())
    cols = label_cols + [Column("n", "n", "r")]
    cols += [Column(f"{p}:{k}", METRIC_HEADERS[k], "r", group=p) for p in protocols for k in metrics]
    groups = _wide(sub, protocols, keys, cells, metrics)
    caption: Rich = (f"{dataset_name(dataset)}, {what}: mAP and Rank-1 (%) per protocol, {_SEEDS_NOTE}. ",
                     *_protocol_list(dataset, protocols, sub), f" {_eval_note(sub)}", f" {note}" if note else "")
    return Table(title=f"{dataset_name(dataset)}: {what}", caption=caption, label=f"tab:{name}-{dataset}",
                 columns=cols, sections=[Section(groups=[RowGroup(group_title(g), groups[g]) for g in GROUPS])])


def ablation_mask_tables(agg: pd.DataFrame, metrics: Sequence[str] = ABLATION_METRICS) -> List[Table]:
    """Mask source and mode (silhouette vs parts) of every run that uses masks."""
    out = []
    for d in dataset_order(agg["dataset"].tolist()):
        sub = agg[(agg["dataset"] == d) & (agg["masks"] != "none")]
        if sub.empty:
            continue
        cols = [Column("label", "Method"), Column("source", "Mask source"), Column("mode", "Mode")]
        out.append(_ablation_table(agg, d, sub, "mask source and mode", "ablation-masks", cols,
                                   ["experiment", "masks"], lambda r: {"label": _label_cell(r),
                                                                       "source": Code(str(r["mask_source"])),
                                                                       "mode": str(r["mask_mode"] or "")},
                                   metrics))
    return out


def _changed(frame: pd.DataFrame) -> pd.DataFrame:
    """Per run row and switch: does the run's value differ from its method's official one (a switch its
    method does not have, or an unknown value: no)?"""
    official = [official_switches(m) for m in frame["method"]]
    return pd.DataFrame({k: [bool(k in o and pd.notna(v) and v != o[k]) for o, v in zip(official, frame[k])]
                         for k in COMPONENTS if k in frame}, index=frame.index, dtype=bool)


def _default_components(frame: pd.DataFrame) -> pd.Series:
    return ~_changed(frame).any(axis=1)


def _component_cell(method: str, key: str, value: Any) -> str:
    """``on``/``off`` for a switch, the feature name for ``cluster_on``; empty for a method without it."""
    official = official_switches(method)
    if key not in official:
        return ""
    if value is None or _nan(value):
        value = official[key]
    if isinstance(official[key], bool):
        return "on" if bool(value) else "off"
    return str(value)


def ablation_method_tables(agg: pd.DataFrame, metrics: Sequence[str] = ABLATION_METRICS) -> List[Table]:
    """Methods with every component switch at its official value (component ablations are left out)."""
    out = []
    for d in dataset_order(agg["dataset"].tolist()):
        sub = agg[agg["dataset"] == d]
        sub = sub[_default_components(sub)]
        if sub.empty:
            continue
        cols = [Column("label", "Method"), Column("masks", "Masks")]
        out.append(_ablation_table(agg, d, sub, "methods", "ablation-methods", cols, ["experiment", "masks"],
                                   lambda r: {"label": _label_cell(r), "masks": Code(str(r["masks"]))}, metrics))
    return out


def ablation_component_tables(agg: pd.DataFrame, metrics: Sequence[str] = ABLATION_METRICS) -> List[Table]:
    """The runs of methods with component switches (MaskCL) by switch, then every other method's runs as
    reference rows.

    The switches are those of ``COMPONENTS`` (MaskCL's: losses, refinement, memory refresh, clustered
    features); the switched methods' rows run from the official recipe down by the number of switches
    changed. Every row with pseudo-labels also shows their ARI against identities and against outfits
    at the last epoch.
    """
    out = []
    for d in dataset_order(agg["dataset"].tolist()):
        sub = agg[agg["dataset"] == d]
        switched = [m for m in switched_methods() if m in set(sub["method"])]  # those with runs here
        if not switched:
            continue
        comps = components_of(switched)
        subject = " / ".join(get_method(m).short_name for m in switched)
        changed = _changed(sub).sum(axis=1).where(sub["method"].isin(switched), 0)
        order = sub["method"].map(lambda m: 0 if m in switched else 1)
        sub = sub.assign(_m=order, _off=changed).sort_values(["_m", "_off", "experiment", "masks"], kind="stable")
        cols = [Column("label", "Experiment"), Column("masks", "Masks")]
        cols += [Column(k, v, "c") for k, v in comps.items()]
        cols += [Column(c, h, "r") for c, h in _LAST_QUALITY_HEADERS.items()]

        def cells(r: Any) -> dict:
            label: Rich = (Code(str(r["experiment"])),) if r["method"] in switched else _label_cell(r)
            c: Dict[str, Any] = {"label": label, "masks": Code(str(r["masks"]))}
            c.update({k: _component_cell(r["method"], k, r[k]) for k in comps})
            clusters = r["supervision"] == "unsupervised"  # supervised and untrained rows have no pseudo-labels
            c.update({col: Metric(r.get(f"{col}_mean"), r.get(f"{col}_std")) if clusters else None
                      for col in _LAST_QUALITY_HEADERS})
            return c

        out.append(_ablation_table(agg, d, sub, f"{subject} components", "ablation-components", cols,
                                   ["experiment", "masks"], cells, metrics, note=_QUALITY_NOTE))
    return out


def _nan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def published_table(entries: Sequence[PublishedEntry], metrics: Sequence[str] = ("mAP", "rank1")) -> Table:
    """Every curated entry, with the protocol of ours it sits under (or "not comparable")."""
    cols = [Column("dataset", "Dataset"), Column("method", "Method", "p{3.2cm}"), Column("ours", "Our protocol"),
            Column("reported", "Reported protocol", "p{5cm}"), Column("status", "Status"),
            Column("source", "Source", "p{3.5cm}")]
    cols += [Column(k, METRIC_HEADERS[k], "r") for k in metrics]
    groups = {g: RowGroup(group_title(g)) for g in ("published_unsupervised", "published_supervised")}
    for e in entries:
        row: Dict[str, Any] = {"dataset": dataset_name(e.dataset), "method": e.method,
                               "ours": Code(e.protocol) if e.protocol else "none (not comparable)",
                               "reported": e.reported_protocol, "status": e.status, "source": e.source}
        row.update({k: Metric(e.metrics.get(k)) for k in metrics})
        groups[e.group].rows.append(row)
    caption: Rich = ("Published numbers curated from READMEs, issue threads and abstracts (percent). Only "
                     "statuses V (verified in the source) and I (inferred from an issue thread or the authors' own "
                     "words) are kept; entries whose protocol differs from all of ours, or is not stated, are "
                     "marked not comparable and never placed in a column of ours.",)
    return Table(title="Published numbers", caption=caption, label="tab:published", columns=cols,
                 sections=[Section(groups=list(groups.values()))])


def _csv_identity(frame: pd.DataFrame) -> List[str]:
    """The identity columns of a table's CSV: the component switches of the methods it has runs of."""
    return ["dataset", "protocol", "headline", "short", "description", "group", "label", "experiment", "method",
            "supervision", "masks", "mask_source", "mask_mode", *(k for k in COMPONENTS if k in frame), "n", "seeds"]


_CSV_COUNTS = ["num_queries", "num_valid_queries", "num_skipped_queries", "num_gallery", "num_trials",
               "eval_metric", "rerank", "flip", "hardware"]
_CSV_PUBLISHED = ["status", "kind", "source", "reported_protocol", "note"]


def results_csv(agg: pd.DataFrame, published: Sequence[PublishedEntry] = (),
                protocols: Optional[Dict[str, List[str]]] = None) -> pd.DataFrame:
    """One row per number group: runs (mean, std, n) then published entries under the same protocols.

    ``protocols`` (dataset → protocol names) limits which published entries are kept (default: every
    protocol present in ``agg``); entries with no protocol of ours are left out of this file.
    """
    stats = [f"{k}_{s}" for k in METRIC_KEYS for s in ("mean", "std", "n")]
    runs = agg.reindex(columns=_csv_identity(agg) + stats + _CSV_COUNTS).copy()
    for c in _CSV_PUBLISHED:
        runs[c] = ""
    if not published:
        return runs
    pub = published_frame(list(published))
    want = protocols or {d: sorted(set(agg.loc[agg.dataset == d, "protocol"])) for d in set(agg["dataset"])}
    pub = pub[[p in want.get(d, []) for d, p in zip(pub["dataset"], pub["protocol"])]]
    if pub.empty:
        return runs
    head = {(d, p) for d, p, h in zip(agg["dataset"], agg["protocol"], agg["headline"]) if h}
    rows = pd.DataFrame({
        "dataset": pub["dataset"], "protocol": pub["protocol"],
        "headline": [(d, p) in head for d, p in zip(pub["dataset"], pub["protocol"])], "short": pub["short"],
        "group": pub["group"], "label": pub["label"], "method": pub["method"], "supervision": pub["supervision"],
        **{f"{k}_mean": pub[k] for k in METRIC_KEYS},
        **{c: pub[c] for c in _CSV_PUBLISHED},
    })
    return pd.concat([runs, rows.reindex(columns=runs.columns)], ignore_index=True)


def ablation_csv(agg: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The rows behind an ablation table (``masks``, ``methods`` or ``components``), long format."""
    if kind == "masks":
        sub = agg[agg["masks"] != "none"]
    elif kind == "methods":
        sub = agg[_default_components(agg)]
    elif kind == "components":  # every run of a dataset with runs of a switched method (MaskCL), as in the table
        sub = agg[agg["dataset"].isin(agg.loc[agg["method"].isin(switched_methods()), "dataset"])]
    else:
        raise ValueError(f"unknown ablation kind {kind!r}")
    stats = [f"{k}_{s}" for k in METRIC_KEYS for s in ("mean", "std", "n")]
    if kind == "components":
        stats += [f"{c}_{s}" for c in _LAST_QUALITY_HEADERS for s in ("mean", "std")]
    return sub.reindex(columns=_csv_identity(sub) + stats + _CSV_COUNTS).reset_index(drop=True)


def write_table_files(out_dir: os.PathLike | str, stem: str, tables: Sequence[Table], frame: pd.DataFrame,
                      title: str, empty_note: str = "No runs to show.") -> Tuple[Path, Path, Path]:
    """Write ``<stem>.md``, ``<stem>.tex`` and ``<stem>.csv`` atomically; returns the three paths.

    An empty ``tables`` still writes all three files (the note, a LaTeX comment, a header-only CSV) so
    the declared outputs exist and say why they are empty.
    """
    out = Path(out_dir)
    md, tex, csv = out / f"{stem}.md", out / f"{stem}.tex", out / f"{stem}.csv"
    if tables:
        write_text_atomic(md, tables_to_markdown(tables, title))
        write_text_atomic(tex, tables_to_latex(tables, title))
    else:
        write_text_atomic(md, f"# {title}\n\n{empty_note}\n")
        write_text_atomic(tex, f"% {title}: {empty_note}\n")
    write_csv_atomic(csv, frame)
    log.info("wrote %s.{md,tex,csv} (%d table(s), %d CSV rows)", out / stem, len(tables), len(frame))
    return md, tex, csv
