"""Seeding and device helpers shared by the training engine and the SSL warm-up.

One place for how a run is seeded (python, numpy and torch from (seed, epoch)), how DataLoader
workers are seeded, and how ``train.device`` becomes this job's device, so that both stages draw
their random numbers the same way.
"""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["resolve_device", "seed_everything", "worker_init"]


def resolve_device(spec: str = "auto") -> torch.device:
    """``train.device`` → this job's device; ``auto`` claims a GPU of its own (``maskcl.devices``)."""
    from .. import devices  # looked up per call, so the one device helper can be swapped (tests)

    return devices.select_device(spec, key="train.device")


def seed_everything(seed: int, epoch: int = 0) -> None:
    """Seed python, numpy and torch from (seed, epoch)."""
    s = int(np.random.SeedSequence([seed, epoch, 0x4D43]).generate_state(1)[0])
    random.seed(s)
    np.random.seed(s % (2**32))
    torch.manual_seed(s)


def worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed python and numpy from the worker's torch seed."""
    s = torch.initial_seed() % (2**32)
    random.seed(s)
    np.random.seed(s)
