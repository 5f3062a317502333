"""The evaluate stage as library calls: features → every protocol → ``metrics.json`` + ``ranks.npz``."""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Dict, Mapping, Optional, Union

import pandas as pd
import torch

from ..datasets import dataset_splits
from ..errors import CheckpointError, EvaluationError
from ..io import write_json_atomic
from ..manifest import read_manifest
from ..repair import model_repair_hint
from .features import extract_features
from .output import provenance as make_provenance
from .output import metrics_document, write_ranks
from .protocols import ProtocolResult, headline_protocol, required_rows, run_protocols
from .settings import EvalSettings

__all__ = ["evaluate_run", "evaluate_model", "evaluate_checkpoint", "check_run_model"]

log = logging.getLogger(__name__)


def evaluate_run(dataset: str, manifest: pd.DataFrame, features: Any, out_metrics: os.PathLike | str,
                 out_ranks: os.PathLike | str, *, settings: Optional[EvalSettings] = None, feature_rows: Any = None,
                 provenance: Optional[Mapping[str, Any]] = None, max_rank: int = 50,
                 chunk_size: Optional[int] = None, device: Any = "cpu") -> Dict[str, ProtocolResult]:
    """Run every protocol of ``dataset`` on given features and write both output files.

    Parameters
    ----------
    dataset : str
    manifest : pandas.DataFrame
        The dataset manifest (rows addressed by position, as in ``manifest.csv``).
    features : array-like, shape (R, d)
        Aligned with the manifest, or with ``feature_rows``; see ``run_protocols``.
    out_metrics, out_ranks : path-like
        Where ``metrics.json`` and ``ranks.npz`` go.
    settings : EvalSettings, optional
        Default the schema's; ``metrics.json`` records ``settings.metrics_settings()``.
    feature_rows : array-like of int, optional
    provenance : mapping, optional
        From ``maskcl.evaluation.provenance``; ``evaluation_time_s`` is added.
    max_rank : int
        CMC values kept per protocol in ``metrics.json``.
    chunk_size, device
        As in ``run_protocols`` (``device`` resolved, not ``auto``).

    Returns
    -------
    dict of str → ProtocolResult

    Raises
    ------
    EvaluationError
        See ``run_protocols``.
    """
    s = settings if settings is not None else EvalSettings.defaults()
    t0 = time.perf_counter()
    results = run_protocols(dataset, manifest, features, settings=s, feature_rows=feature_rows,
                            chunk_size=chunk_size, device=device)
    prov = dict(provenance) if provenance is not None else make_provenance(device=device)
    prov["evaluation_time_s"] = round(time.perf_counter() - t0, 3)
    # the document first: a refusal leaves neither file written
    doc = metrics_document(results, prov, settings=s.metrics_settings(), max_rank=max_rank)
    write_ranks(out_ranks, results)
    write_json_atomic(out_metrics, doc)
    head = results.get(headline_protocol(dataset))
    if head is not None:
        log.info("%s %s: mAP %.4f rank-1 %.4f", dataset, head.name, head["mAP"] or float("nan"),
                 head["rank1"] or float("nan"))
    return results


def evaluate_model(dataset: str, manifest: pd.DataFrame, model: Callable[[torch.Tensor], torch.Tensor],
                   transform: Callable[[Any], torch.Tensor], out_metrics: os.PathLike | str,
                   out_ranks: os.PathLike | str, *, settings: Optional[EvalSettings] = None,
                   device: Any = "cpu", config: Optional[Mapping[str, Any]] = None, max_rank: int = 50,
                   chunk_size: Optional[int] = None,
                   training: Optional[Mapping[str, Any]] = None) -> Dict[str, ProtocolResult]:
    """Extract features for exactly the rows the protocols need, then ``evaluate_run``.

    ``settings`` (default the schema's) gives ``flip``, ``batch_size`` and ``workers`` of the
    extraction and everything ``evaluate_run`` uses; ``device`` is the resolved device. Features
    are L2-normalised (the official MaskCL evaluator ranks normalised BN features). ``training`` (the
    hardware record of ``model.pt``) becomes ``provenance.training``.
    """
    s = settings if settings is not None else EvalSettings.defaults()
    flip, batch_size = bool(s.flip), int(s.batch_size)
    t0 = time.perf_counter()
    rows = required_rows(dataset, manifest)
    paths = manifest["path"].to_numpy()[rows].tolist()
    feats = extract_features(model, paths, transform, batch_size=batch_size, device=device, flip=flip,
                             normalize=True, num_workers=int(s.workers))
    prov = make_provenance(config, device=device, batch_size=batch_size,
                           extra={"feature_extraction_s": round(time.perf_counter() - t0, 3), "flip": flip,
                                  **({"training": dict(training)} if training is not None else {})})
    return evaluate_run(dataset, manifest, feats, out_metrics, out_ranks, settings=s, feature_rows=rows,
                        provenance=prov, max_rank=max_rank, chunk_size=chunk_size, device=device)


