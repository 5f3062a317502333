"""Training dynamics from ``train_log.csv``: loss terms, cluster counts, pseudo-label quality.

Columns differ between methods (MaskCL logs six loss terms and the neighbour k, ClusterContrast and
the supervised bound one ``contrast`` term) and quality columns are absent where a dataset has no
labels to score against; a panel whose columns are all missing says so instead of being left blank.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from ..errors import ReportingError
from ..upstream import check_numeric_column, read_csv_file, rerun_hint
from .plotting import new_figure, save_figure

__all__ = ["LOSS_COLUMNS", "CLUSTER_COLUMNS", "QUALITY_COLUMNS", "PANELS", "read_train_log", "curves_frame",
           "plot_training", "quality_frame", "plot_quality"]

log = logging.getLogger(__name__)

LOSS_COLUMNS = ("loss", "proto_rgb", "nbr_rgb", "proto_mask", "nbr_mask", "crossview", "proto_fused", "contrast")
CLUSTER_COLUMNS = ("clusters", "outliers", "singletons")
QUALITY_COLUMNS = ("nmi_id", "nmi_clothes", "ari_id", "ari_clothes")
#: Panel name → (columns, y label).
PANELS: Dict[str, Tuple[Tuple[str, ...], str]] = {
    "loss": (LOSS_COLUMNS, "loss (epoch mean)"),
    "clusters": (CLUSTER_COLUMNS, "pseudo-label count"),
    "quality": (QUALITY_COLUMNS, "agreement with labels"),
}


def read_train_log(path: os.PathLike | str, allow_empty: bool = False) -> pd.DataFrame:
    """A run's ``train_log.csv``, checked (raises ``ReportingError`` naming the file and the fix).

    Checked: a whole CSV (``maskcl.upstream.read_csv_file``: not cut mid-line, no ragged row) with
    an ``epoch`` column of 1, 2, ... in order; every other cell empty (a value that epoch did not
    log) or a number (``nan`` included: a value the trainer computed as undefined); the counts of
    ``CLUSTER_COLUMNS`` non-negative integers and the NMI (in [0, 1]) and ARI (in [-1, 1]) of
    ``QUALITY_COLUMNS`` in range. ``allow_empty``: a header without rows is whole (the log of a run
    that never trains, the untrained reference).
    """
    frame = read_csv_file(path, what="training log", rule="train", columns=("epoch",), error=ReportingError)
    if frame.empty and allow_empty:
        return frame
    if frame.empty:
        raise ReportingError(f"{path}: no epoch rows; {rerun_hint(path, 'train')}")
    kw = dict(what="training log", rule="train", error=ReportingError)
    check_numeric_column(frame, "epoch", path, lo=1, integer=True, missing=False, **kw)
    epochs = frame["epoch"].to_numpy(np.int64)
    if not np.array_equal(epochs, np.arange(1, len(epochs) + 1)):
        i = int(np.flatnonzero(epochs != np.arange(1, len(epochs) + 1))[0])
        raise ReportingError(f"{path}: training log line {i + 2} is epoch {int(epochs[i])}, expected {i + 1} (epochs "
                             f"run 1, 2, ... in order; garbled); {rerun_hint(path, 'train')}")
    for col in frame.columns:
        if col == "epoch":
            continue
        if col in CLUSTER_COLUMNS:
            check_numeric_column(frame, col, path, lo=0, integer=True, **kw)
        elif col.startswith("nmi_"):
            check_numeric_column(frame, col, path, lo=0.0, hi=1.0 + 1e-9, **kw)
        elif col.startswith("ari_"):
            check_numeric_column(frame, col, path, lo=-1.0, hi=1.0 + 1e-9, **kw)
        else:
            _check_logged_numbers(frame, col, path)
    return frame


def _check_logged_numbers(frame: pd.DataFrame, col: str, path: os.PathLike | str) -> None:
    """Cells of ``col`` are empty or numbers; ``nan`` and ``inf`` are what the trainer logged (a diverged loss)."""
    raw = frame[col]
    values = pd.to_numeric(raw, errors="coerce")
    text = raw.astype(str).str.strip().str.lower()
    bad = values.isna() & raw.notna() & ~text.isin(["nan", "inf", "-inf"])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise ReportingError(f"{path}: training log column {col!r} has {raw.iloc[i]!r} on line {i + 2}, not a number "
                             f"(truncated or garbled); {rerun_hint(path, 'train')}")


def curves_frame(logs: Sequence[Tuple[int, pd.DataFrame]]) -> pd.DataFrame:
    """Long table of what ``plot_training`` draws: seed, epoch, panel, series, value.

    Parameters
    ----------
    logs : sequence of (seed, DataFrame)
    """
    rows: List[pd.DataFrame] = []
    for seed, frame in logs:
        for panel, (cols, _) in PANELS.items():
            for c in cols:
                if c not in frame.columns:
                    continue
                vals = pd.to_numeric(frame[c], errors="coerce")
                ok = vals.notna()
                if not ok.any():
                    continue
                rows.append(pd.DataFrame({"seed": seed, "epoch": frame.loc[ok, "epoch"].astype(int).to_numpy(),
                                          "panel": panel, "series": c, "value": vals[ok].to_numpy(np.float64)}))
    if not rows:
        return pd.DataFrame(columns=["seed", "epoch", "panel", "series", "value"])
    return pd.concat(rows, ignore_index=True)


def _empty_panel(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=8, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_training(frame: pd.DataFrame, png: os.PathLike | str, *, title: str) -> Tuple[Path, Path]:
    """Three panels (losses, cluster counts, NMI/ARI against identity and clothes); seeds overlaid.

    Raises
    ------
    ReportingError
        ``frame`` has no values at all.
    """
    if frame.empty:
        raise ReportingError(f"{png}: the training logs have none of the columns "
                             f"{', '.join(c for cols, _ in PANELS.values() for c in cols)}")
    fig = new_figure(13.0, 3.8)
    fig.suptitle(title, fontsize=9)
    axes = fig.subplots(1, len(PANELS), squeeze=False)[0]
    seeds = sorted(frame["seed"].unique())
    styles = ["-", "--", ":", "-."]
    for ax, (panel, (cols, ylabel)) in zip(axes, PANELS.items()):
        sub = frame[frame["panel"] == panel]
        if sub.empty:
            _empty_panel(ax, f"{panel}: not logged")
            ax.set_title(panel, fontsize=9)
            continue
        colours = {c: f"C{i}" for i, c in enumerate(cols)}
        for series in [c for c in cols if c in set(sub["series"])]:
            for si, seed in enumerate(seeds):
                s = sub[(sub["series"] == series) & (sub["seed"] == seed)]
                if s.empty:
                    continue
                ax.plot(s["epoch"], s["value"], styles[si % len(styles)], color=colours[series], linewidth=1.4,
                        label=series if si == 0 else None)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.set_title(panel + (f" (seeds {', '.join(map(str, seeds))}: line styles)" if len(seeds) > 1 else ""),
                     fontsize=9)
        if panel == "quality":
            ax.set_ylim(-0.05, 1.05)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, png, frame.reset_index(drop=True))


def quality_frame(groups: Sequence[Tuple[str, Sequence[Tuple[int, pd.DataFrame]]]],
                  columns: Sequence[str] = ("nmi_id", "nmi_clothes")) -> pd.DataFrame:
    """Seed-mean pseudo-label quality per run group: label, series, epoch, mean, std, n."""
    rows = []
    for label, logs in groups:
        for c in columns:
            per = [(seed, f) for seed, f in logs
                   if c in f.columns and pd.to_numeric(f[c], errors="coerce").notna().any()]
            if not per:
                continue
            wide = pd.concat([pd.Series(pd.to_numeric(f[c], errors="coerce").to_numpy(np.float64),
                                        index=f["epoch"].astype(int), name=seed) for seed, f in per], axis=1)
            for epoch, vals in wide.iterrows():
                v = vals.dropna().to_numpy()
                if v.size == 0:
                    continue
                rows.append({"label": label, "series": c, "epoch": int(epoch), "mean": float(v.mean()),
                             "std": float(v.std(ddof=1)) if v.size > 1 else float("nan"), "n": int(v.size)})
    return pd.DataFrame(rows, columns=["label", "series", "epoch", "mean", "std", "n"])


def plot_quality(frame: pd.DataFrame, png: os.PathLike | str, *, title: str) -> Tuple[Path, Path]:
    """Pseudo-label NMI against identity (left) and clothes (right) for every run group of a dataset."""
    if frame.empty:
        raise ReportingError(f"{png}: no pseudo-label quality columns in any training log")
    series = list(dict.fromkeys(frame["series"]))
    fig = new_figure(5.2 * len(series), 3.8)
    fig.suptitle(title, fontsize=9)
    axes = fig.subplots(1, len(series), squeeze=False)[0]
    for ax, s in zip(axes, series):
        sub = frame[frame["series"] == s]
        for label, g in sub.groupby("label", sort=False):
            (line,) = ax.plot(g["epoch"], g["mean"], label=f"{label} (n={int(g['n'].max())})", linewidth=1.4)
            sd = g["std"].to_numpy(np.float64)
            if np.isfinite(sd).any():
                ax.fill_between(g["epoch"], g["mean"] - sd, g["mean"] + sd, color=line.get_color(), alpha=0.15,
                                linewidth=0)
        what = {"nmi_id": "pseudo-label NMI with identities", "nmi_clothes": "pseudo-label NMI with outfits"}.get(s, s)
        ax.set_title(what, fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(-0.05, 1.05)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, png, frame.reset_index(drop=True))
