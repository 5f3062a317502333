"""Repair advice that repairs: the exact command that rebuilds a damaged file of the workflow.

Snakemake reruns nothing whose outputs exist, so "rerun the stage" is no advice for a file that
exists but is damaged. The hints here name the target to force instead (``snakemake --forcerun
<target>`` reruns the job that writes it and every job downstream of it), and, for a dataset, what
that job does about the damage: SynthCC regenerates a dataset whose files no longer match their
recorded digests; an extracted dataset is re-extracted once its folder is deleted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from .layout import EXTRACT_MARKER, MANIFEST, RESULTS, RUN_MODEL, SYNTHCC_META, fill, pattern_regex

__all__ = ["force_command", "shown_path", "workflow_target", "manifest_target", "model_repair_hint",
           "dataset_repair_hint"]

PathLike = Union[str, os.PathLike]

_MODEL = pattern_regex(RUN_MODEL)
_DEPTH = 8  # how far above an image to look for its dataset's root


def force_command(target: str) -> str:
    """The command that reruns the job writing ``target`` (a path relative to the workflow folder)."""
    return f"snakemake --cores all --forcerun {target}"


def shown_path(path: PathLike) -> str:
    """``path`` relative to the working folder when it lies below it (how Snakemake names targets)."""
    p = Path(path)
    if p.is_absolute():
        try:
            return str(p.relative_to(Path.cwd()))
        except ValueError:
            return str(p)
    return str(p)


def workflow_target(path: PathLike) -> Optional[str]:
    """``path`` as the workflow names it (relative to the working folder, ``results/...``), else None.

    Jobs run in the workflow folder, so a relative path is taken as it is and an absolute one is made
    relative to the current folder when it lies inside it.
    """
    p = Path(path)
    if p.is_absolute():
        try:
            p = p.relative_to(Path.cwd())
        except ValueError:
            return None
    rel = p.as_posix()
    return rel if rel.startswith(f"{RESULTS}/") and ".." not in p.parts else None


def manifest_target(dataset: str) -> str:
    """The download rule's manifest for ``dataset`` (the target that reruns its download job)."""
    return fill(MANIFEST, dataset=dataset)


def model_repair_hint(path: PathLike) -> str:
    """How to rebuild a missing or damaged ``model.pt``: the forced train target when it is one."""
    target = workflow_target(path)
    if target is not None and _MODEL.match(target):
        return f"rebuild it by retraining this run: {force_command(target)}"
    return "retrain the run that writes it (the train rule) or restore the file"


def dataset_repair_hint(path: PathLike) -> str:
    """How to repair a damaged dataset file, from the dataset folder it lies in.

    * SynthCC (a ``synthcc.json`` above it): rerunning its download job regenerates the dataset,
      because a file that differs from ``SHA256SUMS`` makes the generator start again;
    * a folder this pipeline extracted (its extraction marker above it): delete the folder, then
      rerun the download job, which extracts the cached archive again;
    * a folder used in place: only the user has the original.
    """
    p = Path(os.path.abspath(path))
    for parent in list(p.parents)[:_DEPTH]:
        if (parent / SYNTHCC_META).is_file():
            return f"regenerate the dataset: {force_command(manifest_target('synthcc'))}"
        if (parent / EXTRACT_MARKER).is_file():
            return (f"extract the dataset again: delete {parent} and run "
                    f"{force_command(manifest_target(parent.name))}")
    return "replace the file with a good copy from the original dataset, or remove it, and rerun"
