"""The one eval-mode feature extractor, shared by training (memory init, per-epoch clustering) and
evaluation: any model callable, deterministic order, optional flip averaging and L2 normalisation.

It sits beside the models so that both ``maskcl.training`` and ``maskcl.evaluation`` import it
downward. Training calls it with ``normalize=False`` and its own image reader; evaluation with the
defaults.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..errors import EvaluationError
from .images import ImageSet, load_rgb_eval

__all__ = ["ImageSet", "extract_features"]

log = logging.getLogger(__name__)


def extract_features(model: Callable[[torch.Tensor], torch.Tensor], paths: Sequence[Union[str, os.PathLike]],
                     transform: Callable[[Image.Image], torch.Tensor], *, batch_size: int = 64,
                     device: Any = "cpu", flip: bool = False, normalize: bool = True, num_workers: int = 0,
                     channels_last: str = "off", reader: Callable[[str], Image.Image] = load_rgb_eval,
                     log_summary: bool = True, dataset: Optional[Dataset] = None,
                     progress: bool = False) -> np.ndarray:
    """Embed images in order: ``model(x)`` (+ ``model(flip(x))`` if ``flip``), then L2-normalised.

    CAL averages a horizontally flipped copy; the official MaskCL evaluator does not (``flip=False``).

    Parameters
    ----------
    model : callable
        Maps a float batch (N, 3, H, W) on ``device`` to (N, d). An ``nn.Module`` is put in eval
        mode for the call and its training mode restored afterwards.
    paths : sequence of path-like
        Image files, in the order of the returned rows.
    transform : callable
        PIL RGB image → tensor (3, H, W), e.g. resize + to-tensor + normalise.
    batch_size : int
    device : str or torch.device
    flip : bool
        Add the features of the horizontally flipped batch before normalising.
    normalize : bool
        L2-normalise every row (after the flip sum); training memories take the raw features.
    num_workers : int
        DataLoader workers; the row order never depends on it.
    channels_last : str
        ``auto``/``on``: feed CUDA batches in channels-last layout (what training does for speed);
        ``off`` (evaluation) keeps the default layout.
    reader : callable
        path → PIL RGB image, raising the caller's one-line error (``maskcl.models.images``).
    log_summary : bool
        Log one line with the number and size of the features (evaluation).
    dataset : torch Dataset, optional
        Yields (tensor, index) per row instead of ``ImageSet(paths, transform, reader)``: images that
        are not files (``maskcl.inference``); ``paths`` then only gives the row count.
    progress : bool
        A progress bar over the batches (the ``maskcl extract`` command).

    Returns
    -------
    np.ndarray, shape (len(paths), d), float32

    Raises
    ------
    EvaluationError
        A bad batch size or a model output that is not (N, d); the reader's error for a missing or
        unreadable image.
    """
    if batch_size < 1:
        raise EvaluationError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    images = dataset if dataset is not None else ImageSet(paths, transform, reader=reader)
    loader = DataLoader(images, batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, drop_last=False, pin_memory=device.type == "cuda")
    cl = device.type == "cuda" and channels_last in ("auto", "on")
    is_module = isinstance(model, nn.Module)
    was_training = is_module and model.training
    if is_module:
        model.eval()
    chunks = []
    try:
        with torch.inference_mode():
            for x, _ in tqdm(loader, desc="features", unit="batch", disable=not progress, mininterval=1.0):
                x = x.to(device, non_blocking=True)
                if cl:
                    x = x.contiguous(memory_format=torch.channels_last)
                f = _embed(model, x)
                if flip:
                    f = f + _embed(model, torch.flip(x, dims=[3]))
                if normalize:
                    f = torch.nn.functional.normalize(f, p=2, dim=1)
                chunks.append(f.float().cpu())
    finally:
        if was_training:
            model.train()
    if not chunks:
        return np.zeros((0, 0), np.float32)
    out = torch.cat(chunks).numpy()
    if log_summary:
        log.info("extracted %d features of dim %d (flip=%s, normalize=%s)", out.shape[0], out.shape[1], flip,
                 normalize)
    return out


def _embed(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    f = model(x)
    if not isinstance(f, torch.Tensor) or f.ndim != 2 or f.shape[0] != x.shape[0]:
        shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
        raise EvaluationError(f"the model must map a batch (N, 3, H, W) to features (N, d); got {shape} "
                              f"for a batch of {x.shape[0]}")
    return f
