"""Query × gallery distances, computed in fixed row blocks so that any chunking gives the same bits.

``euclidean`` is the squared Euclidean distance ‖q − g‖² (what the official MaskCL evaluator ranks
by); ``cosine`` is 1 − cos(q, g). On L2-normalised features ‖q − g‖² = 2 − 2·cos(q, g), so both
metrics rank every gallery identically (up to floating-point rounding of exact ties).

Every distance row is computed by one matrix product over a block of ``ROW_BLOCK`` query rows whose
start is a multiple of ``ROW_BLOCK``. A chunk of any size (a multiple of ``ROW_BLOCK``) therefore
issues exactly the same products as the full matrix does, and ``evaluate_features`` with any
``chunk_size`` reproduces ``evaluate(pairwise_distance(...))`` bit for bit.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional, Tuple

import numpy as np
import torch

from ..errors import EvaluationError

__all__ = ["METRICS", "ROW_BLOCK", "as_tensor", "l2_normalize", "pairwise_distance", "distance_chunks",
           "DistanceComputer", "default_chunk_rows"]

METRICS: Tuple[str, ...] = ("euclidean", "cosine")
#: Query rows per matrix product; chunk sizes are rounded up to a multiple of it.
ROW_BLOCK = 64
#: Default budget of one distance chunk, in matrix elements (2**25 float32 = 128 MiB).
CHUNK_ELEMENTS = 1 << 25


def as_tensor(name: str, x: Any) -> torch.Tensor:
    """A 2-D float32/float64 tensor view of features (``name`` goes into the one-line error)."""
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(np.asarray(x)))
    if t.ndim != 2:
        raise EvaluationError(f"{name} must be 2-D (items × feature dim), got shape {tuple(t.shape)}")
    if t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    return t


def l2_normalize(x: Any, eps: float = 1e-12) -> Any:
    """Rows divided by their L2 norm (torch in → torch out, otherwise numpy)."""
    if isinstance(x, torch.Tensor):
        return torch.nn.functional.normalize(x, p=2, dim=1, eps=eps)
    t = torch.nn.functional.normalize(as_tensor("features", x), p=2, dim=1, eps=eps)
    return t.numpy()


class DistanceComputer:
    """Prepared gallery side of a query × gallery distance (norms / normalised copies, on ``device``).

    Parameters
    ----------
    qf : array-like, shape (Q, d)
    gf : array-like, shape (G, d)
    metric : {"euclidean", "cosine"}
    device : str or torch.device
    """

    def __init__(self, qf: Any, gf: Any, metric: str = "euclidean", device: Any = "cpu") -> None:
        if metric not in METRICS:
            raise EvaluationError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
        q, g = as_tensor("query features", qf), as_tensor("gallery features", gf)
        if q.shape[1] != g.shape[1]:
            raise EvaluationError(f"query features have dim {q.shape[1]} but gallery features {g.shape[1]}")
        dtype = torch.float64 if torch.float64 in (q.dtype, g.dtype) else torch.float32
        self.metric = metric
        self.device = torch.device(device)
        self.num_query, self.num_gallery = q.shape[0], g.shape[0]
        with torch.inference_mode():
            q = q.to(dtype)
            g = g.to(device=self.device, dtype=dtype)
            if metric == "cosine":
                q = torch.nn.functional.normalize(q, dim=1)
                g = torch.nn.functional.normalize(g, dim=1)
                self._qsq = self._gsq = None
            else:
                self._qsq = (q * q).sum(1)
                self._gsq = (g * g).sum(1)
            self._q = q
            self._gt = g.t()
        self.dtype = np.float64 if dtype == torch.float64 else np.float32

    def rows(self, start: int, stop: int, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Distance rows ``start:stop`` (``start`` must be a multiple of ``ROW_BLOCK``)."""
        if start % ROW_BLOCK:
            raise ValueError(f"start row {start} is not a multiple of ROW_BLOCK={ROW_BLOCK}")
        stop = min(stop, self.num_query)
        if out is None:
            out = np.empty((max(stop - start, 0), self.num_gallery), self.dtype)
        with torch.inference_mode():
            for r in range(start, stop, ROW_BLOCK):
                r1 = min(r + ROW_BLOCK, stop)
                # a block always spans the full aligned ROW_BLOCK rows (except at the end of the
                # query set), so its product is the same whatever the chunking
                full = min(r + ROW_BLOCK, self.num_query)
                qb = self._q[r:full].to(self.device)
                if self.metric == "cosine":
                    d = torch.mm(qb, self._gt).neg_().add_(1.0)
                else:
                    d = torch.addmm(self._gsq.unsqueeze(0), qb, self._gt, beta=1.0, alpha=-2.0)
                    d.add_(self._qsq[r:full].to(self.device).unsqueeze(1)).clamp_(min=0.0)
                out[r - start:r1 - start] = d[: r1 - r].cpu().numpy()
        return out


def default_chunk_rows(num_gallery: int) -> int:
    rows = max(1, CHUNK_ELEMENTS // max(num_gallery, 1))
    return max(ROW_BLOCK, rows // ROW_BLOCK * ROW_BLOCK)


def distance_chunks(qf: Any, gf: Any, *, metric: str = "euclidean", chunk_size: Optional[int] = None,
                    device: Any = "cpu") -> Iterator[Tuple[int, np.ndarray]]:
    """Yield ``(row0, block)`` distance blocks over the queries (see ``evaluate_chunks``).

    ``chunk_size`` is rounded up to a multiple of ``ROW_BLOCK``; the default keeps one block
    near 128 MiB of float32.
    """
    comp = DistanceComputer(qf, gf, metric=metric, device=device)
    if chunk_size is None:
        rows = default_chunk_rows(comp.num_gallery)
    else:
        if int(chunk_size) < 1:
            raise EvaluationError(f"chunk_size must be >= 1, got {chunk_size}")
        rows = -(-int(chunk_size) // ROW_BLOCK) * ROW_BLOCK
    return _iter_rows(comp, rows)


def _iter_rows(comp: DistanceComputer, rows: int) -> Iterator[Tuple[int, np.ndarray]]:
    # a fresh array per block: a consumer may keep the blocks it was given
    for r in range(0, comp.num_query, rows):
        yield r, comp.rows(r, r + rows)


def pairwise_distance(qf: Any, gf: Any, metric: str = "euclidean", *, device: Any = "cpu") -> np.ndarray:
    """Dense query × gallery distance matrix.

    Parameters
    ----------
    qf : array-like, shape (Q, d)
    gf : array-like, shape (G, d)
    metric : {"euclidean", "cosine"}
        ``euclidean``: squared Euclidean ‖q − g‖² (clamped at 0); ``cosine``: 1 − cos(q, g).
    device : str or torch.device
        Where the products run; the result is a CPU numpy array.

    Returns
    -------
    np.ndarray, shape (Q, G)
        float64 if either input is float64, else float32.

    Raises
    ------
    EvaluationError
        Feature dims differ, inputs are not 2-D, or the metric is unknown.
    """
    comp = DistanceComputer(qf, gf, metric=metric, device=device)
    return comp.rows(0, comp.num_query)
