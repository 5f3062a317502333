"""The tables stage as one library call: every run's files in, every table and figure out.

Layout written (the ``tables`` rule declares exactly this):

* ``<tables_dir>/{results,headline,comparison,ablation_masks,ablation_methods,ablation_components,published}.{md,tex,csv}``
  and ``runs.csv`` (one row per run, protocol and seed);
* ``<figures_dir>/cmc/{dataset}/{protocol}.png``;
  ``retrieval/{dataset}/{experiment}/{masks}/seed{seed}/{protocol}.png``;
  ``training/{dataset}/{experiment}/{masks}.png``; ``pseudo_labels/{dataset}.png``;
  ``masks/{dataset}/{source}.png``; ``datasets/{dataset}.png`` (SynthCC's contact sheet),
  each with a sidecar ``.csv`` of the data drawn.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import pandas as pd

from ..datasets import DATASETS, dataset_splits
from ..io import write_csv_atomic
from ..layout import FIGURE_KINDS, MANIFEST, TABLE_STEMS, fill
from ..masks.index import check_mask_file, mask_fix, recorded_sizes
from ..manifest import read_dataset_info, read_manifest
from .aggregate import aggregate_seeds, cmc_frame, last_epoch_quality, per_seed_frame, protocol_order
from .cmc import plot_cmc
from .curves import curves_frame, plot_quality, plot_training, quality_frame, read_train_log
from ..errors import ReportingError
from .labels import dataset_name, protocol_short, run_label, trains
from .plotting import sidecar_path
from .overlays import copy_contact_sheet, overlay_frame, plot_overlays, read_mask_index
from .published import load_published, published_frame
from .retrieval import plot_retrieval, read_ranks, retrieval_frame, select_queries
from .runs import Run, load_runs
from .tables import (ablation_component_tables, ablation_csv, ablation_mask_tables, ablation_method_tables,
                     comparison_frame, comparison_table, headline_table, published_table, results_csv, results_tables,
                     write_table_files)

__all__ = ["ReportOutputs", "TABLE_STEMS", "FIGURE_KINDS", "build_report"]

log = logging.getLogger(__name__)

# TABLE_STEMS (tables written as .md, .tex and .csv) and FIGURE_KINDS (figure sub-folders) are the
# layout the tables rule declares, maskcl.layout.TABLES and FIGURES.

PathLike = os.PathLike | str

@dataclass
class ReportOutputs:
    """Every file written, by kind."""

    tables: List[Path] = field(default_factory=list)
    figures: Dict[str, List[Path]] = field(default_factory=lambda: {k: [] for k in FIGURE_KINDS})


def _manifests(paths: Mapping[str, PathLike]) -> Dict[str, Path]:
    """Dataset → manifest, as the workflow named them (never read back from the paths)."""
    return {str(d): Path(p) for d, p in paths.items()}


def _mask_indexes(paths: Mapping[Tuple[str, str], PathLike]) -> Dict[Tuple[str, str], Path]:
    """(dataset, source) → mask index, as the workflow named them."""
    return {(str(d), str(s)): Path(p) for (d, s), p in paths.items()}


def _dataset_roots(paths: Sequence[PathLike]) -> Dict[str, Path]:
    """Dataset → its root, from ``dataset.json`` (``maskcl.manifest.read_dataset_info``: root resolved and checked)."""
    out = {}
    for p in paths:
        info = read_dataset_info(p, error=ReportingError)
        out[str(info["name"])] = Path(info["root"])
    return out


def _generated(dataset: str) -> bool:
    """Generated datasets (SynthCC) write ``contact_sheet.png`` into their root."""
    return dataset in DATASETS and bool(DATASETS.get(dataset).generated)


class _Manifests:
    """Manifests read once, on first use."""

    def __init__(self, paths: Mapping[str, Path]) -> None:
        self.paths = paths
        self.cache: Dict[str, pd.DataFrame] = {}

    def get(self, dataset: str, why: str) -> pd.DataFrame:
        if dataset not in self.cache:
            if dataset not in self.paths:
                raise ReportingError(f"no manifest for dataset {dataset!r}, needed for {why}; pass "
                                     f"{fill(MANIFEST, dataset=dataset)}")
            splits = dataset_splits(dataset) if dataset in DATASETS else None
            self.cache[dataset] = read_manifest(self.paths[dataset], splits=splits, error=ReportingError)
        return self.cache[dataset]


def _table_specs(runs: Sequence[Run], show_published: bool, published_path: Optional[PathLike],
                 train_logs: Optional[Mapping[Path, pd.DataFrame]] = None
                 ) -> Tuple[List[Tuple[Any, ...]], pd.DataFrame, pd.DataFrame]:
    """Everything the table files hold, computed before any is written: (write_table_files arguments,
    keyword arguments) per stem, the per-seed frame (``runs.csv``) and the seed aggregate.
    ``train_logs`` (run folder → checked log) give each run's last-epoch pseudo-label quality."""
    quality = {folder: last_epoch_quality(frame) for folder, frame in (train_logs or {}).items()}
    per_seed = per_seed_frame(runs, quality)
    agg = aggregate_seeds(per_seed)
    entries = load_published(published_path)
    shown = entries if show_published else []
    specs: List[Tuple[Any, ...]] = []
    specs.append((("results", results_tables(agg, shown), results_csv(agg, shown), "Results under every protocol"),
                  {}))
    head = agg[agg["headline"].astype(bool)]
    want = {d: sorted(set(head.loc[head.dataset == d, "protocol"])) for d in set(head["dataset"])}
    specs.append((("headline", [headline_table(agg, shown)] if len(head) else [],
                   results_csv(head, shown, protocols=want), "Headline results"),
                  {"empty_note": "No run has a result for its dataset's headline protocol."}))
    comparison = comparison_table(agg, shown)
    compared, compared_protocols = comparison_frame(agg)
    verified = [e for e in shown if e.status == "V"]
    specs.append((("comparison", [comparison] if comparison is not None else [],
                   results_csv(compared, verified, protocols=compared_protocols), "Comparison of methods"),
                  {"empty_note": "No run of a method at its official switches has a result under a comparison "
                                 "protocol."}))
    for kind, build in (("masks", ablation_mask_tables), ("methods", ablation_method_tables),
                        ("components", ablation_component_tables)):
        specs.append(((f"ablation_{kind}", build(agg), ablation_csv(agg, kind), f"Ablation by {kind}"),
                      {"empty_note": f"No runs for this ablation ({kind}); see configs/synthcc_ablation.yaml."}))
    specs.append((("published", [published_table(entries)], published_frame(entries), "Published numbers"), {}))
    return specs, per_seed, agg


