"""Sparse cluster-neighbour structure (MaskCL's "higher level" of hierarchical clustering).

For every class centroid, its k most similar other centroids by cosine similarity, found by a
chunked top-k search, never a dense C×C matrix (early epochs at DeepChange scale have tens of
thousands of clusters).
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

__all__ = ["centroid_neighbours", "curriculum_k"]


def curriculum_k(allknn: int, epoch: int, epochs: int) -> int:
    """Neighbours used at ``epoch`` (0-based): floor(allknn·epoch/epochs) (official schedule)."""
    if epochs <= 0:
        return 0
    return int(allknn * epoch // epochs)


@torch.no_grad()
def centroid_neighbours(centroids: torch.Tensor, k: int, chunk: int = 4096) -> Tuple[torch.Tensor, torch.Tensor]:
    """Top-k neighbours of each centroid among the others.

    Parameters
    ----------
    centroids : C×D class means (normalised inside).
    k : neighbours per class (clamped to C−1).

    Returns
    -------
    (indices C×k int64, similarities C×k), most similar first; the class itself is excluded and ties
    are broken by the lower class index.
    """
    c = centroids.shape[0]
    k = min(k, c - 1)
    if k <= 0:
        empty = torch.zeros(c, 0, dtype=torch.long, device=centroids.device)
        return empty, torch.zeros(c, 0, dtype=centroids.dtype, device=centroids.device)
    z = F.normalize(centroids.float(), dim=1)
    idx_out = torch.empty(c, k, dtype=torch.long, device=z.device)
    sim_out = torch.empty(c, k, dtype=z.dtype, device=z.device)
    for start in range(0, c, chunk):
        stop = min(start + chunk, c)
        sims = z[start:stop] @ z.t()  # chunk×C
        rows = torch.arange(stop - start, device=z.device)
        sims[rows, rows + start] = float("-inf")  # exclude self
        # stable tie-break by index: sort descending on (sim, -index) via a tiny index penalty-free
        # route: topk on sims, then re-sort equal values by index
        vals, idx = torch.topk(sims, k, dim=1, largest=True, sorted=True)
        order = torch.argsort(idx, dim=1, stable=True)
        idx_sorted = torch.gather(idx, 1, order)
        vals_sorted = torch.gather(vals, 1, order)
        final = torch.argsort(-vals_sorted, dim=1, stable=True)
        idx_out[start:stop] = torch.gather(idx_sorted, 1, final)
        sim_out[start:stop] = torch.gather(vals_sorted, 1, final)
    return idx_out, sim_out
