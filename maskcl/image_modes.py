"""Which images the pipeline reads: the PIL modes whose ``convert("RGB")`` is exact, and nothing else.

Every reader of a dataset image converts it with PIL's ``convert("RGB")``, as the official MaskCL
code does. That is exact for 8-bit images: RGB itself, greyscale ``L`` (replicated), palette ``P``
(looked up; a transparent index keeps its colour), bilevel ``1`` (0 and 255), and ``RGBA`` / ``LA``
(the alpha channel dropped, as ``cv2.imread(IMREAD_COLOR)`` drops it too). A 16-bit RGB(A) PNG is
opened by PIL as ``RGB`` / ``RGBA`` holding each sample's high byte (``v >> 8``), an exact reduction
to 8 bits, so it passes.

Other modes are misread without a word: 16-bit greyscale (``I;16``, ``I`` in older Pillow), 32-bit
integer ``I`` and float ``F`` are clipped to 0..255 — a 16-bit photo becomes a near-white picture —
``CMYK`` and ``YCbCr`` are converted by naive formulas that ignore the file's colour profile, and
``LAB`` / ``HSV`` are colour spaces no dataset stores (PIL's LAB conversion copies raw channels). Those are refused by :func:`check_image_mode` with one line naming the file, its mode
and the fix; the datasets this pipeline knows hold JPEG ``RGB`` / ``L`` and PNG ``RGB`` / ``RGBA`` /
``P`` / ``L`` only.
"""

from __future__ import annotations

import os
from typing import Dict, Tuple, Type, Union

from .errors import MaskCLError

__all__ = ["READ_MODES", "check_image_mode"]

#: PIL modes whose ``convert("RGB")`` keeps every colour exactly (alpha dropped).
READ_MODES: Tuple[str, ...] = ("RGB", "RGBA", "L", "LA", "P", "1")

#: What a refused mode is and what reading it as RGB would do (modes not listed: "not an 8-bit colour image").
_REFUSED: Dict[str, str] = {
    "I;16": "16-bit greyscale, read as near-white once clipped to 8 bits",
    "I;16B": "16-bit greyscale, read as near-white once clipped to 8 bits",
    "I;16L": "16-bit greyscale, read as near-white once clipped to 8 bits",
    "I;16N": "16-bit greyscale, read as near-white once clipped to 8 bits",
    "I": "16/32-bit integer greyscale, read as near-white once clipped to 8 bits",
    "F": "32-bit float greyscale, read as black or white once clipped to 8 bits",
    "CMYK": "CMYK print colours, converted without the file's colour profile",
    "YCbCr": "YCbCr, converted without the file's colour profile",
    "LAB": "CIELAB, whose channels PIL copies as if they were RGB",
    "HSV": "HSV, a colour space no dataset stores",
}


def check_image_mode(path: Union[str, os.PathLike], mode: str, *, error: Type[MaskCLError], fix: str) -> None:
    """Refuse an image whose PIL ``mode`` is not one of :data:`READ_MODES`.

    ``error`` is the reading stage's error class, ``fix`` its repair advice (e.g.
    ``maskcl.repair.dataset_repair_hint``), appended after the conversion a user can do themselves.
    """
    if mode in READ_MODES:
        return
    what = _REFUSED.get(mode, "not an 8-bit colour or greyscale image")
    raise error(f"{path}: image mode {mode} ({what}); the pipeline reads 8-bit images only (PIL modes "
                f"{', '.join(READ_MODES)}): convert it to 8-bit RGB, or {fix}")
