"""The train and pretrain stages as library calls (what the workflow adapters invoke).

:func:`train_stage` parses and checks the settings once for the whole job. A one-process run
(``world_size`` 1) then trains here (:func:`run_train_job`); a DDP run hands the job to
``maskcl.training.launch`` without reading the data itself, and every rank
(``maskcl.training.rank``) runs :func:`run_train_job` with its own ``comm``.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Optional

from ..datasets import dataset_splits
from ..errors import ConfigError, DatasetError
from ..manifest import read_manifest
from ..masks.index import MASK_MODES, read_mask_index
from .comm import LocalComm
from .data import train_data_from_manifest
from .engine import TrainResult, train
from .launch import launch
from .methods import METHODS
from .settings import TrainSettings, check_settings

__all__ = ["train_stage", "run_train_job", "pretrain_stage"]

log = logging.getLogger(__name__)



def _read_manifest(manifest_path: str, dataset: Optional[str]):
    """The checked manifest (``maskcl.manifest.read_manifest``): split names checked when ``dataset`` is known."""
    return read_manifest(manifest_path, splits=dataset_splits(dataset) if dataset else None, error=DatasetError)


def train_stage(manifest_path: str, mask_index_path: Optional[str], mask_mode: str, settings: Mapping[str, Any],
                seed: int, out_model: str, out_log: str, state_dir: str, threads: Optional[int] = None,
                progress: bool = True, dataset: Optional[str] = None) -> None:
    """Train one run (method in ``settings['method']``) and write ``model.pt`` and ``train_log.csv``.

    The settings are parsed and checked here, once. With ``train.world_size`` W > 1 this process
    launches W torchrun DDP ranks (``maskcl.training.launch``), each of which rebuilds the settings
    from the mapping and calls :func:`run_train_job`, and waits for them. ``dataset`` names the
    manifest's dataset (its split names are checked); the manifest is read and checked by every process.
    """
    s = TrainSettings.from_dict(settings)
    method = METHODS.get(s.method)
    if method.facts.uses_masks and not mask_index_path:
        raise DatasetError(f"method {s.method} needs masks: give the mask index of masks.train_source")
    check_settings(s)
    if s.world_size > 1:
        launch(dict(manifest_path=manifest_path, mask_index_path=mask_index_path, mask_mode=mask_mode,
                    settings=dict(settings), seed=seed, out_model=out_model, out_log=out_log, state_dir=state_dir,
                    dataset=dataset),
               s, threads=threads, progress=progress)
        return
    run_train_job(manifest_path, mask_index_path, mask_mode, s, seed, out_model=out_model, out_log=out_log,
                  state_dir=state_dir, threads=threads, progress=progress, dataset=dataset)


def run_train_job(manifest_path: str, mask_index_path: Optional[str], mask_mode: str, settings: TrainSettings,
                  seed: int, out_model: str, out_log: str, state_dir: str, threads: Optional[int] = None,
                  progress: bool = True, comm: Optional[LocalComm] = None,
                  dataset: Optional[str] = None) -> TrainResult:
    """This process's part of a checked job: read the training split, train, log the summary.

    ``comm`` is the process's place in a DDP job (``maskcl.training.comm.DistComm``); default one
    process. The settings are not checked again (:func:`train_stage` did).
    """
    s = settings
    method = METHODS.get(s.method)
    manifest = _read_manifest(manifest_path, dataset)
    index = None
    if method.facts.uses_masks and mask_index_path:
        index = read_mask_index(mask_index_path, ("relpath", mask_mode) if mask_mode in MASK_MODES else ("relpath",))
    if method.facts.uses_masks and index is None:
        raise DatasetError(f"method {s.method} needs masks: give the mask index of masks.train_source")
    data = train_data_from_manifest(manifest, index, mask_mode, index_path=mask_index_path)
    if comm is not None and comm.world_size != s.world_size:
        raise ConfigError(f"config train.world_size is {s.world_size} but this job runs {comm.world_size} processes")
    res = train(s, data, seed=seed, out_model=out_model, out_log=out_log, state_dir=state_dir,
                threads=threads, progress=progress, comm=comm)
    log.info("trained %s for %d epoch(s) in %.1f s%s", s.method, res.epochs_run, res.seconds,
             f" (resumed from epoch {res.resumed_from})" if res.resumed_from is not None else "")
    return res


def pretrain_stage(manifest_path: str, settings: Mapping[str, Any], seed: int, out_path: str,
                   threads: Optional[int] = None, progress: bool = True, dataset: Optional[str] = None) -> None:
    """Self-supervised warm-up on the training images (no labels) → backbone weights file."""
    from .pretrain import PretrainSettings, pretrain_ssl

    s = PretrainSettings.from_dict(dict(settings))   # a config mistake first, before any file is read
    manifest = _read_manifest(manifest_path, dataset)
    paths = manifest.loc[manifest["split"] == "train", "path"].tolist()
    if not paths:
        raise DatasetError(f"{manifest_path}: no training images to pre-train on")
    pretrain_ssl(paths, s, seed=seed, out_path=out_path, threads=threads, progress=progress)
