"""The workspace: the working folder a workflow runs in, and stored paths that survive its being moved.

Every job runs in the working folder (Snakemake's ``--directory``), which holds ``results/`` and, by
default, the datasets under ``data.root``. A file that names other files (the manifest names images,
the mask index names masks, ``dataset.json`` names the dataset root) stores a path that lies inside
the workspace *relative to its own folder*, so a moved workspace reads its own files and a copied one
never reads the original's. A path outside the workspace (a dataset folder used in place, or
``data.root`` set elsewhere) is stored absolute: it is not part of the workspace, and every copy
shares it.

An absolute path that lies inside *another* workspace (a file written before paths were stored
relative, in a workspace that was then copied or moved) is refused with one line naming both
workspaces, never read. :func:`check_data_folder` keeps a dataset out of ``results/`` and away from
the workspace itself, where generating or extracting it would replace the workflow's outputs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence, Union

from .errors import ConfigError

__all__ = ["RESULTS", "workspace", "real_path", "is_inside", "stored_path", "resolve_stored", "resolve_all",
           "place_in_workspace",
           "other_workspace", "moved_from", "check_data_folder"]

PathLike = Union[str, os.PathLike]

#: The folder of the working folder that holds the workflow's outputs (every rule writes below it).
RESULTS = "results"


def workspace() -> Path:
    """The working folder (where the workflow runs; jobs run there), symbolic links resolved."""
    return Path(os.path.realpath(os.getcwd()))


def real_path(path: PathLike) -> Path:
    """``path`` made absolute (relative to the working folder) with symbolic links resolved."""
    return Path(os.path.realpath(os.path.abspath(path)))


def is_inside(path: PathLike, folder: PathLike) -> bool:
    """True when ``path`` is ``folder`` or lies below it (both taken as given: resolve them first)."""
    try:
        Path(path).relative_to(folder)
    except ValueError:
        return False
    return True


def stored_path(target: PathLike, folder: PathLike, ws: Optional[PathLike] = None) -> str:
    """How a file in ``folder`` records ``target``.

    Relative to ``folder`` (POSIX separators) when ``target`` and ``folder`` both lie inside the
    workspace ``ws`` (default: the working folder), so the pair moves together; absolute otherwise.
    """
    ws_real = real_path(ws) if ws is not None else workspace()
    t, f = real_path(target), real_path(folder)
    if is_inside(t, ws_real) and is_inside(f, ws_real):
        return Path(os.path.relpath(t, f)).as_posix()
    return str(t)


def resolve_stored(cell: str, folder: PathLike) -> str:
    """The absolute path a stored path names: a relative one is relative to ``folder`` (the file's folder)."""
    return resolve_all([cell], folder)[0]


def resolve_all(cells: Sequence[str], folder: PathLike) -> List[str]:
    """:func:`resolve_stored` of every cell (``folder`` resolved once)."""
    base = str(real_path(folder))
    return [os.path.normpath(c if os.path.isabs(c) else os.path.join(base, c)) for c in cells]


def place_in_workspace(record: PathLike) -> Optional[Path]:
    """Where the file ``record`` sits inside the working folder (``results/synthcc/manifest.csv``), or None."""
    ws, r = workspace(), real_path(record)
    return r.relative_to(ws) if is_inside(r, ws) else None


def other_workspace(target: PathLike, record: PathLike) -> Optional[Path]:
    """The workspace other than this one that ``target`` lies in, as seen from ``record``, or None.

    ``record`` is a file of this workspace (a manifest). A folder above ``target`` that holds a file
    at ``record``'s place (its own ``results/<dataset>/manifest.csv``) is another workspace: a file
    recorded there belongs to it (it may regenerate or delete it at any time).
    """
    place = place_in_workspace(record)
    if place is None:
        return None
    ws, t = workspace(), Path(os.path.normpath(os.path.abspath(target)))
    if is_inside(t, ws):
        return None
    for above in t.parents:
        if above != ws and (above / place).is_file():
            return above
    return None


def moved_from(target: PathLike, record: PathLike) -> Optional[Path]:
    """Where this workspace was moved or copied from, when ``target`` (outside it) has a twin in it.

    ``target`` is an absolute path written in the workspace's old place (a file, or a folder two or
    more levels below the old workspace): the highest folder ``A`` above it for which the working
    folder holds ``target``'s place below ``A`` is the old place. None when ``record`` or ``target``
    lies inside the working folder, or no twin exists.
    """
    if place_in_workspace(record) is None:
        return None
    ws, t = workspace(), Path(os.path.normpath(os.path.abspath(target)))
    if is_inside(t, ws):
        return None
    for above in reversed(t.parents):   # the longest relative path first
        rel = t.relative_to(above)
        twin = ws / rel
        if above != ws and (twin.is_file() or (len(rel.parts) >= 2 and twin.is_dir())):
            return above
    return None


def check_data_folder(folder: PathLike, key: str = "data.root") -> None:
    """Refuse a dataset folder (``data.root/<dataset>``) where generating or extracting would destroy outputs.

    A generated dataset is replaced whole when it is regenerated, and an archive is extracted into a
    fresh folder that replaces the old one: inside ``results/`` that takes the manifest, the masks and
    every run with it, and a folder that holds the working folder would take the whole workspace.

    Raises
    ------
    ConfigError
        One line naming ``key``, the folder and a setting that works.
    """
    ws, f = workspace(), real_path(folder)
    results = ws / RESULTS
    if is_inside(f, results):
        raise ConfigError(f"{key}: the dataset folder {f} lies inside {RESULTS}/ of the working folder, where the "
                          f"workflow writes its outputs (the manifests, the masks and every run): set {key} to a "
                          f"folder outside {RESULTS}/, such as the default resources/datasets")
    if is_inside(ws, f):
        raise ConfigError(f"{key}: the dataset folder {f} is the working folder {ws} or holds it, so writing the "
                          f"dataset there would replace the workspace: set {key} to a folder of its own, such as "
                          f"the default resources/datasets")
