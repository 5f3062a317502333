"""The train and pretrain stages as library calls (what the workflow adapters invoke)."""

from __future__ import annotations

import logging
from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd

from ..errors import ConfigError, DatasetError
from .methods import METHODS, TrainData
from .settings import TrainSettings

__all__ = ["train_data_from_manifest", "train_stage", "pretrain_stage"]

log = logging.getLogger(__name__)


def train_data_from_manifest(manifest: pd.DataFrame, mask_index: Optional[pd.DataFrame] = None,
                             mask_mode: str = "silhouette", split: str = "train") -> TrainData:
    """The training split in manifest order, with each image's mask path when an index is given."""
    rows = manifest[manifest["split"] == split]
    if rows.empty:
        raise DatasetError(f"the manifest has no {split!r} images; rerun the download stage")
    masks = None
    if mask_index is not None:
        if mask_mode not in ("silhouette", "parts"):
            raise DatasetError(f"mask mode {mask_mode!r} is not silhouette or parts")
        by_rel = dict(zip(mask_index["relpath"], mask_index[mask_mode]))
        missing = [r for r in rows["relpath"] if r not in by_rel]
        if missing:
            raise DatasetError(f"the mask index has no mask for {len(missing)} training image(s), e.g. "
                               f"{missing[0]}; rerun the parse stage")
        masks = [by_rel[r] for r in rows["relpath"]]
    return TrainData(paths=rows["path"].tolist(), pids=rows["pid"].to_numpy(np.int64),
                     camids=rows["camid"].to_numpy(np.int64), clothes=rows["clothes_id"].to_numpy(np.int64),
                     mask_paths=masks)


def train_stage(manifest_path: str, mask_index_path: Optional[str], mask_mode: str, settings: Mapping[str, Any],
                seed: int, out_model: str, out_log: str, state_dir: str, threads: Optional[int] = None,
                progress: bool = True, comm: Any = None) -> None:
    """Train one run (method in ``settings['method']``) and write ``model.pt`` and ``train_log.csv``.

    With ``train.world_size`` W > 1 this process launches W torchrun DDP ranks, each of which calls
    back here with its ``comm`` (``maskcl.training.ddp``), and waits for them.
    """
    from .ddp import check_settings, launch
    from .engine import train

    s = TrainSettings.from_dict(settings)
    method = METHODS.get(s.method)
    manifest = pd.read_csv(manifest_path)
    index = pd.read_csv(mask_index_path) if (method.uses_masks and mask_index_path) else None
    if method.uses_masks and index is None:
        raise DatasetError(f"method {s.method} needs masks: give the mask index of masks.train_source")
    data = train_data_from_manifest(manifest, index, mask_mode)
    check_settings(s)
    if s.world_size > 1 and comm is None:
        launch(dict(manifest_path=manifest_path, mask_index_path=mask_index_path, mask_mode=mask_mode,
                    settings=dict(settings), seed=seed, out_model=out_model, out_log=out_log, state_dir=state_dir),
               s, threads=threads, progress=progress)
        return
    if comm is not None and comm.world_size != s.world_size:
        raise ConfigError(f"config train.world_size is {s.world_size} but this job runs {comm.world_size} processes")
    res = train(s, data, seed=seed, out_model=out_model, out_log=out_log, state_dir=state_dir,
                threads=threads, progress=progress, comm=comm)
    log.info("trained %s for %d epoch(s) in %.1f s%s", s.method, res.epochs_run, res.seconds,
             f" (resumed from epoch {res.resumed_from})" if res.resumed_from is not None else "")


def pretrain_stage(manifest_path: str, settings: Mapping[str, Any], seed: int, out_path: str,
                   threads: Optional[int] = None, progress: bool = True) -> None:
    """Self-supervised warm-up on the training images (no labels) → backbone weights file."""
    from .pretrain import PretrainSettings, pretrain_ssl

    manifest = pd.read_csv(manifest_path)
    paths = manifest.loc[manifest["split"] == "train", "path"].tolist()
    if not paths:
        raise DatasetError(f"{manifest_path}: no training images to pre-train on")
    pretrain_ssl(paths, PretrainSettings.from_dict(dict(settings)), seed=seed, out_path=out_path, threads=threads,
                 progress=progress)
