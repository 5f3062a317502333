"""The evaluate stage as library calls: features → every protocol → ``metrics.json`` + ``ranks.npz``."""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Dict, Mapping, Optional

import pandas as pd
import torch

from .features import extract_features
from .output import provenance as make_provenance
from .output import write_metrics_json, write_ranks
from .protocols import ProtocolResult, headline_protocol, required_rows, run_protocols

__all__ = ["evaluate_run", "evaluate_model", "evaluate_checkpoint"]

log = logging.getLogger(__name__)


def evaluate_run(dataset: str, manifest: pd.DataFrame, features: Any, out_metrics: os.PathLike | str,
                 out_ranks: os.PathLike | str, *, feature_rows: Any = None,
                 provenance: Optional[Mapping[str, Any]] = None, seed: int = 0, rerank: bool = False,
                 metric: str = "euclidean", rerank_k1: int = 20, rerank_k2: int = 6, rerank_lambda: float = 0.3,
                 single_shot_trials: int = 10, topk: int = 10, max_rank: int = 50,
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
    feature_rows : array-like of int, optional
    provenance : mapping, optional
        From ``maskcl.evaluation.provenance``; ``evaluation_time_s`` is added.
    seed, rerank, metric, rerank_k1, rerank_k2, rerank_lambda, single_shot_trials, topk, chunk_size, device
        As in ``run_protocols``.
    max_rank : int
        CMC values kept per protocol in ``metrics.json``.

    Returns
    -------
    dict of str → ProtocolResult

    Raises
    ------
    EvaluationError
        See ``run_protocols``.
    """
    t0 = time.perf_counter()
    results = run_protocols(dataset, manifest, features, feature_rows=feature_rows, seed=seed, metric=metric,
                            rerank=rerank, rerank_k1=rerank_k1, rerank_k2=rerank_k2, rerank_lambda=rerank_lambda,
                            single_shot_trials=single_shot_trials, topk=topk, chunk_size=chunk_size, device=device)
    settings = {"metric": metric, "rerank": bool(rerank), "rerank_k1": rerank_k1, "rerank_k2": rerank_k2,
                "rerank_lambda": rerank_lambda, "single_shot_trials": single_shot_trials, "seed": seed,
                "topk": topk}
    prov = dict(provenance) if provenance is not None else make_provenance(device=device)
    prov["evaluation_time_s"] = round(time.perf_counter() - t0, 3)
    write_ranks(out_ranks, results)
    write_metrics_json(out_metrics, results, prov, settings=settings, max_rank=max_rank)
    head = results.get(headline_protocol(dataset))
    if head is not None:
        log.info("%s %s: mAP %.4f rank-1 %.4f", dataset, head.name, head["mAP"] or float("nan"),
                 head["rank1"] or float("nan"))
    return results


def evaluate_model(dataset: str, manifest: pd.DataFrame, model: Callable[[torch.Tensor], torch.Tensor],
                   transform: Callable[[Any], torch.Tensor], out_metrics: os.PathLike | str,
                   out_ranks: os.PathLike | str, *, flip: bool = False, batch_size: int = 64,
                   device: Any = "cpu", num_workers: int = 0, config: Optional[Mapping[str, Any]] = None,
                   **kwargs: Any) -> Dict[str, ProtocolResult]:
    """Extract features for exactly the rows the protocols need, then ``evaluate_run``.

    ``kwargs`` go to ``evaluate_run`` (``seed``, ``metric``, ``rerank``, ...). Features are
    L2-normalised (the official MaskCL evaluator ranks normalised BN features).
    """
    t0 = time.perf_counter()
    rows = required_rows(dataset, manifest)
    paths = manifest["path"].to_numpy()[rows].tolist()
    feats = extract_features(model, paths, transform, batch_size=batch_size, device=device, flip=flip,
                             normalize=True, num_workers=num_workers)
    prov = make_provenance(config, device=device, batch_size=batch_size,
                           extra={"feature_extraction_s": round(time.perf_counter() - t0, 3), "flip": flip})
    return evaluate_run(dataset, manifest, feats, out_metrics, out_ranks, feature_rows=rows, provenance=prov,
                        device=device, **kwargs)


def evaluate_checkpoint(dataset: str, manifest_path: os.PathLike | str, model_path: os.PathLike | str,
                        out_metrics: os.PathLike | str, out_ranks: os.PathLike | str, *,
                        settings: Mapping[str, Any], device: str = "auto", threads: Optional[int] = None,
                        run: Optional[Mapping[str, Any]] = None) -> Dict[str, ProtocolResult]:
    """The ``evaluate`` rule: load ``model.pt`` (RGB branch), run every protocol, write both files.

    ``settings`` is the config's ``evaluate`` section (flip, metric, rerank, rerank_k1/k2/lambda,
    single_shot_trials, seed, batch_size, topk, workers); ``run`` describes the run (dataset,
    experiment, masks, seed) and is recorded in the provenance with the model's training settings.
    """
    from ..devices import select_device
    from ..models.export import load_model

    if threads:
        torch.set_num_threads(int(threads))
    dev = select_device(device, key="evaluate.device")
    model, transform, meta = load_model(model_path, dev)
    manifest = pd.read_csv(manifest_path)
    s = dict(settings)
    config = {"run": dict(run or {}), "train": meta.get("settings"), "evaluate": s, "model": str(model_path)}
    return evaluate_model(
        dataset, manifest, model, transform, out_metrics, out_ranks, flip=bool(s.get("flip", False)),
        batch_size=int(s.get("batch_size", 64)), device=dev, num_workers=int(s.get("workers", 0)),
        config=config, seed=int(s.get("seed", 0)), metric=s.get("metric", "euclidean"),
        rerank=bool(s.get("rerank", False)), rerank_k1=int(s.get("rerank_k1", 20)),
        rerank_k2=int(s.get("rerank_k2", 6)), rerank_lambda=float(s.get("rerank_lambda", 0.3)),
        single_shot_trials=int(s.get("single_shot_trials", 10)), topk=int(s.get("topk", 10)))