def _write_tables(specs: Sequence[Tuple[Any, ...]], per_seed: pd.DataFrame, tables_dir: Path,
                  written: List[Path]) -> List[Path]:
    out: List[Path] = []
    for args, kw in specs:
        written += [tables_dir / f"{args[0]}.{ext}" for ext in ("md", "tex", "csv")]
        out += write_table_files(tables_dir, args[0], *args[1:], **kw)
    runs_csv = tables_dir / "runs.csv"
    written.append(runs_csv)
    write_csv_atomic(runs_csv, per_seed)
    out.append(runs_csv)
    return out


def _check_grid_masks(frame: pd.DataFrame, kind: str, index: pd.DataFrame, index_path: Path) -> None:
    """Every mask a retrieval grid draws beside its image belongs to it (``maskcl.masks.index``)."""
    sizes = recorded_sizes(index)
    fix = mask_fix(index_path)
    for rel, path, mask in zip(frame["relpath"], frame["path"], frame["mask"]):
        if mask:
            check_mask_file(str(mask), kind, str(path), sizes.get(str(rel)) if sizes is not None else None, fix)


def _remove(paths: Sequence[Path]) -> None:
    """Take back what a failed stage wrote, so no file with a final name is left half a report."""
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def build_report(metrics: Sequence[PathLike], *, tables_dir: PathLike, figures_dir: PathLike,
                 experiments: Optional[Mapping[str, Mapping[str, Any]]] = None, ranks: Sequence[PathLike] = (),
                 train_logs: Sequence[PathLike] = (), manifests: Optional[Mapping[str, PathLike]] = None,
                 mask_indexes: Optional[Mapping[Tuple[str, str], PathLike]] = None, dataset_infos: Sequence[PathLike] = (),
                 published: bool = True, published_path: Optional[PathLike] = None, topk_grid: int = 10,
                 num_grid_queries: int = 6, figure_seed: int = 0, cmc_max_rank: int = 20,
                 overlay_per_split: int = 3) -> ReportOutputs:
    """Write every table and figure of the evaluated runs.

    Parameters
    ----------
    metrics : sequence of path-like
        ``metrics.json`` of every run (``results/{dataset}/runs/{experiment}/{masks}/seed{seed}/``).
    tables_dir, figures_dir : path-like
        Output folders (``results/tables``, ``results/figures``).
    experiments : mapping, optional
        The config's experiments (experiment → ``{"method", "train"}``), for runs whose metrics.json
        does not record its method and training settings, and to check those that do.
    ranks, train_logs : sequence of path-like
        ``ranks.npz`` / ``train_log.csv`` of runs among ``metrics`` (retrieval grids, training curves).
    manifests : mapping of str to path-like
        Dataset → its ``manifest.csv`` (image paths and labels for grids and overlays).
    mask_indexes : mapping of (str, str) to path-like
        (dataset, mask source) → its ``index.csv`` (masks beside grid images; overlays).
    dataset_infos : sequence of path-like
        ``results/{dataset}/dataset.json`` (the dataset root holding SynthCC's contact sheet).
    published : bool
        Show the curated published numbers as separate rows in the results and headline tables.
    published_path : path-like, optional
        Curated numbers; default the packaged ``data/published.yaml``.
    topk_grid, num_grid_queries, figure_seed : int
        Gallery columns and query rows of retrieval grids; seed of the query and overlay picks.
    cmc_max_rank : int
        Last rank drawn in CMC figures (at most the 50 kept in metrics.json).
    overlay_per_split : int
        Images per split in mask overlay figures.

    Returns
    -------
    ReportOutputs

    Raises
    ------
    ReportingError
        Missing or malformed inputs (each message names the file and the rule to rerun).
    """
    for name, v, lo in (("topk_grid", topk_grid, 1), ("num_grid_queries", num_grid_queries, 1),
                        ("cmc_max_rank", cmc_max_rank, 1), ("overlay_per_split", overlay_per_split, 1)):
        if int(v) < lo:
            raise ReportingError(f"tables.{name} must be >= {lo}, got {v}")
    tables_dir, figures_dir = Path(tables_dir), Path(figures_dir)
    # 1. read and check every input before anything is written: a bad upstream file stops the stage
    #    with its one line and leaves no table or figure behind
    runs = load_runs(metrics, experiments, ranks=ranks, train_logs=train_logs)
    train_logs_read = {run.folder: read_train_log(run.train_log_path, allow_empty=not trains(run.method))
                       for run in runs if run.train_log_path is not None}
    specs, per_seed, agg = _table_specs(runs, published, published_path, train_logs_read)
    mans = _Manifests(_manifests(manifests or {}))
    indexes = _MaskIndexes(_mask_indexes(mask_indexes or {}))
    ranked = {run.folder: read_ranks(run.ranks_path, manifest_rows=len(mans.get(run.key.dataset,
                                                                             f"the retrieval grid of {run.folder}")))
              for run in runs if run.ranks_path is not None}   # every seed's, checked, though grids draw the first
    curves, quality = _curve_jobs(runs, train_logs_read, figures_dir)
    plots = (("cmc", _cmc_jobs(runs, agg, figures_dir, cmc_max_rank), lambda f, png, x: plot_cmc(f, png, short=x)),
             ("retrieval", _grid_jobs(runs, ranked, mans, indexes, figures_dir, topk_grid, num_grid_queries,
                                      figure_seed),
              lambda f, png, x: plot_retrieval(f, png, title=x)),
             ("training", curves, lambda f, png, x: plot_training(f, png, title=x)),
             ("pseudo_labels", quality, lambda f, png, x: plot_quality(f, png, title=x)),
             ("masks", _overlay_jobs(mans, indexes, figures_dir, overlay_per_split, figure_seed),
              lambda f, png, x: plot_overlays(f, png, title=x)),
             ("datasets", _sheet_jobs(dataset_infos, figures_dir), lambda sheet, png, _: copy_contact_sheet(sheet, png)))
    # 2. write; a failure part-way takes back what was written
    out = ReportOutputs()
    written: List[Path] = []
    try:
        out.tables = _write_tables(specs, per_seed, tables_dir, written)
        for k in FIGURE_KINDS:
            (figures_dir / k).mkdir(parents=True, exist_ok=True)
        for kind, jobs, plot in plots:
            for source, png, arg in jobs:
                written += [png, sidecar_path(png)]   # before plotting: a failure part-way removes it too
                out.figures[kind] += list(plot(source, png, arg))
    except BaseException:
        _remove(written)
        raise
    n_fig = sum(1 for v in out.figures.values() for p in v if p.suffix == ".png")
    log.info("tables stage: %d table files, %d figures", len(out.tables), n_fig)
    return out


