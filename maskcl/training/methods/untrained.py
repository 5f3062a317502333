"""The untrained reference: the initial network, exported without a training step.

The engine sees ``facts.trains`` False and writes the network as every method starts it (random
weights, ImageNet's or the shared self-supervised warm-up, per ``train.pretrained``) with an empty
training log. Its facts: ``maskcl/methods/untrained.py``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...methods.untrained import UNTRAINED
from ...models.backbone import ReIDBackbone
from ..data import TrainData
from ..settings import TrainSettings
from .base import MethodBase, backbone_of, register_method

__all__ = ["UntrainedMethod"]


@register_method(UNTRAINED)
class UntrainedMethod(MethodBase):
    """Reference: the network as every method starts it (same ``pretrained``, arch, pooling), never trained.

    Its row says what the initialisation alone scores, so a method's gain over it is visible; with
    ``pretrained: ssl`` it is the shared warm-up every method and the supervised bound start from.
    """

    def __init__(self, settings: TrainSettings, data: TrainData, device: torch.device, **kw: Any) -> None:
        super().__init__(settings, data, device, **kw)
        self.module = nn.ModuleDict({"net": backbone_of(settings)})
        self._to_device(self.module)

    def rgb_backbone(self) -> ReIDBackbone:
        return self.module["net"]  # type: ignore[return-value]
