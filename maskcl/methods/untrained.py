"""The untrained reference's facts (the method: ``maskcl/training/methods/untrained.py``).

The network as every method starts it (random weights, ImageNet's or the shared self-supervised
warm-up, per ``train.pretrained``), exported without a training step: the row every method's gain
is measured against.
"""

from __future__ import annotations

from .facts import MethodFacts

__all__ = ["UNTRAINED"]

UNTRAINED = MethodFacts(
    name="untrained",
    display_name="untrained network (reference)",
    short_name="untrained network",
    citation="no method: the initial network of every method, evaluated without training",
    group="reference",
    uses_masks=False,
    trains=False,
)
