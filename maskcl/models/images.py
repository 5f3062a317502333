"""The one image dataset of the package: paths → (tensor, index), used by training and evaluation.

Images are addressed by index into a path list (for training: the sorted training table, which is
also the memory index, so a batch carries the indices its features update). A key is an index or
``(index, seed)``: with a seed the transform draws its random parameters from that seed alone
(:func:`seeded`), so an augmented view depends only on (run seed, epoch, iteration, position in the
batch) — not on the number of DataLoader workers, the process layout or an interruption and resume.

Two readers keep each stage's one-line error: :func:`load_rgb` for training images (a dataset
problem), :func:`load_rgb_eval` for evaluation; both name the file and the command that repairs the
dataset it belongs to (``maskcl.repair.dataset_repair_hint``), and both refuse an image whose mode
``convert("RGB")`` would misread (a 16-bit PNG, a CMYK JPEG: ``maskcl.image_modes``). Raised in a DataLoader worker, the
error reaches the job re-raised by torch, and ``maskcl.workflow.run_job`` prints its message again.
"""

from __future__ import annotations

import errno
import os
import random
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import DatasetError, EvaluationError
from ..image_modes import check_image_mode
from ..repair import dataset_repair_hint

__all__ = ["ImageSet", "Key", "load_rgb", "load_rgb_eval", "seeded", "split_key"]

#: a dataset key: an index, or (index, augmentation seed)
Key = Union[int, Tuple[int, int]]


def _io_failure(e: OSError) -> bool:
    """An OSError of the system (permissions, disk, too many open files), not a missing or damaged image.

    Those reach ``maskcl.workflow.run_job`` as they are, which names the cause and its fix; PIL's own
    errors for a damaged file carry no errno.
    """
    return e.errno is not None and e.errno != errno.ENOENT


def load_rgb(path: str) -> Image.Image:
    """A training image as RGB; unreadable or of a mode read wrong → :class:`DatasetError` naming the fix."""
    try:
        with Image.open(path) as im:
            check_image_mode(path, im.mode, error=DatasetError, fix=dataset_repair_hint(path))
            return im.convert("RGB")
    except (OSError, ValueError) as e:
        if isinstance(e, OSError) and _io_failure(e):
            raise
        raise DatasetError(f"cannot read image {path}: {e}; {dataset_repair_hint(path)}") from None


def load_rgb_eval(path: str) -> Image.Image:
    """An evaluation image as RGB; missing, unreadable or of a mode read wrong → :class:`EvaluationError`."""
    try:
        with Image.open(path) as im:
            check_image_mode(path, im.mode, error=EvaluationError, fix=dataset_repair_hint(path))
            return im.convert("RGB")
    except FileNotFoundError:
        raise EvaluationError(f"{path}: image not found; {dataset_repair_hint(path)}") from None
    except (OSError, ValueError) as e:
        if isinstance(e, OSError) and _io_failure(e):
            raise
        raise EvaluationError(f"{path}: cannot read image ({e}); {dataset_repair_hint(path)}") from None


def seeded(transform: Callable, img: Image.Image, seed: int) -> torch.Tensor:
    """Apply ``transform`` with python's and torch's global RNGs seeded by ``seed``, then restore them."""
    py_state, torch_state = random.getstate(), torch.random.get_rng_state()
    random.seed(seed)
    torch.random.manual_seed(seed)
    try:
        return transform(img)
    finally:
        random.setstate(py_state)
        torch.random.set_rng_state(torch_state)


def split_key(key: Key) -> Tuple[int, Optional[int]]:
    """(index, seed or None) of a dataset key."""
    if isinstance(key, (tuple, list)):
        return int(key[0]), int(key[1])
    return int(key), None


class ImageSet(Dataset):
    """(image tensor, index) for a list of paths, in the given order.

    Parameters
    ----------
    paths : sequence of path-like
    transform : callable
        PIL RGB image → tensor (3, H, W).
    reader : callable
        path → PIL RGB image; its exceptions are the dataset's errors (:func:`load_rgb`,
        :func:`load_rgb_eval`).
    """

    def __init__(self, paths: Sequence[Union[str, os.PathLike]], transform: Callable,
                 reader: Callable[[str], Image.Image] = load_rgb) -> None:
        self.paths = [str(p) for p in paths]
        self.transform = transform
        self.reader = reader

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: Key) -> Tuple[torch.Tensor, int]:
        i, seed = split_key(key)
        img = self.reader(self.paths[i])
        return (self.transform(img) if seed is None else seeded(self.transform, img, seed)), i
