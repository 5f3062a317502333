"""What every method shares: the registry, the decorator that registers a method against its facts, the base class.

A method owns ``module`` (everything trainable plus memory buffers, saved in checkpoints) and
implements ``start`` (once, on a fresh run), ``prepare_epoch`` (pseudo-labels), ``step`` (loss) and
``after_step`` (memory updates); the engine (``maskcl.training.engine``) runs them. The process
layout reaches a method as ``comm`` (``maskcl.training.comm``); the training split as ``TrainData``
(``maskcl.training.data``). What a method *is* (masks, training, switches, labels) is its facts
record (``maskcl.methods``), which the decorator attaches as ``facts``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Type, TypeVar

import numpy as np
import torch
from torch import nn

from ...methods import MethodFacts, get_method
from ...models.backbone import ReIDBackbone, build_backbone
from ...models.images import load_rgb
from ...registry import Registry
from ..batches import CachedEval, DecodedImages, View
from ..comm import LocalComm
from ..data import TrainData
from ..settings import TrainSettings
from ..transforms import test_transform


__all__ = ["METHODS", "MethodBase", "register_method", "backbone_of"]

#: Method name → its ``MethodBase`` subclass, called as ``cls(settings, data, device)`` (``METHODS.build``).
METHODS = Registry("method implementation")

M = TypeVar("M", bound=Type["MethodBase"])


def register_method(facts: MethodFacts) -> Callable[[M], M]:
    """Class decorator: register a ``MethodBase`` subclass as the method ``facts`` declares.

    The facts must be registered (``maskcl.methods.register_method_facts``): the workflow reads them
    without importing this package. The class gets them as ``facts``.
    """
    def add(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, MethodBase)):
            raise TypeError(f"method {facts.name}: register_method decorates a MethodBase subclass, not {cls!r}")
        if get_method(facts.name) is not facts:
            raise ValueError(f"method {facts.name}: its facts are not the registered ones; register them in "
                             f"maskcl/methods/__init__.py")
        cls.facts = facts
        METHODS.register(facts.name, cls)
        return cls
    return add


def backbone_of(s: TrainSettings) -> ReIDBackbone:
    """The backbone every method starts from (architecture, initial weights, last stride, pooling)."""
    return build_backbone(s.arch, pretrained=s.pretrained, last_stride=s.last_stride, pooling=s.pooling)


class MethodBase:
    """The hooks the engine calls and the helpers every method uses (feature extraction, device moves)."""

    facts: MethodFacts  # set by ``register_method``

    def __init__(self, settings: TrainSettings, data: TrainData, device: torch.device,
                 batch_size_eval: int = 128) -> None:
        self.s = settings
        self.data = data
        self.device = device
        self.size = (settings.height, settings.width)
        self.eval_batch = batch_size_eval
        self.labels: np.ndarray = np.zeros(len(data), dtype=np.int64)
        self.module: nn.Module
        self.step_seed = 0  # set by the engine before every step
        self.comm = LocalComm()  # process layout; the engine gives each DDP rank its own (maskcl.training.comm)
        self.cache: Optional[DecodedImages] = None  # the decoded training split, when the engine holds one

    # hooks --------------------------------------------------------------------------------------
    def start(self) -> None:
        """One-time initialisation on a fresh run (not on resume)."""

    def extra_state(self) -> Dict[str, Any]:
        return {"labels": torch.as_tensor(self.labels)}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        self.labels = state["labels"].numpy()

    def load_module_state(self, state: Dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)

    def _to_device(self, m: nn.Module) -> nn.Module:
        m = m.to(self.device)
        if self.device.type == "cuda" and self.s.channels_last in ("auto", "on"):
            m = m.to(memory_format=torch.channels_last)
        return m

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.device.type == "cuda" and self.s.channels_last in ("auto", "on"):
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def rgb_backbone(self) -> ReIDBackbone:
        raise NotImplementedError

    def views(self) -> Optional[Tuple[View, ...]]:
        """The batch of ``dataset()`` as views of the decoded cache (``maskcl.training.batches``), or None.

        A method that declares them trains on batches augmented whole from images decoded once, equal
        bit for bit to ``dataset()``'s (tests/test_batches.py checks every method's); None keeps the
        per-sample path.
        """
        return None

    def export(self) -> Dict[str, Any]:
        """Content of ``model.pt`` beyond what the engine adds."""
        return {"state_dict": {k: v.detach().cpu() for k, v in self.rgb_backbone().state_dict().items()}}

    def _extract(self, net: nn.Module, paths: Sequence[str], grayscale: bool = False,
                 reader: Callable[[str], Any] = load_rgb) -> torch.Tensor:
        """Raw (not normalised) eval-mode features of ``paths`` through the process layout's extractor.

        The training images or their masks are read from the decoded cache when the engine holds one
        (the same tensors as the files through ``test_transform``, bit for bit).
        """
        cached = None
        if self.cache is not None:
            if paths is self.data.paths:
                cached = CachedEval(self.cache.image, grayscale)
            elif paths is self.data.mask_paths and self.cache.mask is not None:
                cached = CachedEval(self.cache.mask, grayscale)
        return self.comm.extract(net, paths, test_transform(self.size, grayscale=grayscale),
                                 batch_size=self.eval_batch, device=self.device,
                                 num_workers=0 if cached is not None else self.s.workers,
                                 channels_last=self.s.channels_last, normalize=False, reader=reader,
                                 log_summary=False, dataset=cached)

    def _extract_rgb(self, net: nn.Module) -> torch.Tensor:
        return self._extract(net, self.data.paths)
