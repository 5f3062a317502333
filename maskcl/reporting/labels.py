"""Human words for machine names: datasets, protocols, methods and row groups.

Every number in a table carries its protocol; the short descriptions below are what a reader sees
next to the protocol name (the full definitions are in ``metrics.json`` and docs/protocols.md).
Supervised runs are always labelled as an upper bound so they are never read as a competitor.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

__all__ = ["DATASET_NAMES", "PROTOCOL_SHORT", "METHOD_NAMES", "SUPERVISED_METHODS", "GROUPS",
           "dataset_name", "protocol_short", "method_name", "run_label", "supervision", "group_of",
           "group_title"]

#: Registry name → the name used in papers.
DATASET_NAMES: Dict[str, str] = {
    "synthcc": "SynthCC", "ltcc": "LTCC", "prcc": "PRCC", "vcclothes": "VC-Clothes",
    "deepchange": "DeepChange", "celebreid": "Celeb-reID", "celebreid_light": "Celeb-reID-light",
}

_LTCC_LIKE = {
    "general": "standard rule: all queries vs all gallery images; same-identity same-camera images excluded",
    "cc": "clothes-changing (CAL): every gallery image kept as a distractor; same-identity images with the "
          "same clothes or camera excluded",
    "cc_maskcl": "clothes-changing as in the official MaskCL code: query and gallery restricted to "
                 "clothes-changing identities, then the clothes-changing rule",
}
_CELEB = {"general": "all queries vs all gallery images; nothing excluded (no camera labels)"}

#: (dataset, protocol) → short description shown beside every number of that protocol.
PROTOCOL_SHORT: Dict[Tuple[str, str], str] = {
    **{("ltcc", k): v for k, v in _LTCC_LIKE.items()},
    **{("synthcc", k): v for k, v in _LTCC_LIKE.items()},
    ("prcc", "sc_multishot"): "same clothes (camera B vs A), multi-shot: the full camera-A gallery (CAL)",
    ("prcc", "cc_multishot"): "clothes-changing (camera C vs A), multi-shot: the full camera-A gallery (CAL)",
    ("prcc", "sc_singleshot"): "same clothes (camera B vs A), single-shot: one random camera-A image per "
                               "identity, mean over draws",
    ("prcc", "cc_singleshot"): "clothes-changing (camera C vs A), single-shot as in MaskCL: one random camera-A "
                               "image per identity, mean over draws",
    ("vcclothes", "general"): "standard rule, all cameras; same-identity same-camera images excluded",
    ("vcclothes", "sc"): "same-clothes rule, all cameras",
    ("vcclothes", "cc"): "clothes-changing rule, all cameras (the official MaskCL protocol)",
    ("vcclothes", "cams23"): "cameras 2 and 3 only, same clothes (CAL vcclothes_sc)",
    ("vcclothes", "cams34"): "cameras 3 and 4 only, clothes change (CAL vcclothes_cc)",
    **{("celebreid", k): v for k, v in _CELEB.items()},
    **{("celebreid_light", k): v for k, v in _CELEB.items()},
    ("deepchange", "val"): "validation split; the tracklet id plays the camera (CAL)",
    ("deepchange", "test"): "test split; the tracklet id plays the camera (CAL)",
}

#: Method registry name → row label.
METHOD_NAMES: Dict[str, str] = {
    "maskcl": "MaskCL (re-impl.)",
    "clustercontrast": "ClusterContrast (re-impl.)",
    "supervised": "supervised (upper bound)",
}
SUPERVISED_METHODS = frozenset({"supervised"})

#: Row groups in display order; a table never mixes two groups in one block.
GROUPS: Tuple[str, ...] = ("unsupervised", "supervised", "published_unsupervised", "published_supervised")
_GROUP_TITLES = {
    "unsupervised": "Unsupervised (this pipeline)",
    "supervised": "Supervised (upper bound, this pipeline)",
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


def supervision(method: str) -> str:
    return "supervised" if method in SUPERVISED_METHODS else "unsupervised"


def run_label(experiment: str, method: str) -> str:
    """``MaskCL (re-impl.)`` for the experiment named after its method, else ``MaskCL (re-impl.): <experiment>``."""
    name = method_name(method)
    return name if experiment == method else f"{name}: {experiment}"


def group_of(method: str, published: bool = False) -> str:
    base = supervision(method)
    return f"published_{base}" if published else base


def group_title(group: str) -> str:
    return _GROUP_TITLES[group]

