"""CMC curves: one figure per (dataset, protocol), one curve per run group, seed mean ± std."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Tuple

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from ..errors import ReportingError
from .labels import dataset_name
from .plotting import new_figure, save_figure

__all__ = ["plot_cmc"]


def plot_cmc(frame: pd.DataFrame, png: os.PathLike | str, *, short: str = "") -> Tuple[Path, Path]:
    """Draw the curves of ``frame`` (from ``aggregate.cmc_frame``) and write PNG + sidecar.

    Parameters
    ----------
    frame : pandas.DataFrame
        One dataset and protocol; columns label, supervision, rank, cmc_mean, cmc_std, n.
    png : path-like
    short : str
        Protocol description for the title.

    Returns
    -------
    (Path, Path)
        The PNG and its sidecar CSV.

    Raises
    ------
    ReportingError
        ``frame`` is empty or mixes datasets or protocols.
    """
    if frame.empty:
        raise ReportingError(f"{png}: no CMC values to plot")
    if frame["dataset"].nunique() != 1 or frame["protocol"].nunique() != 1:
        raise ReportingError(f"{png}: a CMC figure shows one dataset and one protocol")
    dataset, protocol = frame["dataset"].iloc[0], frame["protocol"].iloc[0]
    fig = new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    for label, grp in frame.groupby("label", sort=False):
        x = grp["rank"].to_numpy()
        y = 100.0 * grp["cmc_mean"].to_numpy(np.float64)
        sd = 100.0 * grp["cmc_std"].to_numpy(np.float64)
        style = {"supervised": "--", "none": ":"}.get(grp["supervision"].iloc[0], "-")  # bound, reference, ours
        n = int(grp["n"].iloc[0])
        (line,) = ax.plot(x, y, style, marker="o" if len(x) <= 20 else None, markersize=3, label=f"{label} (n={n})")
        if n > 1 and np.isfinite(sd).any():
            ax.fill_between(x, y - sd, y + sd, color=line.get_color(), alpha=0.15, linewidth=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_ylim(0, 100)
    ax.set_xlim(1, max(2, int(frame["rank"].max())))
    ax.grid(True, alpha=0.3)
    ax.set_title(f"{dataset_name(dataset)}, protocol {protocol}\n{textwrap.fill(short, 80)}", fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, png, frame.reset_index(drop=True))
