# Shared helpers: config validation, wildcard constraints, target and parameter functions.
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


def final_targets():
    """What `rule all` builds: the last stage available for every configured dataset."""
    return [manifest_path(d) for d in DATASETS]
