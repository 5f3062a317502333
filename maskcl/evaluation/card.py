"""A model card per run: ``model_card.md`` beside ``model.pt``, so a run folder can be shared as it is.

The first table has the columns of OpenUnReID's model zoo (method, backbone, pretraining, dataset,
mAP and rank-k, training time, hardware); then every protocol, the recipe (the settings that define the
method's schedule, then all of them), the data and how to use the model. Everything comes from the
files of the run: ``model.pt``'s metadata, ``metrics.json`` and the dataset's manifest.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping

import pandas as pd

from ..hardware import describe_hardware
from ..io import write_text_atomic

__all__ = ["RECIPE_KEYS", "model_card", "write_model_card"]

#: The settings shown first: what a reader compares between two recipes.
RECIPE_KEYS = ("arch", "pretrained", "height", "width", "epochs", "iters", "batch_size", "num_instances", "lr",
               "weight_decay", "step_size", "eps", "k1", "k2", "temp", "momentum", "amp", "world_size", "bn_groups")


def _pct(x: Any) -> str:
    try:
        return f"{100 * float(x):.1f}"
    except (TypeError, ValueError):
        return "–"


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "unrecorded"
    s = int(round(seconds))
    return f"{s // 3600} h {s % 3600 // 60:02d} min" if s >= 3600 else f"{s // 60} min {s % 60:02d} s"


def _cell(v: Any) -> str:
    return str(v).replace("|", "\\|")


def _splits(manifest: pd.DataFrame) -> List[str]:
    rows = ["| split | images | identities | cameras | clothes |", "|---|---:|---:|---:|---:|"]
    for split, grp in manifest.groupby("split", sort=False):
        rows.append(f"| {split} | {len(grp)} | {grp['pid'].nunique()} | {grp['camid'].nunique()} | "
                    f"{grp['clothes_id'].nunique()} |")
    return rows


def model_card(doc: Mapping[str, Any], meta: Mapping[str, Any], manifest: pd.DataFrame, *, model_file: str = "model.pt",
               run: Mapping[str, Any] | None = None) -> str:
    """The card's Markdown from a metrics document, a ``model.pt``'s metadata and the manifest."""
    import yaml

    from ..datasets import get_dataset
    from ..methods import METHOD_FACTS, get_method, key_owners

    run = dict(run or (doc.get("provenance", {}).get("config", {}).get("run") or {}))
    dataset = str(doc.get("dataset"))
    method = str(meta.get("method"))
    facts = get_method(method) if method in METHOD_FACTS else None
    method_name = facts.display_name if facts else method
    dataset_name = get_dataset(dataset).display_name
    settings: Dict[str, Any] = dict(meta.get("settings") or {})
    training: Dict[str, Any] = dict(meta.get("training") or {})
    hardware = describe_hardware(training)
    head = str(doc.get("headline_protocol"))
    protos: Mapping[str, Mapping[str, Any]] = doc.get("protocols") or {}
    hp = protos.get(head, {})
    h, w = (list(meta.get("input_size") or ["?", "?"]) + ["?", "?"])[:2]
    experiment = run.get("experiment", method)
    lines = [
        f"# {method_name} on {dataset_name} (seed {meta.get('seed')})", "",
        f"Experiment `{experiment}`, masks `{run.get('masks', 'none')}`, seed {meta.get('seed')}: `{model_file}`, "
        f"trained for {meta.get('epochs')} epochs on {meta.get('train_images')} training images; card written by the "
        f"evaluate rule from the run's files.", "",
        "| Method | Backbone | Pretrained | Dataset | Protocol | mAP | R1 | R5 | R10 | Training time | Hardware |",
        "|---|---|---|---|---|---:|---:|---:|---:|---|---|",
        f"| {_cell(method_name)} | {meta.get('arch')} | {_cell(settings.get('pretrained', '?'))} | {_cell(dataset_name)} "
        f"| `{head}` | {_pct(hp.get('mAP'))} | {_pct(hp.get('rank1'))} | {_pct(hp.get('rank5'))} | "
        f"{_pct(hp.get('rank10'))} | {_duration(training.get('train_time_s'))} | {_cell(hardware)} |", "",
        "## Every protocol", "",
        "| protocol | mAP | R1 | R5 | R10 | queries (valid) | gallery | rule |", "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, p in protos.items():
        lines.append(f"| `{name}`{' (headline)' if name == head else ''} | {_pct(p.get('mAP'))} | {_pct(p.get('rank1'))} "
                     f"| {_pct(p.get('rank5'))} | {_pct(p.get('rank10'))} | {p.get('num_queries', '–')} "
                     f"({p.get('num_valid_queries', '–')}) | {p.get('num_gallery', '–')} | "
                     f"{_cell(p.get('description', ''))} |")
    lines += ["", "## Recipe", ""]
    if facts is not None:
        lines += [f"{method_name}: {facts.citation}", ""]
    # the keys every method reads and this method's own; other methods' switches would only mislead
    read = {k: v for k, v in settings.items() if not key_owners(k) or method in key_owners(k)}
    shown = [k for k in RECIPE_KEYS if k in read]
    lines += ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown),
              "| " + " | ".join(_cell(settings[k]) for k in shown) + " |", "",
              "<details><summary>Every training setting this method reads (from the <code>train</code> keys "
              "the model records)</summary>", "", "```yaml", yaml.safe_dump(read, sort_keys=True).rstrip(), "```",
              "", "</details>", "",
              "## Data", "", f"{dataset_name} (`{dataset}`), the manifest the run was trained and evaluated on:", "",
              *_splits(manifest), "",
              "## Training hardware", "", f"{hardware}; training time {_duration(training.get('train_time_s'))} "
              f"(the sum of the epochs' times). Numbers move with the device, the BatchNorm batch and the precision.",
              "", "## Use", "", "```python", "import maskcl", "", f'model = maskcl.load_model("{model_file}")',
              'features = model.embed(["a.jpg", "b.jpg"])  # L2-normalised, '
              f'{meta.get("dim", "D")}-d; images resized to {h}x{w}',
              "```", "",
              f"`maskcl rank {model_file} --query QUERY_DIR --gallery GALLERY_DIR --out ranking/` ranks a folder "
              f"against another; `maskcl export-onnx {model_file} model.onnx` exports it.", ""]
    return "\n".join(lines)


def write_model_card(path: os.PathLike | str, doc: Mapping[str, Any], meta: Mapping[str, Any],
                     manifest: pd.DataFrame, *, model_file: str = "model.pt",
                     run: Mapping[str, Any] | None = None) -> None:
    """Write :func:`model_card` atomically."""
    write_text_atomic(path, model_card(doc, meta, manifest, model_file=model_file, run=run))

