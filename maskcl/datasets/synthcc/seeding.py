"""One random stream per thing that is sampled, keyed by what it is, never by processing order.

Every image is drawn from ``SeedSequence([seed, IMAGE, pid, outfit, cam, frame])`` (and every identity,
outfit set, camera and tracklet from its own key), so the output does not depend on the number of
workers, on the order in which images are rendered, or on how many other identities exist.
"""

from __future__ import annotations

import numpy as np

__all__ = ["IDENTITY", "OUTFITS", "CAMERA", "SCENE", "PLAN", "TRACKLET", "IMAGE", "stream"]

IDENTITY, OUTFITS, CAMERA, SCENE, PLAN, TRACKLET, IMAGE = 1, 2, 3, 4, 5, 6, 7


def stream(seed: int, tag: int, *keys: int) -> np.random.Generator:
    """The generator for ``(seed, tag, *keys)``; all entries must be non-negative integers."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(tag), *(int(k) for k in keys)]))