def check_run_model(path: os.PathLike | str, meta: Mapping[str, Any], train: Mapping[str, Any], seed: int) -> None:
    """Refuse a ``model.pt`` that is not the run's model, before anything is computed from it.

    What the file records (``meta`` from ``maskcl.models.export.load_model``) is compared with the
    run it is read for: the method, architecture, input size, pooling and last stride that rebuild
    the network, the seed, then every training setting (``train``, the plan's merged settings,
    against the file's ``settings``: ``maskcl.training.settings.settings_difference``; only settings
    that cannot change the weights are exempt, ``RUN_EXEMPT``, and a setting the file does not
    record, a file of an older version, is a difference). A self-consistent model of
    another run or configuration placed in the run folder would otherwise be evaluated and reach
    the tables under this run's name.

    Raises
    ------
    CheckpointError
        ``<path>: not this run's model: <field> is <recorded> in the file but <expected> in this
        run's config; <the command that retrains the run>``.
    """
    from ..training.settings import TrainSettings, settings_difference

    s = TrainSettings.from_dict(train)
    size = meta.get("input_size")
    fields = (("method", meta.get("method"), s.method, "the experiment's method"),
              ("arch", meta.get("arch"), s.arch, "train.arch"),
              ("input_size", list(size) if isinstance(size, (list, tuple)) else size, [s.height, s.width],
               "train.height, train.width"),
              ("pooling", meta.get("pooling"), s.pooling, "train.pooling"),
              ("last_stride", meta.get("last_stride"), s.last_stride, "train.last_stride"),
              ("seed", meta.get("seed"), int(seed), "the run's seed"))
    for name, recorded, expected, key in fields:
        if recorded != expected:
            raise CheckpointError(f"{path}: not this run's model: {name} is {recorded!r} in the file but {expected!r} "
                                  f"in this run's config ({key}); {model_repair_hint(path)}")
    recorded_settings = meta.get("settings")
    if not isinstance(recorded_settings, Mapping):
        raise CheckpointError(f"{path}: not this run's model: it records no training settings; "
                              f"{model_repair_hint(path)}")
    diff = settings_difference(recorded_settings, train)
    if diff is not None:
        what = diff.describe("the file", "this run's config")
        raise CheckpointError(f"{path}: not this run's model: {what}; {model_repair_hint(path)}")


def evaluate_checkpoint(dataset: str, manifest_path: os.PathLike | str, model_path: os.PathLike | str,
                        out_metrics: os.PathLike | str, out_ranks: os.PathLike | str, *,
                        settings: Union[EvalSettings, Mapping[str, Any]], device: Optional[str] = None,
                        threads: Optional[int] = None, run: Optional[Mapping[str, Any]] = None,
                        train: Optional[Mapping[str, Any]] = None,
                        out_card: Optional[os.PathLike | str] = None) -> Dict[str, ProtocolResult]:
    """The ``evaluate`` rule: load ``model.pt`` (RGB branch), check it is the run's, evaluate, write both files.

    ``settings`` is an ``EvalSettings`` or the config's ``evaluate`` section as the rule passes it
    (a partial one is completed from the schema); a section is recorded verbatim in the provenance
    (``config.evaluate``, its key order included), a record as ``to_dict()``. ``device`` overrides
    ``settings.device`` (the spec resolved by ``select_device``). ``run`` describes the run (dataset,
    experiment, method, masks, seed) and is recorded in the provenance with the model's training
    settings. ``train`` is the run's training settings as the plan merges them: the model must be
    the one ``train`` and ``run['seed']`` describe (:func:`check_run_model`, before any feature is
    computed). The evaluate rule always passes both; a library call without ``train`` evaluates
    the file as it is (a user's own model), which is logged. ``out_card``: where the run's model card
    goes (``maskcl.evaluation.card``), written last.
    """
    from ..devices import select_device
    from ..models.export import load_model

    if train is not None and (run is None or "seed" not in run):
        raise ValueError("evaluate_checkpoint: train settings given without run['seed'] to check the model by")
    if isinstance(settings, EvalSettings):
        record, section = settings, settings.to_dict()
    else:
        record, section = EvalSettings.from_dict(settings), dict(settings)
    # checked before a device is claimed or a model read
    manifest = read_manifest(manifest_path, splits=dataset_splits(dataset), error=EvaluationError)
    if threads:
        torch.set_num_threads(int(threads))
    dev = select_device(device if device is not None else record.device, key="evaluate.device")
    model, transform, meta = load_model(model_path, dev)
    if train is not None:
        check_run_model(model_path, meta, train, run["seed"])
    else:
        log.warning("%s: not checked against a run (no training settings given); evaluated as it is", model_path)
    config = {"run": dict(run or {}), "train": meta.get("settings"), "evaluate": section, "model": str(model_path)}
    results = evaluate_model(dataset, manifest, model, transform, out_metrics, out_ranks, settings=record,
                             device=dev, config=config, training=meta.get("training"))
    if out_card is not None:
        from ..io import read_json
        from .card import write_model_card

        write_model_card(out_card, read_json(out_metrics), meta, manifest, model_file=os.path.basename(model_path),
                         run=run)
    return results
