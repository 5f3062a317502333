"""Curated published numbers (``data/published.yaml``), checked before they reach a table.

The file is edited by hand, so the loader is strict: only statuses V and I, protocols that exist
for the dataset (or null: "not comparable"), known metric names, percentages in [0, 100]. A number
whose protocol is null is never placed in one of our columns.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Dict, List, Optional

import pandas as pd
import yaml

from ..io import read_text_file
from ..evaluation.protocols import PROTOCOLS
from ..errors import ReportingError
from .labels import group_of, protocol_short

__all__ = ["PublishedEntry", "PUBLISHED_FORMAT", "STATUSES", "KINDS", "load_published", "published_frame",
           "default_published_path"]

PUBLISHED_FORMAT = "maskcl-published/1"
#: V: verified in the cited source; I: inferred from an issue thread / the authors' own words.
STATUSES = {"V": "verified", "I": "inferred"}
KINDS = ("paper", "authors_rerun", "reproduction")
_METRICS = ("mAP", "mINP", "rank1", "rank5", "rank10", "rank20")
_REQUIRED = ("method", "supervision", "kind", "dataset", "protocol", "reported_protocol", "metrics", "status",
             "source")


@dataclass(frozen=True)
class PublishedEntry:
    """One published (method, dataset, setting) with the metrics the source gives, as fractions."""

    method: str
    supervision: str
    kind: str
    dataset: str
    protocol: Optional[str]
    reported_protocol: str
    metrics: Dict[str, float]
    status: str
    source: str
    note: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Row label: ``<method>, published, <status>`` (plus the upper-bound tag when supervised)."""
        tag = " — supervised (upper bound)" if self.supervision == "supervised" else ""
        return f"{self.method}{tag}; published, {self.status}"

    @property
    def group(self) -> str:
        return group_of("supervised" if self.supervision == "supervised" else "unsupervised", published=True)


def default_published_path() -> str:
    return str(resources.files("maskcl.reporting").joinpath("data/published.yaml"))


def _check(i: int, e: Any, path: str) -> PublishedEntry:
    where = f"{path}: entries[{i}]"
    if not isinstance(e, dict):
        raise ReportingError(f"{where} is not a mapping; see the header of maskcl/reporting/data/published.yaml")
    missing = [k for k in _REQUIRED if k not in e]
    if missing:
        raise ReportingError(f"{where} lacks {', '.join(missing)}; every entry needs {', '.join(_REQUIRED)}")
    unknown = sorted(set(e) - set(_REQUIRED) - {"note"})
    if unknown:
        raise ReportingError(f"{where} has unknown key(s) {', '.join(unknown)}; allowed: "
                             f"{', '.join(_REQUIRED)}, note")
    if e["status"] not in STATUSES:
        raise ReportingError(f"{where}: status {e['status']!r} is not allowed; only V (verified) and I (inferred) "
                             f"numbers are shown, drop the entry")
    if e["supervision"] not in ("supervised", "unsupervised"):
        raise ReportingError(f"{where}: supervision must be supervised or unsupervised, got {e['supervision']!r}")
    if e["kind"] not in KINDS:
        raise ReportingError(f"{where}: kind {e['kind']!r} is not one of {', '.join(KINDS)}")
    ds = e["dataset"]
    if ds not in PROTOCOLS:
        raise ReportingError(f"{where}: unknown dataset {ds!r}; known: {', '.join(PROTOCOLS)}")
    names = [p.name for p in PROTOCOLS[ds]]
    if e["protocol"] is not None and e["protocol"] not in names:
        raise ReportingError(f"{where}: protocol {e['protocol']!r} is not one of {ds}'s protocols "
                             f"({', '.join(names)}); use null when the published protocol differs from all of ours")
    m = e["metrics"]
    if not isinstance(m, dict) or not m:
        raise ReportingError(f"{where}: metrics must map metric names to percentages (e.g. {{rank1: 71.7}})")
    bad = sorted(set(m) - set(_METRICS))
    if bad:
        raise ReportingError(f"{where}: unknown metric(s) {', '.join(bad)}; allowed: {', '.join(_METRICS)}")
    for k, v in m.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 100:
            raise ReportingError(f"{where}: metrics.{k} = {v!r} is not a percentage in [0, 100]; leave unknown "
                                 f"metrics out instead of guessing")
    return PublishedEntry(method=str(e["method"]), supervision=e["supervision"], kind=e["kind"], dataset=ds,
                          protocol=e["protocol"], reported_protocol=str(e["reported_protocol"]),
                          metrics={k: float(v) / 100.0 for k, v in m.items()}, status=e["status"],
                          source=str(e["source"]), note=str(e.get("note") or ""))


def load_published(path: Optional[os.PathLike | str] = None) -> List[PublishedEntry]:
    """Read and check the curated published numbers.

    Parameters
    ----------
    path : path-like, optional
        Default: the packaged ``maskcl/reporting/data/published.yaml``.

    Returns
    -------
    list of PublishedEntry
        Metric values as fractions (the file holds percentages).

    Raises
    ------
    ReportingError
        Unreadable file, wrong format tag, or an entry breaking the policy.
    """
    p = str(path) if path is not None else default_published_path()
    doc = read_text_file(p, yaml.safe_load, what="published-numbers file", error=ReportingError,
                         syntax=(yaml.YAMLError,), describe=lambda e: f"not valid YAML: {str(e).splitlines()[0]}")
    if not isinstance(doc, dict) or doc.get("format") != PUBLISHED_FORMAT or doc.get("units") != "percent":
        raise ReportingError(f"{p}: expected 'format: {PUBLISHED_FORMAT}' and 'units: percent' at the top")
    entries = doc.get("entries") or []
    if not isinstance(entries, list):
        raise ReportingError(f"{p}: entries must be a list")
    out = [_check(i, e, p) for i, e in enumerate(entries)]
    seen: Dict[tuple, int] = {}
    for i, e in enumerate(out):
        k = (e.method, e.kind, e.dataset, e.protocol, e.reported_protocol)
        if k in seen:
            raise ReportingError(f"{p}: entries[{i}] repeats entries[{seen[k]}] ({e.method}, {e.dataset}); merge them")
        seen[k] = i
    return out


def published_frame(entries: List[PublishedEntry]) -> pd.DataFrame:
    """The curated numbers as a long table (fractions), with our protocol's short description or none."""
    rows = []
    for e in entries:
        row: Dict[str, Any] = {
            "dataset": e.dataset, "protocol": e.protocol if e.protocol is not None else "",
            "short": protocol_short(e.dataset, e.protocol) if e.protocol else "not comparable with our protocols",
            "reported_protocol": e.reported_protocol, "method": e.method, "supervision": e.supervision,
            "group": e.group, "label": e.label, "kind": e.kind, "status": e.status, "source": e.source,
            "note": e.note,
        }
        for k in _METRICS:
            row[k] = e.metrics.get(k, float("nan"))
        rows.append(row)
    return pd.DataFrame(rows)
