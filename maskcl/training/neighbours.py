"""Sparse cluster-neighbour structure (MaskCL's "higher level" of hierarchical clustering).

For every class centroid, its k neighbour classes and their weights, found by a chunked top-k search,
never a dense C×C matrix (early epochs at DeepChange scale have tens of thousands of clusters).

Two definitions (``train.neighbour_weights``):

- ``official`` (default), what the official code computes (SiCL ``CMC.py`` lines 381-387 and 395-397,
  ``cosinematrix``): the Gram matrix of the *unnormalised* centroids divided by one scalar, Σ_k ‖A_k‖²
  (``norm.t() @ norm`` of a C×1 norm vector is 1×1), so w_ij = ⟨A_i, A_j⟩ / Σ_k ‖A_k‖² ≈ cos_ij / C. Each
  row is sorted by that value (by dot product), the class itself included, and the loss reads positions
  1..k of the sorted row (``hm.py`` line 106, ``feature_sort[:, i + 1]``): position 0 is dropped whatever
  it holds, so a centroid of a larger norm can push the class's own index into its neighbour list.
- ``cosine``, what the paper describes: true cosine similarities, the k most similar *other* classes.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

__all__ = ["NEIGHBOUR_WEIGHTS", "centroid_neighbours", "curriculum_k"]

#: Values of ``train.neighbour_weights``.
NEIGHBOUR_WEIGHTS = ("official", "cosine")


def curriculum_k(allknn: int, epoch: int, epochs: int) -> int:
    """Neighbours used at ``epoch`` (0-based): ``int((allknn / epochs) * epoch)`` (``CMC.py`` line 399).

    Computed in floating point as the official code does: it equals ⌊allknn·epoch/epochs⌋ for every
    schedule of 6, 12, 24, 30, 48, 50, 60 or 120 epochs, and falls one short at a few others
    (allknn 2, 98 epochs, epoch 49 gives 0).
    """
    if epochs <= 0:
        return 0
    return int((allknn / epochs) * epoch)


def _top_sorted(sims: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The k largest values of each row, descending, equal values in increasing column order."""
    vals, idx = torch.topk(sims, k, dim=1, largest=True, sorted=True)
    order = torch.argsort(idx, dim=1, stable=True)
    idx, vals = torch.gather(idx, 1, order), torch.gather(vals, 1, order)
    final = torch.argsort(-vals, dim=1, stable=True)
    return torch.gather(idx, 1, final), torch.gather(vals, 1, final)


@torch.no_grad()
def centroid_neighbours(centroids: torch.Tensor, k: int, weights: str = "official",
                        chunk: int = 4096) -> Tuple[torch.Tensor, torch.Tensor]:
    """The k neighbour classes of each centroid and their weights.

    Parameters
    ----------
    centroids : C×D class means (not normalised: the official weights depend on their norms).
    k : neighbours per class (clamped to C−1).
    weights : ``official`` or ``cosine`` (module docstring).

    Returns
    -------
    (indices C×k int64, weights C×k float32), in the order the loss reads them; equal weights are
    ordered by the lower class index.
    """
    if weights not in NEIGHBOUR_WEIGHTS:
        raise ValueError(f"train.neighbour_weights must be one of {', '.join(NEIGHBOUR_WEIGHTS)}, got {weights!r}")
    c = centroids.shape[0]
    k = min(k, c - 1)
    if k <= 0:
        empty = torch.zeros(c, 0, dtype=torch.long, device=centroids.device)
        return empty, torch.zeros(c, 0, dtype=torch.float32, device=centroids.device)
    z = centroids.float()
    if weights == "cosine":
        z = F.normalize(z, dim=1)
        scale = 1.0
    else:
        scale = float(z.pow(2).sum())  # Σ_k ‖A_k‖²: the official divisor, one scalar for the whole matrix
    idx_out = torch.empty(c, k, dtype=torch.long, device=z.device)
    sim_out = torch.empty(c, k, dtype=z.dtype, device=z.device)
    for start in range(0, c, chunk):
        stop = min(start + chunk, c)
        sims = z[start:stop] @ z.t()  # chunk×C
        if weights == "cosine":
            rows = torch.arange(stop - start, device=z.device)
            sims[rows, rows + start] = float("-inf")  # the k most similar *other* classes
            idx, vals = _top_sorted(sims, k)
        else:
            idx, vals = _top_sorted(sims / scale, k + 1)  # the whole row sorted, self included
            idx, vals = idx[:, 1:], vals[:, 1:]           # the loss reads positions 1..k
        idx_out[start:stop] = idx
        sim_out[start:stop] = vals
    return idx_out, sim_out
