"""Human words for machine names: datasets, protocols, methods and row groups.

Every number in a table carries its protocol; the short descriptions (``Protocol.short``, declared
by each dataset class) are what a reader sees next to the protocol name (the full definitions are in
``metrics.json`` and docs/protocols.md).
A method's row label and group are facts of the method (``maskcl.methods``): supervised runs are
always labelled as an upper bound and untrained ones as a reference, so neither is ever read as a
competitor.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from ..datasets import DATASETS, report_order
from ..methods import METHOD_FACTS
from ..methods import report_order as method_order

__all__ = ["DATASET_NAMES", "PROTOCOL_SHORT", "METHOD_NAMES", "GROUPS", "dataset_name", "protocol_short",
           "method_name", "run_label", "supervision", "trains", "group_of", "group_title"]

# Display names and protocol summaries are facts about each dataset and live on its class
# (``display_name``, ``Protocol.short``); these tables are views of the registry, in report order.

#: Registry name → the name used in papers.
DATASET_NAMES: Dict[str, str] = {name: DATASETS.get(name).display_name for name in report_order()}

#: (dataset, protocol) → short description shown beside every number of that protocol.
PROTOCOL_SHORT: Dict[Tuple[str, str], str] = {
    (name, p.name): p.short for name in report_order() for p in DATASETS.get(name).protocols}

#: Method registry name → row label (``MethodFacts.display_name``), in report order.
METHOD_NAMES: Dict[str, str] = {name: METHOD_FACTS.get(name).display_name for name in method_order()}

#: Row groups in display order; a table never mixes two groups in one block. The first three are
#: ``maskcl.methods.METHOD_GROUPS``, a method's ``group``.
GROUPS: Tuple[str, ...] = ("unsupervised", "supervised", "reference", "published_unsupervised",
                           "published_supervised")
_GROUP_TITLES = {
    "unsupervised": "Unsupervised (this pipeline)",
    "supervised": "Supervised (upper bound, this pipeline)",
    "reference": "Untrained network (reference, this pipeline)",
    "published_unsupervised": "Published, unsupervised",
    "published_supervised": "Published, supervised (upper bound)",
}


def dataset_name(dataset: str) -> str:
    return DATASET_NAMES.get(dataset, dataset)


def protocol_short(dataset: str, protocol: str, fallback: Optional[str] = None) -> str:
    """Short description; ``fallback`` (the metrics file's own description) for protocols added later."""
    short = PROTOCOL_SHORT.get((dataset, protocol))
    if short is not None:
        return short
    return fallback if fallback else protocol


def method_name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


#: A method group's supervision, the word of the tables' ``supervision`` column.
_SUPERVISION = {"unsupervised": "unsupervised", "supervised": "supervised", "reference": "none"}


def supervision(method: str) -> str:
    """``supervised`` (an upper bound), ``none`` (the untrained reference) or ``unsupervised``: the method's
    group (``MethodFacts.group``); a method no longer registered counts as unsupervised."""
    group = METHOD_FACTS.get(method).group if method in METHOD_FACTS else "unsupervised"
    return _SUPERVISION[group]


def trains(method: str) -> bool:
    """Whether runs of ``method`` take training steps (False: the untrained reference, whose log has no
    epoch); a method no longer registered is taken to train."""
    return METHOD_FACTS.get(method).trains if method in METHOD_FACTS else True


def run_label(experiment: str, method: str, variant: bool = False) -> str:
    """``MaskCL (re-impl.)`` for the experiment named after its method, else ``MaskCL (re-impl.): <experiment>``;
    a run whose component switches differ from the official code's is ``MaskCL (re-impl.) variant: <experiment>``
    whatever its name, so a variant is never read as the method."""
    name = method_name(method)
    if variant:
        return f"{name} variant: {experiment}"
    return name if experiment == method else f"{name}: {experiment}"


def group_of(method: str, published: bool = False) -> str:
    base = supervision(method)
    if base == "none":
        return "reference"
    return f"published_{base}" if published else base


def group_title(group: str) -> str:
    return _GROUP_TITLES[group]

