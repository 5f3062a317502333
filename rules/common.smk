# Shared helpers: the configuration (read, validated), the run plan, wildcard constraints, target and parameter
# functions. Every setting reaches a rule from a record of maskcl.plan (built once, here); a wildcard or a path is
# only ever used to look a record up, never parsed back into a setting.
import os
import re
import sys

from maskcl.config import check_config_files, check_working_config, validate_config
from maskcl.datasets import DATASETS as _DATASET_CLASSES
from maskcl.errors import MaskCLError
from maskcl.layout import (DATASET_INFO, MANIFEST, MASK_INDEX, MASK_QUALITY_CSV, MASK_QUALITY_MD, PRETRAIN,
                           RUN_CARD, RUN_METRICS, RUN_MODEL, RUN_RANKS, RUN_TRAIN_LOG, STATS, TABLES_DIR, fill)
from maskcl.plan import build_plan

# The conda envs install this checkout (`pip: -e "${MASKCL_ROOT}"`, see envs/): point them at it.
os.environ.update({"MASKCL_ROOT": workflow.basedir})


def _shown(path):
    """A config file as the user would name it: relative to the working directory when inside it."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


# The base is the config.yaml beside the Snakefile, also under --directory (where Snakemake would look for a
# config.yaml in the working directory, and without one silently run on --configfile and schema defaults alone).
# Snakemake has read the --configfile files already (a syntax error there ends before this file runs), but its
# loader keeps the last of a key written twice and names no file or line: every file is read here first.
_BASE_CONFIG = os.path.join(workflow.basedir, "config.yaml")
_CLI_CONFIG_FILES = [str(f) for f in workflow.config_settings.configfiles]
try:
    check_config_files([_shown(f) for f in (_BASE_CONFIG, *_CLI_CONFIG_FILES)])
    check_working_config(os.getcwd(), _BASE_CONFIG, _CLI_CONFIG_FILES)
except MaskCLError as _err:
    sys.exit(f"ERROR: {_err}")


configfile: _BASE_CONFIG


# each config file once, in merge order (the base and a --configfile may be one file)
_CONFIG_FILES = {}
for _f in [_BASE_CONFIG, *_CLI_CONFIG_FILES]:
    _CONFIG_FILES.setdefault(os.path.realpath(_f), _shown(_f))
_CONFIG_SOURCE = ", ".join(_CONFIG_FILES.values())
try:
    validate_config(config, source=_CONFIG_SOURCE, command_line=workflow.config_settings.config)
except MaskCLError as _err:
    sys.exit(f"ERROR: {_err}")

try:
    PLAN = build_plan(config)
except MaskCLError as _err:
    sys.exit(f"ERROR: {_CONFIG_SOURCE}: {_err}")

DATASETS = list(PLAN.datasets)
MASKS = config["masks"]
EXPERIMENTS = config["experiments"]
SEEDS = list(PLAN.seeds)


def _one_of(values):
    """A wildcard constraint matching exactly these values (escaped: a value is text, not a pattern)."""
    return "|".join(re.escape(str(v)) for v in values)


wildcard_constraints:
    dataset=_one_of(DATASETS),
    source=_one_of(MASKS["sources"]),
    experiment=_one_of(EXPERIMENTS),
    masks="none|[a-z]+-(silhouette|parts)",
    seed=r"\d+",
    backbone=r"[a-z0-9]+-\d+x\d+",


def manifest_path(dataset):
    return fill(MANIFEST, dataset=dataset)


# ---------------------------------------------------------------- stage 1: download
def dataset_params(wildcards):
    """Everything the download job needs for one dataset, as plain values."""
    data = config["data"]
    src = data["sources"].get(wildcards.dataset, {})
    generated = _DATASET_CLASSES.get(wildcards.dataset).generated
    return {
        "name": wildcards.dataset,
        "source": src.get("source"),
        "sha256": src.get("sha256"),
        "data_root": data["root"],
        "cache": data["cache"],
        "verify_images": data["verify_images"],
        "synthcc": data["synthcc"] if generated else None,
        "folder": PLAN.folders[wildcards.dataset].to_dict() if wildcards.dataset in PLAN.folders else None,
    }


def dataset_inputs(wildcards):
    """A user's labels CSV (data.custom.labels): editing it rebuilds the manifest. A missing one is left to the
    download job, which names it in one line (Snakemake's missing-input report would not)."""
    folder = PLAN.folders.get(wildcards.dataset)
    labels = folder.labels_path() if folder is not None else None
    return {"labels": str(labels)} if labels is not None and labels.is_file() else {}


# ---------------------------------------------------------------- stage 2: masks
def mask_sources(dataset):
    """Configured sources that apply to `dataset` (groundtruth only where it exists)."""
    return list(PLAN.mask_sources[dataset])


if "schp" in MASKS["sources"]:  # imported only then: it loads torch, seconds on every workflow parse
    from maskcl.masks.fetch import checkpoint_path

    SCHP_CHECKPOINT = checkpoint_path(MASKS["schp"])
else:
    SCHP_CHECKPOINT = None
#: masks.schp keys that tell the schp_checkpoint rule where to fetch from, not the parser how to run.
_FETCH_KEYS = ("source", "sha256")


def parse_inputs(wildcards):
    """The manifest, plus (source schp) the checkpoint the schp_checkpoint rule fetches and verifies."""
    out = {"manifest": manifest_path(wildcards.dataset)}
    if wildcards.source == "schp":
        out["checkpoint"] = SCHP_CHECKPOINT
    return out


def mask_source_params(wildcards):
    """Keyword arguments of the mask source (`masks.<source>` in the config)."""
    params = {k: v for k, v in MASKS.get(wildcards.source, {}).items()
              if not (wildcards.source == "schp" and k in _FETCH_KEYS)}
    if wildcards.source == "schp":
        params["checkpoint"] = SCHP_CHECKPOINT
    return {"name": wildcards.source, "params": params}


def schp_checkpoint_params():
    """masks.schp's variant, source and sha256, for the schp_checkpoint job."""
    return {k: MASKS["schp"][k] for k in ("variant", *_FETCH_KEYS)}


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
        out[s] = fill(MASK_INDEX, dataset=wildcards.dataset, source=s)
    return out


def mask_targets(dataset):
    out = [fill(MASK_INDEX, dataset=dataset, source=s) for s in mask_sources(dataset)]
    if dataset in PLAN.ground_truth:
        out.append(fill(MASK_QUALITY_CSV, dataset=dataset))
    return out


# ---------------------------------------------------------------- stages 3-4: train and evaluate
def _run(wildcards):
    """The plan's record of the run a train/evaluate job's wildcards name."""
    return PLAN.run(wildcards.dataset, wildcards.experiment, wildcards.seed, masks=wildcards.masks)


def run_dir(dataset, experiment, seed):
    return PLAN.run(dataset, experiment, seed).run_dir


def train_inputs(wildcards):
    """The manifest, the mask index of masks.train_source (mask methods), the warm-up weights (ssl)."""
    run = _run(wildcards)
    out = {"manifest": manifest_path(run.dataset)}
    if run.mask_index is not None:
        out["masks"] = run.mask_index
    if run.warmup is not None:
        out["pretrained"] = run.warmup.path
    return out


def train_params(wildcards):
    run = _run(wildcards)
    return {
        "settings": run.train_settings(),
        "mask_mode": run.mask_mode or "silhouette",
        "seed": run.seed,
        "state_dir": run.state_dir,
    }


def train_gpus(wildcards):
    """GPUs of one training job: train.world_size (torchrun DDP ranks), none on the CPU."""
    s = _run(wildcards).settings
    return 0 if s["device"] == "cpu" else int(s["world_size"])


def pretrain_gpus(wildcards):
    return 0 if config["train"].get("device", "auto") == "cpu" else 1


def train_runtime(wildcards):
    """Minutes: the official 60x400 schedule on one GPU takes hours; a generous default."""
    return 24 * 60


def pretrain_params(wildcards):
    return PLAN.warmup(wildcards.dataset, wildcards.backbone).params()


def evaluate_params(wildcards):
    """The evaluate section, the run's identity and its training settings (model.pt must record them)."""
    run = _run(wildcards)
    return {"settings": dict(config["evaluate"]), "run": run.identity(), "train": run.train_settings()}


def evaluate_gpus(wildcards):
    return 0 if config["evaluate"]["device"] == "cpu" else 1


def run_targets(dataset):
    return [r.file("metrics.json") for r in PLAN.all_runs() if r.dataset == dataset]


# ---------------------------------------------------------------- stage 5: tables (inputs)
def all_metrics():
    return [r.file("metrics.json") for r in PLAN.all_runs()]


def all_ranks():
    return [r.file("ranks.npz") for r in PLAN.all_runs()]


def all_train_logs():
    return [r.file("train_log.csv") for r in PLAN.all_runs()]


def manifests_by_dataset():
    """Dataset → manifest (the tables stage is told which is which, never reads it off a path)."""
    return {d: manifest_path(d) for d in DATASETS}


def all_manifests():
    return list(manifests_by_dataset().values())


def all_dataset_infos():
    return [fill(DATASET_INFO, dataset=d) for d in DATASETS]


def mask_indexes_by_source():
    """[dataset, source, index path] of every mask index (a list: params stay plain data)."""
    return [[d, s, fill(MASK_INDEX, dataset=d, source=s)] for d in DATASETS for s in mask_sources(d)]


def all_mask_indexes():
    return [path for _, _, path in mask_indexes_by_source()]


def experiment_settings():
    """What the tables need to know about each experiment: method, masks (source, mode), train overrides,
    and per dataset its runs' merged training settings (each model's recorded ones must equal them)."""
    runs = {e: {d: PLAN.run(d, e, PLAN.seeds[0]).train_settings() for d in PLAN.datasets} for e in PLAN.experiments}
    return {e: {**x.tables_settings(), "settings": runs[e]} for e, x in PLAN.experiments.items()}


def final_targets():
    """Default target: the tables (which need every run's metrics), plus each dataset's masks."""
    out = [f"{TABLES_DIR}/results.md"]
    for d in DATASETS:
        out += mask_targets(d)
    return out
