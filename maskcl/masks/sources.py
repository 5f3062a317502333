"""Mask sources: the pluggable producers of per-image label maps, behind ``MASK_SOURCES``.

A source turns images into class-index label maps (uint8, H×W at the image's original size,
0 = background). The parse stage (``maskcl.masks.parse``) owns everything else: skipping finished
images, batching, DataLoader workers, the three output images, the index and staleness.

Adding a source
---------------
Write a ``MaskSource`` subclass (in this module or its own, imported by ``maskcl/masks/__init__.py``)
and register it::

    @MASK_SOURCES.register("mysource")
    class MySource(MaskSource):
        name = "mysource"
        label_set = BINARY                 # or LIP, or a new LabelSet in labels.py

        def __init__(self, *, threshold: float = 0.5, batch_size: int = 4, workers: int = 0):
            self.threshold, self.batch_size, self.workers = threshold, batch_size, workers

        def params(self):                  # everything that changes the masks (stored in params.json)
            return {"threshold": self.threshold}

        def load(self, item):              # runs in DataLoader workers: read, no heavy state
            return read_image(item.path, "RGB")

        def predict(self, samples):        # main process: one label map per sample
            return [(s.mean(axis=2) > 128).astype(np.uint8) for s in samples]

then add its name to the ``masks.sources`` / ``masks.train_source`` enums in
``maskcl/schemas/config.schema.yaml`` and its keyword arguments as ``masks.<name>`` (the parse rule
passes that section to the constructor; see ``docs/masks.md``). Heavy state (a model, a graph) must be
created lazily in ``predict`` so that the object stays cheap to pickle into workers.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..errors import DatasetError, ImageReadError
from ..image_modes import check_image_mode
from ..registry import Registry
from ..repair import dataset_repair_hint
from .labels import LIP, LabelSet

__all__ = ["MASK_SOURCES", "MaskItem", "MaskSource", "ImageReadError", "GroundTruthSource",
           "build_mask_source", "read_image", "image_size", "resolve_parsing"]

#: Name → ``MaskSource`` subclass. ``build_mask_source(name, **kwargs)`` instantiates one.
MASK_SOURCES = Registry("mask source")


@dataclass(frozen=True)
class MaskItem:
    """One image to parse, as the parse stage hands it to a source.

    ``parsing`` is the absolute path of the ground-truth label map when the manifest has one.
    """

    path: str
    relpath: str
    parsing: Optional[str] = None


def _bad_image(path: str, err: BaseException) -> ImageReadError:
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return ImageReadError(f"cannot read image {path} ({reason}); replace or remove the file and rerun")


def image_size(path: str) -> Tuple[int, int]:
    """(height, width) from the image header, without decoding the pixels; its mode checked too.

    The parse stage asks every image's size first, so an image of a mode no stage reads exactly
    (``maskcl.image_modes``) stops it before any mask is made, whatever the mask source.
    """
    try:
        with Image.open(path) as im:
            check_image_mode(path, im.mode, error=ImageReadError, fix=dataset_repair_hint(path))
            w, h = im.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise _bad_image(path, e) from None
    return h, w


def read_image(path: str, channels: str = "RGB") -> np.ndarray:
    """Decode an image to uint8 H×W×3 in ``channels`` order ("RGB" or "BGR").

    Colour conversion follows PIL (grey and palette images are expanded, alpha is dropped), which
    matches ``cv2.imread(IMREAD_COLOR)`` for the 8-bit images ReID datasets contain; other modes
    (16-bit greyscale, CMYK, ...) are refused (``maskcl.image_modes``).

    Raises
    ------
    ImageReadError
        One line naming the file when it is missing, truncated, not an image or of a refused mode.
    """
    try:
        with Image.open(path) as im:
            check_image_mode(path, im.mode, error=ImageReadError, fix=dataset_repair_hint(path))
            arr = np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise _bad_image(path, e) from None
    if channels == "BGR":
        arr = arr[:, :, ::-1]
    elif channels != "RGB":
        raise ValueError(f"channels must be 'RGB' or 'BGR', got {channels!r}")
    return np.ascontiguousarray(arr)


class MaskSource(abc.ABC):
    """Base class of all mask sources.

    Attributes
    ----------
    name : str
        Registry key; also the folder name under ``results/{dataset}/masks/``.
    label_set : LabelSet
        Meaning of the class indices the source writes (0 is always background).
    batch_size : int
        Images handed to one ``predict`` call.
    workers : int
        DataLoader worker processes running ``load``.
    """

    name: ClassVar[str] = ""
    label_set: LabelSet = LIP
    batch_size: int = 1
    workers: int = 0
    #: The source reads the manifest's ``parsing`` column (checked before any work starts).
    needs_ground_truth: ClassVar[bool] = False

    @abc.abstractmethod
    def params(self) -> Dict[str, Any]:
        """JSON-able parameters that change the masks; a change makes old masks stale.

        Leave out what only changes speed (batch size, workers, device)."""

    @abc.abstractmethod
    def load(self, item: MaskItem) -> Any:
        """Read what ``predict`` needs for one image (runs in a DataLoader worker).

        Raises ``ImageReadError`` for unreadable inputs."""

    @abc.abstractmethod
    def predict(self, samples: Sequence[Any]) -> List[np.ndarray]:
        """Label maps (uint8, H×W at each image's original size) for a batch of loaded samples."""

    def describe(self) -> Dict[str, Any]:
        """What ``params.json`` records: name, label set and parameters."""
        return {"source": self.name, "label_set": self.label_set.name,
                "labels": list(self.label_set.labels), "params": self.params()}

    def close(self) -> None:
        """Release heavy resources (models, graphs); called once parsing is done."""


def build_mask_source(name: str, **kwargs: Any) -> MaskSource:
    """Instantiate the registered source ``name`` with its keyword arguments.

    Parameters
    ----------
    name : str
        A key of ``MASK_SOURCES`` (``schp``, ``groundtruth``, ``mediapipe``).
    **kwargs
        The source's keyword-only constructor arguments (``masks.<name>`` in the config).

    Raises
    ------
    ConfigError
        Unknown name (the message lists the known ones) or missing optional dependency.
    """
    return MASK_SOURCES.build(name, **kwargs)


@MASK_SOURCES.register("groundtruth")
class GroundTruthSource(MaskSource):
    """The dataset's own parsing (SynthCC renders a LIP label map per image).

    Reads the manifest's ``parsing`` column: a palette (or grey) PNG of LIP class indices under the
    dataset root, at the image's resolution.
    """

    name: ClassVar[str] = "groundtruth"
    label_set = LIP
    needs_ground_truth: ClassVar[bool] = True

    def __init__(self, *, batch_size: int = 16, workers: int = 0) -> None:
        self.batch_size = int(batch_size)
        self.workers = int(workers)

    def params(self) -> Dict[str, Any]:
        return {}

    def load(self, item: MaskItem) -> np.ndarray:
        if item.parsing is None:
            raise DatasetError(f"{item.relpath}: the manifest has no ground-truth 'parsing' path; only "
                               f"datasets with rendered parsing (synthcc) support masks.sources: groundtruth")
        try:
            with Image.open(item.parsing) as im:
                if im.mode not in ("P", "L"):
                    raise ImageReadError(f"{item.parsing}: ground-truth parsing must be a palette or grey "
                                         f"PNG of class indices, got mode {im.mode}")
                labels = np.array(im, dtype=np.uint8)
        except (OSError, SyntaxError, ValueError) as e:
            raise _bad_image(item.parsing, e) from None
        h, w = image_size(item.path)
        if labels.shape != (h, w):
            raise DatasetError(f"{item.parsing}: ground-truth parsing is {labels.shape[1]}x{labels.shape[0]} "
                               f"but its image {item.path} is {w}x{h}; regenerate the dataset")
        top = int(labels.max(initial=0))
        if top >= LIP.num_classes:
            raise DatasetError(f"{item.parsing}: class index {top} outside the LIP label set "
                               f"(0..{LIP.num_classes - 1})")
        return labels

    def predict(self, samples: Sequence[np.ndarray]) -> List[np.ndarray]:
        return [np.asarray(s, dtype=np.uint8) for s in samples]


def resolve_parsing(path: str, relpath: str, parsing: Any) -> Optional[str]:
    """Absolute ground-truth path: the manifest's ``parsing`` is relative to the dataset root,
    which is ``path`` with ``relpath`` taken off the end."""
    if parsing is None or (isinstance(parsing, float) and np.isnan(parsing)) or parsing == "":
        return None
    p = Path(str(parsing))
    if p.is_absolute():
        return str(p)
    root = path[: len(path) - len(relpath)] if path.endswith(relpath) else str(Path(path).parent)
    return str(Path(root) / p)
