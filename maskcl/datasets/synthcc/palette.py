"""Colours and label indices shared by the SynthCC sampler and renderer.

One garment palette serves every garment of every person, so different people wear similar clothes
and only the *choice* of colours is per outfit. Label indices are LIP's (the SCHP label set), so the
ground-truth maps can be scored against SCHP predictions directly.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Dict, List, Tuple

import numpy as np

__all__ = ["LIP_LABELS", "LABEL", "GARMENT_PALETTE", "HAIR_COLOURS", "HAIR_WEIGHTS", "SKIN_TONES",
           "label_palette", "colourise_labels"]

#: LIP class names by index (SCHP's ``dataset_settings['lip']``).
LIP_LABELS: Tuple[str, ...] = (
    "Background", "Hat", "Hair", "Glove", "Sunglasses", "Upper-clothes", "Dress", "Coat", "Socks", "Pants",
    "Jumpsuits", "Scarf", "Skirt", "Face", "Left-arm", "Right-arm", "Left-leg", "Right-leg", "Left-shoe",
    "Right-shoe",
)

#: The indices the renderer draws.
LABEL: Dict[str, int] = {
    "background": 0, "hat": 1, "hair": 2, "upper": 5, "coat": 7, "pants": 9, "skirt": 12, "face": 13,
    "left_arm": 14, "right_arm": 15, "left_leg": 16, "right_leg": 17, "left_shoe": 18, "right_shoe": 19,
}

#: (name, sRGB) of every garment colour; garments pick entries with garment-specific weights.
GARMENT_PALETTE: Tuple[Tuple[str, Tuple[int, int, int]], ...] = (
    ("black", (28, 28, 32)), ("charcoal", (62, 64, 70)), ("grey", (128, 128, 132)),
    ("light-grey", (190, 190, 192)), ("white", (236, 236, 232)), ("navy", (30, 40, 86)),
    ("denim", (62, 88, 132)), ("sky", (120, 170, 220)), ("red", (186, 36, 40)), ("maroon", (110, 28, 40)),
    ("pink", (232, 150, 176)), ("orange", (230, 120, 40)), ("yellow", (232, 200, 60)),
    ("olive", (100, 108, 52)), ("green", (48, 130, 72)), ("teal", (30, 120, 128)),
    ("purple", (104, 60, 140)), ("beige", (208, 188, 150)), ("khaki", (170, 150, 100)),
    ("brown", (110, 74, 46)),
)

#: Natural hair colours (plus one dyed); sampled per identity.
HAIR_COLOURS: Tuple[Tuple[str, Tuple[int, int, int]], ...] = (
    ("black", (22, 20, 20)), ("dark-brown", (48, 34, 26)), ("brown", (88, 60, 40)),
    ("light-brown", (136, 100, 66)), ("blond", (200, 168, 110)), ("auburn", (128, 56, 32)),
    ("grey", (150, 148, 146)), ("dyed-red", (150, 40, 50)),
)
HAIR_WEIGHTS: Tuple[float, ...] = (0.3, 0.22, 0.16, 0.1, 0.08, 0.06, 0.06, 0.02)

#: Skin tone anchors from light to dark; identities interpolate between neighbours.
SKIN_TONES: Tuple[Tuple[int, int, int], ...] = (
    (246, 218, 196), (232, 190, 160), (214, 164, 128), (186, 130, 94), (146, 96, 64), (104, 66, 44),
    (74, 48, 34),
)


def label_palette(n: int = 256) -> List[int]:
    """The VOC-style bit-interleaved colour map SCHP uses for its palette PNGs, flattened to 3n ints."""
    return list(_palette(n))


@lru_cache(maxsize=8)
def _palette(n: int) -> Tuple[int, ...]:
    out: List[int] = []
    for i in range(n):
        rgb = [0, 0, 0]
        c = i
        for bit in range(8):
            for ch in range(3):
                rgb[ch] |= ((c >> ch) & 1) << (7 - bit)
            c >>= 3
        out.extend(rgb)
    return tuple(out)


def colourise_labels(labels: np.ndarray) -> np.ndarray:
    """Colour a label map with the label palette (for contact sheets).

    Parameters
    ----------
    labels : numpy.ndarray
        (H, W) uint8 class indices.

    Returns
    -------
    numpy.ndarray
        (H, W, 3) uint8 RGB image.
    """
    pal = np.asarray(label_palette(), dtype=np.uint8).reshape(256, 3)
    return pal[labels]
