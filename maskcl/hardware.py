"""What hardware produced a number: the record a training job writes into ``model.pt``.

CPU training is deterministic for a given CPU model and thread count, not across them (docs/training.md,
"Where we differ"), and GPU results move with the GPU count, the BatchNorm batch and the precision, so
every model carries the facts needed to tell two of its runs apart.
"""

from __future__ import annotations

import os
import platform
from typing import Any, Dict, List, Optional

__all__ = ["cpu_model", "describe_hardware", "training_hardware"]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``; ``unknown``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip() or "unknown"
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def training_hardware(device: Any, *, world_size: int = 1, bn_groups: int = 1, batch_size: Optional[int] = None,
                      amp: str = "off") -> Dict[str, Any]:
    """Device kind and names, CPU model, torch threads, process layout, BatchNorm batch, precision, versions.

    ``device`` is this job's ``torch.device``; the per-device BatchNorm batch is the batch split over the
    ``max(bn_groups, world_size)`` groups that normalise it.
    """
    import torch

    kind = torch.device(device).type
    names: List[str] = []
    if kind == "cuda" and torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    groups = max(int(bn_groups), int(world_size))
    return {
        "device": kind,
        "gpu_names": names,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "world_size": int(world_size),
        "bn_groups": groups,
        "bn_batch": (int(batch_size) // groups) if batch_size else None,
        "precision": "float32" if kind != "cuda" or amp == "off" else amp,
        "torch": str(torch.__version__),  # a str subclass that weights-only loading refuses
        "cuda": str(torch.version.cuda) if torch.version.cuda else None,
    }


def describe_hardware(record: Optional[Dict[str, Any]], *, bn_batch: bool = True) -> str:
    """One phrase for a table footnote or a model card: what trained a model (``unrecorded`` when nothing).

    ``record`` is :func:`training_hardware`'s dict as ``model.pt`` stores it. The phrase holds what moves
    the numbers: the devices (GPU names and count, or the CPU model and torch threads), the process
    layout (world size, BatchNorm groups and the per-group batch), the precision and the torch/CUDA versions.
    ``bn_batch=False`` leaves out the per-group batch but keeps the group count: the tables compare
    methods whose recipes have different batches, which is no difference of hardware.
    """
    if not record:
        return "unrecorded"
    r = record
    if r.get("device") == "cuda":
        names = list(r.get("gpu_names") or [])
        used = int(r.get("world_size") or 1)
        name = names[0] if names and len(set(names)) == 1 else (" + ".join(names) or "GPU")
        where = f"{used}× {name}"
    else:
        threads = r.get("torch_threads", "?")
        where = f"CPU {r.get('cpu_model', 'unknown')}, {threads} thread{'' if threads == 1 else 's'}"
        if int(r.get("world_size") or 1) > 1:
            where += f", {r['world_size']} processes"
    parts = [where]
    groups = int(r.get("bn_groups") or 1)
    if bn_batch and r.get("bn_batch"):
        parts.append(f"BatchNorm batch {r['bn_batch']}" + (f" × {groups} groups" if groups > 1 else ""))
    elif groups > 1:
        parts.append(f"BatchNorm in {groups} groups")
    parts.append(str(r.get("precision", "precision unrecorded")))
    versions = f"torch {r['torch']}" if r.get("torch") else "torch unrecorded"
    if r.get("device") == "cuda" and r.get("cuda"):
        versions += f", CUDA {r['cuda']}"
    parts.append(versions)
    return "; ".join(parts)