#: One figure to draw: its data (a frame, or the contact sheet's path), its PNG and its title or subtitle.
_Job = Tuple[Any, Path, Any]


class _MaskIndexes:
    """The mask indexes among the inputs, each read (and checked) once, all before anything is written."""

    def __init__(self, paths: Mapping[Tuple[str, str], Path]) -> None:
        self.paths = dict(paths)
        self.cache = {key: read_mask_index(path) for key, path in sorted(self.paths.items())}

    def get(self, dataset: str, source: str) -> Optional[pd.DataFrame]:
        return self.cache.get((dataset, source))


def _cmc_jobs(runs: Sequence[Run], agg: pd.DataFrame, figures_dir: Path, cmc_max_rank: int) -> List[_Job]:
    """One CMC figure per (dataset, protocol), every run group's curve on it."""
    jobs = []
    for d in sorted({r.key.dataset for r in runs}):
        sub = agg[agg["dataset"] == d]
        for p in protocol_order(d, sub["protocol"].tolist()):
            frame = cmc_frame(runs, d, p, cmc_max_rank)
            if frame.empty:
                log.info("%s/%s: no CMC values (no valid query in any run); no figure", d, p)
                continue
            short = str(sub.loc[sub["protocol"] == p, "short"].iloc[0])
            jobs.append((frame, figures_dir / "cmc" / d / f"{p}.png", short))
    return jobs


