"""Exact k-nearest-neighbour search with deterministic ordering.

The k-reciprocal Jaccard distance only ever looks at the first ~k1 neighbours of every point, so the
N x N distance matrix is never materialised: faiss (or a chunked torch fallback) returns the
candidates, and a cheap re-sort makes the order reproducible. Ties are broken by
``(squared distance, not-self, index)``, so a point always comes first in its own list and exact
duplicates are ordered by index whichever backend ran. That matters because the Jaccard algorithm
assumes ``neighbours[i, 0] == i`` (query expansion averages rows ``neighbours[i, :k2]``).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import numpy as np

from ..errors import ConfigError, MaskCLError

__all__ = ["KNNResult", "knn_search", "as_feature_array", "KNN_BACKENDS"]

logger = logging.getLogger(__name__)

KNN_BACKENDS = ("auto", "faiss", "torch")

# Extra candidates fetched beyond ``k`` so that ties straddling the k-th place (and a point's own
# entry among exact duplicates) are resolved by our tie-break rule, not by the heap order of
# whichever backend ran; rows whose tie outruns the margin are re-ranked against all N points.
_TIE_MARGIN = 8

# Upper bound on the float32 distance block of the torch fallback (rows x N x 4 bytes).
_TORCH_BLOCK_BYTES = 256 * 2**20


@dataclass(frozen=True)
class KNNResult:
    """The ``k`` nearest neighbours of every row, nearest first.

    Attributes
    ----------
    indices : np.ndarray, shape (N, k), int64
        ``indices[i, 0] == i`` always; ties are ordered by (distance, not-self, index).
    sq_distances : np.ndarray, shape (N, k), float32
        Squared Euclidean distances, clipped at 0; the self entry is exactly 0.
    backend : str
        What ran: ``faiss-cpu``, ``faiss-gpu``, ``torch-cpu`` or ``torch-cuda``.
    """

    indices: np.ndarray
    sq_distances: np.ndarray
    backend: str

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])


def as_feature_array(features: Any) -> np.ndarray:
    """Return ``features`` as a C-contiguous float32 (N, d) array (no copy when already one).

    Raises
    ------
    MaskCLError
        If the input is not a finite, non-empty 2-D array.
    """
    torch = sys.modules.get("torch")  # a tensor implies torch is imported; never import it here
    if torch is not None and isinstance(features, torch.Tensor):
        features = features.detach().to("cpu", torch.float32).numpy()
    x = np.ascontiguousarray(np.asarray(features), dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise MaskCLError(f"clustering features must be a non-empty 2-D array (N, d); got shape "
                          f"{x.shape}; pass one feature row per training image")
    if not np.isfinite(x).all():
        raise MaskCLError("clustering features contain NaN or inf; check the feature extractor "
                          "(a diverged model or an empty memory row) before clustering")
    return x


def _faiss_module() -> Optional[Any]:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return None
    return faiss


def _faiss_has_gpu(faiss: Any) -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _resolve(backend: str, device: Optional[str]) -> Tuple[str, str]:
    """Pick (library, device kind) from the arguments; never falls back silently."""
    if backend not in KNN_BACKENDS:
        raise ConfigError(f"unknown kNN backend {backend!r}; use one of {', '.join(KNN_BACKENDS)}")
    import torch

    if device is None:
        on_gpu = bool(torch.cuda.is_available())
    elif device == "cpu":
        on_gpu = False
    elif str(device).startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"kNN device {device!r} requested but torch sees no CUDA device; "
                              "use device='cpu' or leave it unset")
        on_gpu = True
    else:
        raise ConfigError(f"unknown kNN device {device!r}; use 'cpu', 'cuda', 'cuda:N' or None")
    faiss = _faiss_module()
    if backend == "faiss":
        if faiss is None:
            raise ConfigError("kNN backend 'faiss' requested but faiss is not installed; "
                              "pip install faiss-cpu (or faiss-gpu), or use backend='torch'")
        if on_gpu and device is not None and not _faiss_has_gpu(faiss):
            raise ConfigError(f"kNN backend 'faiss' on device {device!r} needs a GPU build of "
                              "faiss; install faiss-gpu, or use backend='torch' for GPU search")
        return "faiss", "gpu" if (on_gpu and _faiss_has_gpu(faiss)) else "cpu"
    if backend == "torch":
        return "torch", "gpu" if on_gpu else "cpu"
    # auto: the fastest exact search available on this machine.
    if on_gpu:
        if faiss is not None and _faiss_has_gpu(faiss):
            return "faiss", "gpu"
        return "torch", "gpu"
    return ("faiss", "cpu") if faiss is not None else ("torch", "cpu")


def _gpu_ordinal(device: Optional[str]) -> int:
    if device is not None and ":" in str(device):
        return int(str(device).split(":", 1)[1])
    return 0


def _search_faiss(x: np.ndarray, m: int, on_gpu: bool, device: Optional[str]
                  ) -> Tuple[np.ndarray, np.ndarray]:
    import faiss

    if on_gpu:
        res = faiss.StandardGpuResources()
        cfg = faiss.GpuIndexFlatConfig()
        cfg.device = _gpu_ordinal(device)
        index = faiss.GpuIndexFlatL2(res, x.shape[1], cfg)
        index.add(x)
        dist, idx = index.search(x, m)
    else:
        # faiss.knn searches the array in place (no index copy of the N x d features).
        dist, idx = faiss.knn(x, x, m, metric=faiss.METRIC_L2)
    return np.asarray(dist, dtype=np.float32), np.asarray(idx, dtype=np.int64)


def _search_torch(x: np.ndarray, m: int, on_gpu: bool, device: Optional[str]
                  ) -> Tuple[np.ndarray, np.ndarray]:
    import torch

    dev = torch.device(device if (on_gpu and device is not None) else ("cuda" if on_gpu else "cpu"))
    xt = torch.from_numpy(x).to(dev)
    sq_norms = (xt * xt).sum(1)
    n = x.shape[0]
    rows = max(1, min(n, _TORCH_BLOCK_BYTES // (4 * n)))
    dist = np.empty((n, m), dtype=np.float32)
    idx = np.empty((n, m), dtype=np.int64)
    with torch.no_grad():
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            # ||q||^2 + ||b||^2 - 2 q.b, the same expansion faiss uses.
            block = torch.addmm(sq_norms[None, :], xt[start:stop], xt.T, beta=1.0, alpha=-2.0)
            block += sq_norms[start:stop, None]
            val, ind = torch.topk(block, m, dim=1, largest=False, sorted=True)
            dist[start:stop] = val.cpu().numpy()
            idx[start:stop] = ind.cpu().numpy()
    return dist, idx


def _canonical_order(dist: np.ndarray, idx: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Clip at 0, force self to distance 0, and sort each row by (distance, not-self, index)."""
    n, m = idx.shape
    rows = np.arange(n, dtype=np.int64)[:, None]
    dist = np.maximum(dist, 0.0)
    is_self = idx == rows
    dist[is_self] = 0.0
    missing = ~is_self.any(axis=1)
    if missing.any():  # more exact duplicates than candidates: the point itself was cut
        idx[missing, m - 1] = rows[missing, 0]
        dist[missing, m - 1] = 0.0
        is_self[missing, m - 1] = True
    order = np.lexsort((idx, ~is_self, dist), axis=-1)
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(dist, order, axis=1)


