"""Dataset loaders behind one registry.

``load_dataset(name, root)`` returns one row per image with the columns ``path, relpath, split, pid,
camid, clothes_id`` plus dataset extras. Split names are shared by every later stage: ``train``,
``query``, ``gallery`` everywhere; PRCC adds ``val`` and splits its queries into ``query_sc`` /
``query_cc``; DeepChange adds ``val_query`` / ``val_gallery``. Person ids are kept raw (never
relabelled); clothes ids are contiguous integers keyed by (split group, pid, outfit), so a query and
a gallery image of the same person in the same outfit share one clothes id.
"""

from __future__ import annotations

import os
from typing import Any, List, Tuple, Type

import pandas as pd

from ..registry import Registry
from .base import MANIFEST_COLUMNS, ReIDDataset, SplitStats, split_statistics
from .protocol import Protocol
from .celeb import CelebReID, CelebReIDLight
from .custom import CustomDataset
from .deepchange import DeepChange
from .ltcc import LTCC
from .prcc import PRCC
from .synthcc import SynthCC
from .vcclothes import VCClothes

__all__ = ["DATASETS", "register_dataset", "get_dataset", "load_dataset", "list_datasets", "report_order",
           "ReIDDataset", "SplitStats", "MANIFEST_COLUMNS", "split_statistics", "Protocol", "dataset_splits"]

#: Name → loader class. Add a dataset by writing one module with a ``ReIDDataset`` subclass and
#: registering it here.
DATASETS = Registry("dataset")

#: Names in registration order, which is the order of datasets in reports (``report_order``).
_ORDER: List[str] = []


def register_dataset(cls: Type[ReIDDataset]) -> Type[ReIDDataset]:
    DATASETS.register(cls.name, cls)
    _ORDER.append(cls.name)
    return cls


# Registration order is report order (tables, PROTOCOLS): keep it when adding a dataset.
register_dataset(LTCC)
register_dataset(SynthCC)
register_dataset(PRCC)
register_dataset(VCClothes)
register_dataset(CelebReID)
register_dataset(CelebReIDLight)
register_dataset(DeepChange)
register_dataset(CustomDataset)


def report_order() -> Tuple[str, ...]:
    """Registered dataset names in the order reports list them (registration order, not sorted)."""
    return tuple(_ORDER)


def get_dataset(name: str, **settings: Any) -> ReIDDataset:
    """The loader instance for ``name`` (unknown names list the known ones).

    ``settings`` go to the loader's constructor: a user's own folder (``user_folder``) is built with
    its ``folder=CustomFolder(...)``; every other loader takes none.
    """
    return DATASETS.build(name, **settings)


def dataset_splits(name: str) -> Tuple[str, ...]:
    """The split names a manifest of ``name`` may hold (what ``maskcl.manifest.read_manifest`` checks)."""
    return tuple(DATASETS.get(name).splits)


def list_datasets() -> list[str]:
    """Registered dataset names, sorted."""
    return DATASETS.names()


def load_dataset(name: str, root: str | os.PathLike) -> pd.DataFrame:
    """Parse the dataset ``name`` found at (or one or two levels under) ``root``.

    Returns a DataFrame with ``MANIFEST_COLUMNS`` plus the loader's extras, sorted by split and
    relative path. ``frame.attrs["root"]`` holds the resolved dataset root.
    """
    return get_dataset(name).load(root)
