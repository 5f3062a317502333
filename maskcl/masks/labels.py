"""Label sets of the mask sources and the colour palette of their PNGs.

Every source writes class-index maps in which 0 is background, so ``label != 0`` is the person
silhouette whatever the label set. SCHP's three checkpoints each have their own set (LIP, ATR,
Pascal-Person-Part); SynthCC's ground truth uses LIP; binary sources (MediaPipe) use
``background``/``person``. The palette is the VOC bit-interleaved colour map that SCHP's extractor
puts in its PNGs, so our ``parts`` images equal what MaskCL got from an SCHP PNG converted to RGB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np

__all__ = ["LabelSet", "LABEL_SETS", "LIP", "ATR", "PASCAL", "BINARY", "voc_palette", "get_label_set"]


@dataclass(frozen=True)
class LabelSet:
    """Names of the classes of one label map convention, index = class id."""

    name: str
    labels: Tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.labels)


LIP = LabelSet("lip", (
    "Background", "Hat", "Hair", "Glove", "Sunglasses", "Upper-clothes", "Dress", "Coat", "Socks",
    "Pants", "Jumpsuits", "Scarf", "Skirt", "Face", "Left-arm", "Right-arm", "Left-leg", "Right-leg",
    "Left-shoe", "Right-shoe"))
ATR = LabelSet("atr", (
    "Background", "Hat", "Hair", "Sunglasses", "Upper-clothes", "Skirt", "Pants", "Dress", "Belt",
    "Left-shoe", "Right-shoe", "Face", "Left-leg", "Right-leg", "Left-arm", "Right-arm", "Bag", "Scarf"))
PASCAL = LabelSet("pascal", (
    "Background", "Head", "Torso", "Upper Arms", "Lower Arms", "Upper Legs", "Lower Legs"))
BINARY = LabelSet("binary", ("Background", "Person"))

LABEL_SETS: Dict[str, LabelSet] = {s.name: s for s in (LIP, ATR, PASCAL, BINARY)}


def get_label_set(name: str) -> LabelSet:
    try:
        return LABEL_SETS[name]
    except KeyError:
        raise ValueError(f"unknown label set {name!r}; known: {', '.join(LABEL_SETS)}") from None


def voc_palette(num_classes: int = 256) -> np.ndarray:
    """The VOC colour map: class bits spread over the high bits of R, G and B.

    Parameters
    ----------
    num_classes : int
        Number of palette entries.

    Returns
    -------
    np.ndarray, shape (num_classes, 3), uint8
        Entry ``c`` is the RGB colour of class ``c`` (class 0 is black).
    """
    out = np.zeros((num_classes, 3), dtype=np.uint8)
    for c in range(num_classes):
        value, shift = c, 7
        r = g = b = 0
        while value:
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
            shift -= 1
        out[c] = (r, g, b)
    return out
