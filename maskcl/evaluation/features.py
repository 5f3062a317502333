"""Feature extraction for evaluation: any model callable, deterministic order, optional flip averaging."""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import EvaluationError

__all__ = ["ImageList", "extract_features"]

log = logging.getLogger(__name__)


class ImageList(torch.utils.data.Dataset):
    """Images opened as RGB and transformed, in the given order."""

    def __init__(self, paths: Sequence[str | os.PathLike], transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.paths = [str(p) for p in paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        path = self.paths[i]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except FileNotFoundError:
            raise EvaluationError(f"{path}: image not found; rebuild the manifest (download stage) "
                                  f"or restore the file") from None
        except OSError as e:
            raise EvaluationError(f"{path}: cannot read image ({e}); replace or remove the file") from None
        return self.transform(img)


def extract_features(model: Callable[[torch.Tensor], torch.Tensor], paths: Sequence[str | os.PathLike],
                     transform: Callable[[Image.Image], torch.Tensor], *, batch_size: int = 64,
                     device: Any = "cpu", flip: bool = False, normalize: bool = True,
                     num_workers: int = 0) -> np.ndarray:
    """Embed images in order: ``model(x)`` (+ ``model(flip(x))`` if ``flip``), then L2-normalised.

    CAL averages a horizontally flipped copy; the official MaskCL evaluator does not (``flip=False``).

    Parameters
    ----------
    model : callable
        Maps a float batch (N, 3, H, W) on ``device`` to (N, d). An ``nn.Module`` is put in eval
        mode for the call and restored afterwards.
    paths : sequence of path-like
        Image files, in the order of the returned rows.
    transform : callable
        PIL RGB image → tensor (3, H, W), e.g. resize + to-tensor + normalise.
    batch_size : int
    device : str or torch.device
    flip : bool
        Add the features of the horizontally flipped batch before normalising.
    normalize : bool
        L2-normalise every row (after the flip sum).
    num_workers : int
        DataLoader workers; the row order never depends on it.

    Returns
    -------
    np.ndarray, shape (len(paths), d), float32

    Raises
    ------
    EvaluationError
        A missing or unreadable image, a bad batch size, or a model output that is not (N, d).
    """
    if batch_size < 1:
        raise EvaluationError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    loader = torch.utils.data.DataLoader(ImageList(paths, transform), batch_size=batch_size, shuffle=False,
                                         num_workers=num_workers, drop_last=False,
                                         pin_memory=device.type == "cuda")
    was_training = getattr(model, "training", None)
    if isinstance(model, torch.nn.Module):
        model.eval()
    chunks = []
    try:
        with torch.inference_mode():
            for x in loader:
                x = x.to(device, non_blocking=True)
                f = _embed(model, x)
                if flip:
                    f = f + _embed(model, torch.flip(x, dims=[3]))
                if normalize:
                    f = torch.nn.functional.normalize(f, p=2, dim=1)
                chunks.append(f.float().cpu())
    finally:
        if isinstance(model, torch.nn.Module) and was_training:
            model.train()
    if not chunks:
        return np.zeros((0, 0), np.float32)
    out = torch.cat(chunks).numpy()
    log.info("extracted %d features of dim %d (flip=%s, normalize=%s)", out.shape[0], out.shape[1], flip, normalize)
    return out


def _embed(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    f = model(x)
    if not isinstance(f, torch.Tensor) or f.ndim != 2 or f.shape[0] != x.shape[0]:
        shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
        raise EvaluationError(f"the model must map a batch (N, 3, H, W) to features (N, d); got {shape} "
                              f"for a batch of {x.shape[0]}")
    return f
