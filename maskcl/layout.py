"""The results layout, written once: where every file of the workflow lives.

Each path is a Snakemake pattern (``{dataset}``, ``{source}``, ``{backbone}``, ``{experiment}``,
``{masks}``, ``{seed}``): the rules declare the patterns as they are, the plan, the reports and the
repair hints fill them (:func:`fill`) or match them (:func:`pattern_regex`). The two names the
pipeline writes into a dataset folder live here too, so that the repair hints (``maskcl.repair``, a
bottom-layer module) need nothing from the stages above. Nothing here imports from the package.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Dict, Mapping, Pattern, Tuple

__all__ = ["RESULTS", "MANIFEST", "STATS", "DATASET_INFO", "MASK_DIR", "MASK_INDEX", "MASK_QUALITY_CSV",
           "MASK_QUALITY_MD", "PRETRAIN", "RUN_DIR", "RUN_MODEL", "RUN_TRAIN_LOG", "RUN_METRICS", "RUN_RANKS", "RUN_CARD",
           "STATE_DIR", "TABLES_DIR", "FIGURES_DIR", "SYNTHCC_META", "EXTRACT_MARKER", "fill", "pattern_regex",
           "TABLE_FORMATS", "TableEntry", "FigureEntry", "TABLES", "FIGURES", "TABLE_STEMS", "FIGURE_KINDS",
           "tables_outputs"]

#: The folder of every output, relative to the workflow's working folder.
RESULTS = "results"

# stage 1, download: one manifest per dataset, its counts and where its files are
MANIFEST = f"{RESULTS}/{{dataset}}/manifest.csv"
STATS = f"{RESULTS}/{{dataset}}/stats.csv"
DATASET_INFO = f"{RESULTS}/{{dataset}}/dataset.json"
# stage 2, masks: one folder per mask source, its index written last; the agreement between sources
MASK_DIR = f"{RESULTS}/{{dataset}}/masks/{{source}}"
MASK_INDEX = f"{MASK_DIR}/index.csv"
MASK_QUALITY_CSV = f"{RESULTS}/{{dataset}}/masks/quality.csv"
MASK_QUALITY_MD = f"{RESULTS}/{{dataset}}/masks/quality.md"
# stage 3, training: the self-supervised warm-up, the run folders, the resume state outside them
PRETRAIN = f"{RESULTS}/{{dataset}}/pretrain/{{backbone}}/backbone.pt"
RUN_DIR = f"{RESULTS}/{{dataset}}/runs/{{experiment}}/{{masks}}/seed{{seed}}"
RUN_MODEL = f"{RUN_DIR}/model.pt"
RUN_TRAIN_LOG = f"{RUN_DIR}/train_log.csv"
STATE_DIR = f"{RESULTS}/{{dataset}}/state/{{experiment}}/{{masks}}/seed{{seed}}"
# stage 4, evaluation
RUN_METRICS = f"{RUN_DIR}/metrics.json"
RUN_RANKS = f"{RUN_DIR}/ranks.npz"
RUN_CARD = f"{RUN_DIR}/model_card.md"
# stage 5, tables and figures
TABLES_DIR = f"{RESULTS}/tables"
FIGURES_DIR = f"{RESULTS}/figures"

#: Written into a generated SynthCC folder: its parameters and file digests (``maskcl.datasets.synthcc``).
SYNTHCC_META = "synthcc.json"
#: Written into a folder this pipeline extracted from an archive (``maskcl.download.extract``).
EXTRACT_MARKER = ".maskcl-extracted.json"


def fill(pattern: str, **wildcards: Any) -> str:
    """``pattern`` with its wildcards filled (every one must be given)."""
    return pattern.format(**wildcards)


def pattern_regex(pattern: str) -> Pattern[str]:
    """A regex matching the paths of ``pattern``: a wildcard is one path component (``{seed}`` digits)."""
    out = []
    for literal, field, _, _ in string.Formatter().parse(pattern):
        out.append(re.escape(literal))
        if field is not None:
            out.append(r"\d+" if field == "seed" else r"[^/]+")
    return re.compile("^" + "".join(out) + "$")


# --------------------------------------------------------------------------- the tables stage's files
# The one list the ``tables`` rule declares (with its report entries) and ``maskcl.reporting`` writes; plain
# data, so that Snakemake reads it without importing the plotting stack.

#: Table file formats and their report labels.
TABLE_FORMATS: Mapping[str, str] = MappingProxyType({"md": "Markdown", "tex": "LaTeX", "csv": "CSV"})


@dataclass(frozen=True)
class TableEntry:
    """``results/tables/{stem}.{ext}`` per format; caption ``report/{stem}.rst``."""

    stem: str
    subcategory: str
    formats: Tuple[str, ...] = tuple(TABLE_FORMATS)


@dataclass(frozen=True)
class FigureEntry:
    """The folder ``results/figures/{kind}/`` of PNGs named by ``pattern``; caption ``report/{kind}.rst``."""

    kind: str
    pattern: str
    subcategory: str

    @property
    def wildcards(self) -> Tuple[str, ...]:
        """The pattern's wildcards in order (the report labels each figure by them)."""
        return tuple(f for _, f, _, _ in string.Formatter().parse(self.pattern) if f)