def _exact_rows(x: np.ndarray, rows: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """The first k of all N points for a few rows, by (distance, not-self, index)."""
    n = x.shape[0]
    sq = np.einsum("ij,ij->i", x, x)
    out_i = np.empty((rows.size, k), dtype=np.int64)
    out_d = np.empty((rows.size, k), dtype=np.float32)
    step = max(1, _TORCH_BLOCK_BYTES // (4 * n))
    everyone = np.arange(n, dtype=np.int64)
    for s in range(0, rows.size, step):
        r = rows[s:s + step]
        d = sq[None, :] + sq[r, None] - 2.0 * (x[r] @ x.T)  # the expansion the backends use
        np.maximum(d, 0.0, out=d)
        not_self = everyone[None, :] != r[:, None]
        d[~not_self] = 0.0
        order = np.lexsort((np.broadcast_to(everyone, d.shape), not_self, d), axis=-1)[:, :k]
        out_i[s:s + step] = order
        out_d[s:s + step] = np.take_along_axis(d, order, axis=1)
    return out_i, out_d


def knn_search(features: Any, k: int, *, backend: str = "auto",
               device: Optional[str] = None) -> KNNResult:
    """Exact k nearest neighbours of every row among all rows (itself included).

    Parameters
    ----------
    features : array-like or torch.Tensor, shape (N, d)
        Feature rows (converted to float32).
    k : int
        Neighbours per row, self included; clipped to N.
    backend : {"auto", "faiss", "torch"}
        ``auto`` picks faiss-gpu, else torch on the GPU, when a CUDA device is visible, and
        faiss-cpu, else torch on the CPU, otherwise. Naming a backend never falls back.
    device : str, optional
        ``None`` (a GPU when torch sees one), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Returns
    -------
    KNNResult
        Indices and squared distances, shape (N, min(k, N)), nearest first, self at rank 0.

    Raises
    ------
    ConfigError
        Unknown backend or device, or a backend that is not installed.
    MaskCLError
        Features that are not a finite 2-D array.
    """
    x = as_feature_array(features)
    n = x.shape[0]
    if k < 1:
        raise ConfigError(f"kNN k must be >= 1; got {k}")
    k = min(int(k), n)
    m = min(n, k + _TIE_MARGIN)
    lib, kind = _resolve(backend, device)
    if lib == "faiss":
        dist, idx = _search_faiss(x, m, kind == "gpu", device)
    else:
        dist, idx = _search_torch(x, m, kind == "gpu", device)
    name = {("faiss", "gpu"): "faiss-gpu", ("faiss", "cpu"): "faiss-cpu",
            ("torch", "gpu"): "torch-cuda", ("torch", "cpu"): "torch-cpu"}[(lib, kind)]
    logger.info("kNN search: backend %s (requested %s), exact L2, N=%d, d=%d, k=%d", name, backend,
                n, x.shape[1], k)
    idx, dist = _canonical_order(dist, idx)
    if m < n:
        # A tie at the k-th place that runs to the last candidate may continue beyond it, where
        # the backend chose among equals arbitrarily: settle those rows against all N points.
        open_ties = np.flatnonzero(dist[:, m - 1] <= dist[:, k - 1])
        if open_ties.size:
            logger.info("kNN: %d rows with ties beyond %d candidates re-ranked exactly",
                        open_ties.size, m)
            idx[open_ties, :k], dist[open_ties, :k] = _exact_rows(x, open_ties, k)
    return KNNResult(indices=np.ascontiguousarray(idx[:, :k]),
                     sq_distances=np.ascontiguousarray(dist[:, :k]), backend=name)
