"""Stage 5: paper tables, published numbers beside ours, figures, and the report's inputs.

- ``runs``: metrics files → ``Run`` records (identity as recorded in metrics.json, method and masks from
  the record or the config).
- ``aggregate``: per-seed and seed-aggregated long tables (raw fractions), CMC data.
- ``published``: the curated ``data/published.yaml`` (statuses V and I only), checked on load.
- ``render`` / ``tables``: one table model rendered as Markdown and LaTeX (booktabs), plus CSV.
- ``cmc``, ``retrieval``, ``curves``, ``overlays``: figures, each with a sidecar CSV of its data.
- ``stage``: ``build_report``, the one call the ``tables`` rule makes.
"""

from ..errors import ReportingError
from .aggregate import METRIC_KEYS, aggregate_seeds, cmc_frame, per_seed_frame
from .labels import DATASET_NAMES, PROTOCOL_SHORT, protocol_short, run_label
from .published import PublishedEntry, load_published, published_frame
from .render import Table, fmt_pct, latex_escape, tables_to_latex, tables_to_markdown, to_latex, to_markdown
from .runs import COMPONENTS, Run, RunKey, load_runs
from .stage import FIGURE_KINDS, TABLE_STEMS, ReportOutputs, build_report
from .tables import (ablation_component_tables, ablation_mask_tables, ablation_method_tables, headline_table,
                     results_tables)

__all__ = [
    "ReportingError", "RunKey", "Run", "COMPONENTS", "load_runs",
    "METRIC_KEYS", "per_seed_frame", "aggregate_seeds", "cmc_frame",
    "DATASET_NAMES", "PROTOCOL_SHORT", "protocol_short", "run_label",
    "PublishedEntry", "load_published", "published_frame",
    "Table", "fmt_pct", "latex_escape", "to_markdown", "to_latex", "tables_to_markdown", "tables_to_latex",
    "results_tables", "headline_table", "ablation_mask_tables", "ablation_method_tables",
    "ablation_component_tables",
    "build_report", "ReportOutputs", "TABLE_STEMS", "FIGURE_KINDS",
]