def _grid_masks(run: Run, indexes: _MaskIndexes) -> Tuple[Optional[Dict[str, str]], Optional[pd.DataFrame]]:
    """The masks drawn beside a run's grid images (its own source and mode), with their index; none for RGB runs."""
    if run.key.mask_source is None:
        return None, None
    idx = indexes.get(run.key.dataset, run.key.mask_source)
    col = run.key.mask_mode
    if idx is None:
        log.info("%s: no mask index of source %s among the inputs; grid drawn without masks", run.folder,
                 run.key.mask_source)
        return None, None
    if col not in ("silhouette", "parts"):
        log.warning("%s: mask mode %r is neither silhouette nor parts; grid drawn without masks", run.folder, col)
        return None, None
    return dict(zip(idx["relpath"].astype(str), idx[col].astype(str))), idx


def _grid_jobs(runs: Sequence[Run], ranked: Mapping[Path, Tuple[str, Dict[str, Any]]], mans: _Manifests,
               indexes: _MaskIndexes, figures_dir: Path, topk_grid: int, num_grid_queries: int,
               figure_seed: int) -> List[_Job]:
    """Retrieval grids: the first seed of every run group, on the headline protocol saved first."""
    jobs = []
    done = set()
    for run in runs:
        if run.ranks_path is None or run.key.group in done:
            continue
        done.add(run.key.group)
        manifest = mans.get(run.key.dataset, f"the retrieval grid of {run.folder}")
        protocol, arrays = ranked[run.folder]
        masks, idx = _grid_masks(run, indexes)
        queries = select_queries(arrays["first_match"], num_grid_queries, figure_seed)
        if queries.size == 0:
            log.info("%s: no query with a valid match under %s; no retrieval grid", run.folder, protocol)
            continue
        gallery = run.metrics.get("protocols", {}).get(protocol, {}).get("num_gallery")
        frame = retrieval_frame(arrays, manifest, queries, topk_grid, masks,
                                gallery_size=None if gallery is None else int(gallery))
        if masks is not None and idx is not None:
            _check_grid_masks(frame, str(run.key.mask_mode), idx,
                              indexes.paths[(run.key.dataset, str(run.key.mask_source))])
        short = protocol_short(run.key.dataset, protocol)
        title = (f"{dataset_name(run.key.dataset)} | {run_label(run.key.experiment, run.method, run.variant)} | masks "
                 f"{run.key.masks} | seed {run.key.seed} | protocol {protocol}: {short} | green: correct, red: other "
                 f"identity, grey dashed: junk (excluded by the protocol)")
        png = (figures_dir / "retrieval" / run.key.dataset / run.key.experiment / run.key.masks /
               f"seed{run.key.seed}" / f"{protocol}.png")
        jobs.append((frame, png, title))
    return jobs