#: Every table the tables stage writes, in the rule's (and the report's) order.
TABLES: Tuple[TableEntry, ...] = (
    TableEntry("results", "All protocols"),
    TableEntry("headline", "Headline protocol"),
    TableEntry("comparison", "Comparison of methods"),
    TableEntry("ablation_masks", "Ablation: mask source and mode"),
    TableEntry("ablation_methods", "Ablation: methods"),
    TableEntry("ablation_components", "Ablation: method components"),
    TableEntry("published", "Published numbers"),
    TableEntry("runs", "Every run and seed", ("csv",)),
)
#: Every figure folder the tables stage writes.
FIGURES: Tuple[FigureEntry, ...] = (
    FigureEntry("cmc", "{dataset}/{protocol}.png", "CMC curves"),
    FigureEntry("retrieval", "{dataset}/{experiment}/{masks}/seed{seed}/{protocol}.png", "Retrieval grids"),
    FigureEntry("training", "{dataset}/{experiment}/{masks}.png", "Training curves"),
    FigureEntry("pseudo_labels", "{dataset}.png", "Pseudo-label quality"),
    FigureEntry("masks", "{dataset}/{source}.png", "Mask overlays"),
    FigureEntry("datasets", "{dataset}.png", "Datasets"),
)
#: Tables written as .md, .tex and .csv (``runs.csv`` is CSV only), and the figure folders.
TABLE_STEMS: Tuple[str, ...] = tuple(t.stem for t in TABLES if t.formats == tuple(TABLE_FORMATS))
FIGURE_KINDS: Tuple[str, ...] = tuple(f.kind for f in FIGURES)


def tables_outputs(report: Callable[..., Any], directory: Callable[..., Any],
                   captions: str = "../report") -> Dict[str, Any]:
    """The tables rule's named outputs (``results_md``, ..., ``runs_csv``, ``cmc``, ...), each marked for the report.

    Snakemake's ``report`` and ``directory`` flags are passed in (this package does not import
    Snakemake); ``captions`` is the caption folder relative to the rule file.
    """
    out: Dict[str, Any] = {}
    for t in TABLES:
        for ext in t.formats:
            out[f"{t.stem}_{ext}"] = report(f"{TABLES_DIR}/{t.stem}.{ext}", caption=f"{captions}/{t.stem}.rst",
                                            category="Tables", subcategory=t.subcategory,
                                            labels={"table": t.stem, "format": TABLE_FORMATS[ext]})
    for f in FIGURES:
        out[f.kind] = report(directory(f"{FIGURES_DIR}/{f.kind}"), patterns=[f.pattern],
                             caption=f"{captions}/{f.kind}.rst", category="Figures", subcategory=f.subcategory,
                             labels={w: f"{{{w}}}" for w in f.wildcards})
    return out
