"""Camera-aware PK sampling (ClusterContrast's ``RandomMultipleGallerySampler``, used by MaskCL).

For every pseudo-label in random order: one random anchor, then K−1 members of the same label seen by
*other* cameras; when the label has no other camera, K−1 other members of any camera; a singleton
contributes only its anchor. The K−1 are drawn without replacement only when the pool holds at least K
candidates (``replacement="official"``: SiCL ``maskcl/utils/data/sampler.py`` lines 86-89 and 97-100, the
same test in ClusterContrast's ``clustercontrast/utils/data/sampler.py`` lines 105-108 and 117-120), so a
pool of exactly K−1 is drawn with replacement; ``minimal`` draws with replacement only when the pool
holds fewer than the K−1 needed. The
sampler owns a seeded ``numpy.random.Generator``, so an epoch's order is a function of (seed, epoch)
and a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np

__all__ = ["SAMPLER_REPLACEMENT", "CameraAwarePKSampler", "pk_indices"]

#: Values of ``train.sampler_replacement``.
SAMPLER_REPLACEMENT = ("official", "minimal")


def pk_indices(labels: Sequence[int], cams: Sequence[int], num_instances: int,
               rng: np.random.Generator, replacement: str = "official") -> List[int]:
    """One pass over all labels (outliers −1 excluded) as a flat list of sample indices."""
    if replacement not in SAMPLER_REPLACEMENT:
        raise ValueError(f"train.sampler_replacement must be one of {', '.join(SAMPLER_REPLACEMENT)}, "
                         f"got {replacement!r}")
    # the smallest pool drawn without replacement
    distinct_from = num_instances if replacement == "official" else num_instances - 1
    labels = np.asarray(labels)
    cams = np.asarray(cams)
    members: Dict[int, np.ndarray] = {}
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    uniq, starts = np.unique(sorted_labels, return_index=True)
    bounds = list(starts) + [len(order)]
    for i, lab in enumerate(uniq):
        if lab >= 0:
            members[int(lab)] = order[bounds[i]:bounds[i + 1]]
    keys = np.array(sorted(members), dtype=np.int64)
    out: List[int] = []
    for lab in keys[rng.permutation(len(keys))]:
        idx = members[int(lab)]
        anchor = int(idx[rng.integers(len(idx))])
        out.append(anchor)
        if num_instances <= 1:
            continue
        others = idx[idx != anchor]
        if len(others) == 0:
            continue
        other_cam = others[cams[others] != cams[anchor]]
        pool = other_cam if len(other_cam) > 0 else others
        replace = len(pool) < distinct_from
        out.extend(int(j) for j in rng.choice(pool, size=num_instances - 1, replace=replace))
    return out


class CameraAwarePKSampler:
    """Yields exactly ``iters × batch_size`` indices per epoch, restarting passes as needed.

    Batches are consecutive chunks of ``batch_size`` indices (so a batch holds about
    batch_size / K labels); a pass whose tail cannot fill a batch is dropped, as with
    ``drop_last=True`` in the official loader. ``seeded_batches`` pairs every index with its own
    augmentation seed (see ``maskcl.training.data``).
    """

    def __init__(self, labels: Sequence[int], cams: Sequence[int], batch_size: int, num_instances: int,
                 iters: int, seed: int, replacement: str = "official") -> None:
        self.replacement = replacement
        self.labels = np.asarray(labels)
        self.cams = np.asarray(cams)
        self.batch_size = batch_size
        self.num_instances = num_instances
        self.iters = iters
        self.seed = seed
        if not (self.labels >= 0).any():
            raise ValueError("no labelled samples to sample from")

    def seeded_batches(self, epoch: int) -> Iterator[List[Tuple[int, int]]]:
        """``batches(epoch)`` with an augmentation seed per position, from (seed, epoch, iteration)."""
        for it, batch in enumerate(self.batches(epoch)):
            seeds = np.random.SeedSequence([self.seed, epoch, it, 0xA6]).generate_state(len(batch))
            yield [(i, int(s)) for i, s in zip(batch, seeds)]

    def batches(self, epoch: int) -> Iterator[List[int]]:
        rng = np.random.default_rng([self.seed, epoch, 0x5A4D])
        short: List[int] = []  # passes shorter than one batch are concatenated until a batch fills
        produced = 0
        while produced < self.iters:
            pass_idx = pk_indices(self.labels, self.cams, self.num_instances, rng, self.replacement)
            if len(pass_idx) >= self.batch_size:
                full = len(pass_idx) // self.batch_size * self.batch_size  # the tail is dropped (drop_last)
                chunks = [pass_idx[i:i + self.batch_size] for i in range(0, full, self.batch_size)]
            else:
                short.extend(pass_idx)
                chunks = []
                while len(short) >= self.batch_size:
                    chunks.append(short[:self.batch_size])
                    short = short[self.batch_size:]
            for chunk in chunks:
                if produced >= self.iters:
                    return
                yield chunk
                produced += 1
