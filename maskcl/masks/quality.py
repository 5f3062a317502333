"""How good each mask source is, scored against a dataset's ground-truth parsing (SynthCC).

Silhouette IoU (foreground = any non-background class) is computed for every source; per-class IoU
and mIoU only for sources whose labels are LIP classes (the ground truth's label set), over the
classes present in the ground truth, background included as in the LIP benchmark. Scores are pooled
over all images (intersection and union summed, as a confusion matrix), and the per-image
silhouette IoU is summarised as well so that a few failed images stand out.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd
from PIL import Image

from ..errors import DatasetError
from ..io import read_json, write_csv_atomic, write_text_atomic
from ..manifest import check_manifest_frame, read_manifest
from .index import read_mask_index
from .labels import LIP, get_label_set
from .sources import resolve_parsing

__all__ = ["QUALITY_COLUMNS", "mask_quality", "quality_markdown", "write_quality_report"]

log = logging.getLogger(__name__)

#: Leading columns of ``quality.csv`` (fractions in [0, 1]); ``iou_<class>`` columns follow.
QUALITY_COLUMNS = ("source", "label_set", "images", "silhouette_iou", "silhouette_iou_mean",
                   "silhouette_iou_p05", "silhouette_precision", "silhouette_recall", "miou", "miou_classes",
                   "pixel_accuracy", "fg_fraction", "gt_fg_fraction")


def _read_labels(path: str, what: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise DatasetError(f"{what} {path} must be a palette or grey PNG of class indices, got {im.mode}")
            return np.array(im, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"cannot read {what} {path} ({e}); rerun the stage that wrote it") from None


def mask_quality(manifest: Union[str, Path, pd.DataFrame], indexes: Mapping[str, Union[str, Path]], *,
                 splits: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Score every source's label maps against the manifest's ground-truth parsing.

    Parameters
    ----------
    manifest : path or DataFrame
        Needs ``path``, ``relpath`` and ``parsing`` (LIP label maps relative to the dataset root);
        checked by ``maskcl.manifest``.
    indexes : mapping
        Source name → its ``index.csv`` (``params.json`` beside it gives the label set), read with
        ``maskcl.masks.index.read_mask_index``.
    splits : sequence of str, optional
        The dataset's split names, checked against the manifest's.

    Returns
    -------
    pd.DataFrame
        One row per source: ``QUALITY_COLUMNS`` then ``iou_<LIP class>`` for the classes present in
        the ground truth (NaN for sources without LIP labels).

    Raises
    ------
    DatasetError
        No ground truth in the manifest, an index that misses images, or mismatched map sizes.
    """
    frame = (check_manifest_frame(manifest, splits=splits) if isinstance(manifest, pd.DataFrame)
             else read_manifest(manifest, splits=splits))
    if "parsing" not in frame.columns:
        raise DatasetError("the manifest has no 'parsing' column: mask quality needs a dataset with "
                           "ground-truth parsing (synthcc)")
    gt_rows = frame[frame["parsing"].notna() & (frame["parsing"].astype(str) != "")]
    if gt_rows.empty:
        raise DatasetError("the manifest's 'parsing' column is empty: no ground truth to score against")
    if not indexes:
        raise DatasetError("no mask source index given to score")

    label_sets: Dict[str, Any] = {}
    lookups: Dict[str, Dict[str, str]] = {}
    for src, index_path in indexes.items():
        params_file = Path(index_path).parent / "params.json"
        if not params_file.is_file():
            raise DatasetError(f"{params_file} not found; rerun the parse stage for source {src}")
        label_sets[src] = get_label_set(read_json(params_file)["label_set"])
        idx = read_mask_index(index_path, ("relpath", "label"))
        lookups[src] = dict(zip(idx["relpath"], idx["label"]))
        missing = [r for r in gt_rows["relpath"] if r not in lookups[src]]
        if missing:
            raise DatasetError(f"{index_path}: {len(missing)} image(s) of the manifest are missing (e.g. "
                               f"{missing[0]}); rerun the parse stage for source {src}")

    k_gt = LIP.num_classes
    conf = {s: np.zeros((k_gt, label_sets[s].num_classes), dtype=np.int64) for s in indexes}
    per_image: Dict[str, List[float]] = {s: [] for s in indexes}
    fg_pred: Dict[str, int] = {s: 0 for s in indexes}
    gt_fg = 0
    pixels = 0
    for row in gt_rows.itertuples(index=False):
        gt_path = resolve_parsing(str(row.path), str(row.relpath), row.parsing)
        assert gt_path is not None
        gt = _read_labels(gt_path, "ground-truth parsing")
        if int(gt.max(initial=0)) >= k_gt:
            raise DatasetError(f"{gt_path}: class {int(gt.max())} is not a LIP class (0..{k_gt - 1})")
        gt_fg_mask = gt != 0
        gt_fg += int(gt_fg_mask.sum())
        pixels += gt.size
        for src in indexes:
            pred_path = lookups[src][row.relpath]
            pred = _read_labels(pred_path, f"{src} label map")
            if pred.shape != gt.shape:
                raise DatasetError(f"{pred_path} is {pred.shape[1]}x{pred.shape[0]} but the ground truth "
                                   f"{gt_path} is {gt.shape[1]}x{gt.shape[0]}; rerun the parse stage for {src}")
            kp = label_sets[src].num_classes
            if int(pred.max(initial=0)) >= kp:
                raise DatasetError(f"{pred_path}: class {int(pred.max())} outside the {label_sets[src].name} "
                                   f"label set; rerun the parse stage for {src}")
            conf[src] += np.bincount(gt.reshape(-1).astype(np.int64) * kp + pred.reshape(-1),
                                     minlength=k_gt * kp).reshape(k_gt, kp)
            pred_fg = pred != 0
            fg_pred[src] += int(pred_fg.sum())
            union = int((gt_fg_mask | pred_fg).sum())
            inter = int((gt_fg_mask & pred_fg).sum())
            per_image[src].append(inter / union if union else 1.0)

    present = [c for c in range(k_gt) if conf[next(iter(indexes))][c].sum() > 0]
    rows = []
    for src in indexes:
        cm = conf[src]
        ls = label_sets[src]
        fg_gt_row = cm[1:].sum()                      # ground-truth foreground pixels
        inter = int(cm[1:, 1:].sum())
        union = int(fg_gt_row + cm[0, 1:].sum())
        pred_fg_total = int(cm[:, 1:].sum())
        out: Dict[str, Any] = {
            "source": src, "label_set": ls.name, "images": len(per_image[src]),
            "silhouette_iou": inter / union if union else 1.0,
            "silhouette_iou_mean": float(np.mean(per_image[src])),
            "silhouette_iou_p05": float(np.percentile(per_image[src], 5)),
            "silhouette_precision": inter / pred_fg_total if pred_fg_total else float("nan"),
            "silhouette_recall": inter / int(fg_gt_row) if fg_gt_row else float("nan"),
            "fg_fraction": fg_pred[src] / pixels, "gt_fg_fraction": gt_fg / pixels,
        }
        if ls.name == LIP.name:
            diag = np.diag(cm).astype(np.float64)
            ious = diag / (cm.sum(1) + cm.sum(0) - diag).clip(min=1)
            out.update(miou=float(ious[present].mean()), miou_classes=len(present),
                       pixel_accuracy=float(diag.sum() / cm.sum()))
            out.update({f"iou_{LIP.labels[c]}": float(ious[c]) for c in present})
        else:
            out.update(miou=float("nan"), miou_classes=0, pixel_accuracy=float("nan"))
            out.update({f"iou_{LIP.labels[c]}": float("nan") for c in present})
        rows.append(out)
    cols = list(QUALITY_COLUMNS) + [f"iou_{LIP.labels[c]}" for c in present]
    return pd.DataFrame(rows, columns=cols)


