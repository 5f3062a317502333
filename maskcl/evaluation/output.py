"""What an evaluated model leaves behind: ``metrics.json``, ``ranks.npz`` and their provenance.

Both files are written atomically (temporary name, then rename), so a killed job never leaves a
file that looks complete.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from ..hardware import cpu_model
from ..io import atomic_path, write_json_atomic
from ..errors import EvaluationError
from .protocols import ProtocolResult, headline_protocol

__all__ = ["METRICS_FORMAT", "provenance", "metrics_document", "write_metrics_json", "write_ranks"]

#: Version tag of the metrics.json layout (bump when keys change meaning).
METRICS_FORMAT = "maskcl-metrics/1"


def _git(args: Sequence[str], cwd: Path) -> Optional[str]:
    try:
        res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def provenance(config: Optional[Mapping[str, Any]] = None, *, device: Any = None, batch_size: Optional[int] = None,
               run_time_s: Optional[float] = None, repo: Optional[os.PathLike | str] = None,
               extra: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Facts that make a metrics file traceable: code version, settings, hardware, time.

    Parameters
    ----------
    config : mapping, optional
        The settings the job ran with (copied verbatim; must be JSON-serialisable).
    device : str or torch.device, optional
        Device the features were computed on.
    batch_size : int, optional
    run_time_s : float, optional
        Wall time of the job so far.
    repo : path-like, optional
        Git work tree to describe; default the one holding this package (None where there is none).
    extra : mapping, optional
        More keys to add (e.g. checkpoint path).

    Returns
    -------
    dict
        ``git_commit`` (None outside a git checkout), ``git_dirty``, versions, ``device``,
        ``gpu_count``, ``gpu_names``, ``cpu_model``, CPU and thread counts, ``batch_size``, ``run_time_s``,
        ``timestamp_utc``, ``config``.
    """
    import torch

    import maskcl

    where = Path(repo) if repo is not None else Path(__file__).resolve().parent
    commit = _git(["rev-parse", "HEAD"], where)
    status = _git(["status", "--porcelain", "--untracked-files=no"], where) if commit else None
    gpu_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    out: Dict[str, Any] = {
        "git_commit": commit,
        "git_dirty": (bool(status) if status is not None else None),
        "maskcl_version": maskcl.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "device": str(device) if device is not None else None,
        "gpu_count": gpu_count,
        "gpu_names": [torch.cuda.get_device_name(i) for i in range(gpu_count)],
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "run_time_s": run_time_s,
        "timestamp_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": dict(config) if config is not None else None,
    }
    if extra:
        out.update(dict(extra))
    return out


def metrics_document(results: Mapping[str, ProtocolResult], provenance: Mapping[str, Any], *,
                     settings: Optional[Mapping[str, Any]] = None, max_rank: int = 50) -> Dict[str, Any]:
    """The ``metrics.json`` content: protocol → metrics, the headline, settings and provenance."""
    if not results:
        raise EvaluationError("no protocol results to write")
    datasets = {r.dataset for r in results.values()}
    if len(datasets) != 1:
        raise EvaluationError(f"results mix datasets {sorted(datasets)}; write one metrics.json per dataset")
    dataset = datasets.pop()
    headline = headline_protocol(dataset)
    protocols = {name: r.summary(max_rank=max_rank) for name, r in results.items()}
    head = protocols.get(headline)
    return {
        "format": METRICS_FORMAT,
        "dataset": dataset,
        "headline_protocol": headline if head is not None else None,
        "headline": ({k: head.get(k) for k in ("mAP", "mINP", "rank1", "rank5", "rank10", "rank20")}
                     if head is not None else None),
        "protocols": protocols,
        "settings": dict(settings) if settings is not None else None,
        "provenance": dict(provenance),
    }


def write_metrics_json(path: os.PathLike | str, results: Mapping[str, ProtocolResult],
                       provenance: Mapping[str, Any], *, settings: Optional[Mapping[str, Any]] = None,
                       max_rank: int = 50) -> Dict[str, Any]:
    """Write ``metrics.json`` atomically and return its content.

    Parameters
    ----------
    path : path-like
    results : mapping of protocol name → ProtocolResult
        From ``run_protocols`` (one dataset).
    provenance : mapping
        From ``provenance()``.
    settings : mapping, optional
        Evaluation settings (metric, re-ranking, seed, ...).
    max_rank : int
        CMC values kept per protocol (rank-1/5/10/20 are always written).

    Returns
    -------
    dict
        The document written.

    Raises
    ------
    EvaluationError
        No results, or results of several datasets.
    """
    doc = metrics_document(results, provenance, settings=settings, max_rank=max_rank)
    write_json_atomic(path, doc)
    return doc


def write_ranks(path: os.PathLike | str, results: Mapping[str, ProtocolResult],
                protocols: Optional[Sequence[str]] = None) -> list[str]:
    """Save per-query top-k gallery lists for retrieval figures (``ranks.npz``), atomically.

    For every multi-shot protocol (or the given ones), arrays named ``<protocol>.<key>``:
    ``query_rows`` (Q,) manifest rows; ``topk_rows`` (Q, k) manifest rows of the first k gallery
    items in ranked order, junk included, -1 past the gallery end; ``topk_flags`` (Q, k) int8
    (1 good, 2 junk, 0 other identity); ``first_match`` (Q,) 0-based position of the first good item
    after junk removal (-1: query skipped); ``ap`` (Q,) per-query AP (NaN: skipped). Also
    ``protocols`` (names saved) and ``headline`` (the dataset's headline protocol).

    Returns
    -------
    list of str
        The protocol names saved, headline first.
    """
    names = list(protocols) if protocols is not None else [n for n, r in results.items() if r.result is not None]
    if not names:
        raise EvaluationError("no multi-shot protocol results to save in ranks.npz")
    dataset = next(iter(results.values())).dataset
    head = headline_protocol(dataset)
    names.sort(key=lambda n: n != head)
    arrays: Dict[str, np.ndarray] = {}
    for n in names:
        if n not in results:
            raise EvaluationError(f"protocol {n!r} was not evaluated; evaluated: {', '.join(results)}")
        r = results[n]
        if r.result is None or r.topk_rows is None:
            raise EvaluationError(f"protocol {n!r} has no single ranked list (single-shot or topk=0)")
        arrays[f"{n}.query_rows"] = r.query_rows.astype(np.int64)
        arrays[f"{n}.topk_rows"] = r.topk_rows.astype(np.int64)
        arrays[f"{n}.topk_flags"] = r.topk_flags.astype(np.int8)
        arrays[f"{n}.first_match"] = r.result.first_match.astype(np.int64)
        arrays[f"{n}.ap"] = r.result.ap.astype(np.float64)
    arrays["protocols"] = np.array(names)
    arrays["headline"] = np.array(head)
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return names