def _curve_jobs(runs: Sequence[Run], train_logs: Mapping[Path, pd.DataFrame], figures_dir: Path
                ) -> Tuple[List[_Job], List[_Job]]:
    """Training curves per run group (seeds overlaid), and pseudo-label quality per dataset."""
    logs: Dict[Tuple[str, str, str], List[Tuple[int, pd.DataFrame]]] = {}
    labels: Dict[Tuple[str, str, str], str] = {}
    for run in runs:
        if run.train_log_path is None:
            continue
        logs.setdefault(run.key.group, []).append((run.key.seed, train_logs[run.folder]))
        labels[run.key.group] = f"{run_label(run.key.experiment, run.method, run.variant)} [{run.key.masks}]"
    curves = []
    for (d, e, m), group_logs in logs.items():
        frame = curves_frame(group_logs)
        if frame.empty:
            log.info("%s/%s/%s: training logs have no plottable columns; no figure", d, e, m)
            continue
        curves.append((frame, figures_dir / "training" / d / e / f"{m}.png", f"{dataset_name(d)} | {labels[(d, e, m)]}"))
    quality = []
    for d in sorted({g[0] for g in logs}):
        frame = quality_frame([(labels[g], logs[g]) for g in logs if g[0] == d])
        if frame.empty:
            log.info("%s: no pseudo-label quality columns logged; no comparison figure", d)
            continue
        quality.append((frame, figures_dir / "pseudo_labels" / f"{d}.png",
                        f"{dataset_name(d)}: pseudo-label quality during training (seed mean ± std)"))
    return curves, quality


def _overlay_jobs(mans: _Manifests, indexes: _MaskIndexes, figures_dir: Path, overlay_per_split: int,
                  figure_seed: int) -> List[_Job]:
    """Mask overlays, one per (dataset, mask source)."""
    jobs = []
    for (d, source), path in sorted(indexes.paths.items()):
        manifest = mans.get(d, f"the mask overlays of {path}")
        frame = overlay_frame(indexes.cache[(d, source)], manifest, overlay_per_split, figure_seed, index_path=path)
        jobs.append((frame, figures_dir / "masks" / d / f"{source}.png",
                     f"{dataset_name(d)}: masks from {source} ({overlay_per_split} images per split)"))
    return jobs


def _sheet_jobs(dataset_infos: Sequence[PathLike], figures_dir: Path) -> List[_Job]:
    """The contact sheet of each dataset that has one (a generated dataset's generator writes it: missing = broken)."""
    jobs = []
    for d, root in sorted(_dataset_roots(dataset_infos).items()):
        sheet = root / "contact_sheet.png"
        if _generated(d) or sheet.exists():
            if not sheet.is_file():
                raise ReportingError(f"{sheet}: contact sheet not found; rerun the download rule to regenerate SynthCC")
            jobs.append((sheet, figures_dir / "datasets" / f"{d}.png", None))
    return jobs