def _pct(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * float(v):.1f}"


def quality_markdown(table: pd.DataFrame, dataset: Optional[str] = None) -> str:
    """The quality table as Markdown (percentages), with a per-class table for LIP sources."""
    title = f"# Mask quality{f' — {dataset}' if dataset else ''}\n\n"
    n = int(table["images"].iloc[0]) if len(table) else 0
    lines = [title, f"Scored against the ground-truth parsing on {n} images. Values in %. "
             "Silhouette = every non-background class; mIoU over the LIP classes present in the ground "
             "truth (background included), only for sources with LIP labels.\n\n",
             "| source | labels | silhouette IoU | per-image IoU (mean / 5th pct) | precision | recall | mIoU | "
             "pixel acc. | foreground (pred / gt) |\n",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|\n"]
    for r in table.itertuples(index=False):
        lines.append(f"| {r.source} | {r.label_set} | {_pct(r.silhouette_iou)} | {_pct(r.silhouette_iou_mean)} / "
                     f"{_pct(r.silhouette_iou_p05)} | {_pct(r.silhouette_precision)} | {_pct(r.silhouette_recall)} | "
                     f"{_pct(r.miou)} | {_pct(r.pixel_accuracy)} | {_pct(r.fg_fraction)} / {_pct(r.gt_fg_fraction)} |\n")
    lip_rows = table[table["label_set"] == LIP.name]
    class_cols = [c for c in table.columns if c.startswith("iou_")]
    if len(lip_rows) and class_cols:
        lines.append("\n## Per-class IoU (LIP sources)\n\n")
        lines.append("| class | " + " | ".join(lip_rows["source"]) + " |\n")
        lines.append("|---|" + "---:|" * len(lip_rows) + "\n")
        for c in class_cols:
            lines.append(f"| {c[4:]} | " + " | ".join(_pct(v) for v in lip_rows[c]) + " |\n")
    return "".join(lines)


def write_quality_report(manifest: Union[str, Path, pd.DataFrame], indexes: Mapping[str, Union[str, Path]],
                         csv_out: Union[str, Path], md_out: Union[str, Path],
                         dataset: Optional[str] = None, splits: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Compute ``mask_quality`` and write it as CSV (fractions) and Markdown (percentages), atomically.

    Returns
    -------
    pd.DataFrame
        The table written to ``csv_out``.
    """
    table = mask_quality(manifest, indexes, splits=splits)
    write_csv_atomic(csv_out, table.round(6))
    write_text_atomic(md_out, quality_markdown(table, dataset))
    for r in table.itertuples(index=False):
        log.info("mask quality %s: silhouette IoU %.3f, mIoU %s", r.source, r.silhouette_iou,
                 "n/a" if np.isnan(r.miou) else f"{r.miou:.3f}")
    return table
