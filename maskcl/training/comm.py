"""The communication contract between a training method and its process layout (one process or DDP).

The official MaskCL code trains under ``nn.DataParallel``: one process scatters each batch of B into W
contiguous chunks, every GPU normalises BatchNorm over its own chunk, only chunk 0's running statistics
survive, and the memories see the whole batch. We reproduce exactly that with DDP, so that a W-rank
run equals a one-process run with ``bn_groups = W`` and the same global batch B:

- every rank draws the same global batch list from the seeded sampler and keeps its contiguous slice
  (rank r: positions [r·B/W, (r+1)·B/W)), DataParallel's scatter; augmentations are seeded per sample
  (``maskcl.training.data``), so a sample's view does not depend on which rank loads it;
- the networks (never the memories) are wrapped in DDP with forward buffer syncing, so BatchNorm
  running statistics follow rank 0 = chunk 0; every loss term is a batch mean, so DDP's gradient
  average is the full-batch gradient;
- memory updates are all-gathered in rank order (= global batch order) and applied on every rank, so
  the memories stay identical without ever being broadcast;
- a loss that compares this rank's samples with tensors of the whole batch (ISE's supports) reads them
  through ``gather_with_grad``: all-gathered in rank order, and in the backward each rank's rows get
  their gradient summed over every rank's loss, so DDP's average is again the full-batch gradient;
- clustering runs on rank 0 and its result is broadcast; eval-mode feature extraction is sharded over
  the ranks and all-gathered; the neighbour-loss gates are drawn for the global batch and sliced;
- rank 0 alone writes checkpoints, ``model.pt`` and the logs; every rank loads a checkpoint on resume;
  per-epoch losses are averaged over ranks (= global-batch means).

The single-process code paths call the same hooks on :class:`LocalComm`, where each is the identity,
so ``world_size = 1`` is untouched. This module is the bottom of the training package (the engine
and the methods use it); starting the ranks is ``maskcl.training.launch``, a rank's entry point
``maskcl.training.rank``.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from datetime import timedelta
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

import torch
from torch import nn
from torch.utils.data import Subset

from ..models.features import extract_features
from .settings import TrainSettings

__all__ = ["COLLECTIVE_TIMEOUT_MIN", "LocalComm", "DistComm"]

T = TypeVar("T")
#: How long a rank waits in a collective (NCCL's default, 10 min, is shorter than a large clustering).
COLLECTIVE_TIMEOUT_MIN = 120


# ------------------------------------------------------------------------------------------------
class LocalComm:
    """One process: the whole batch, no collectives. Every hook is the identity."""

    rank = 0
    world_size = 1
    is_main = True
    #: the rank's own device; None lets the engine select one (``maskcl.devices``)
    device: Optional[torch.device] = None

    def method_settings(self, s: TrainSettings) -> TrainSettings:
        """Settings the method is built with on this rank (its share of the BatchNorm groups)."""
        return s

    def forward(self, net: nn.Module, *inputs: Any) -> Any:
        """A training-mode forward of ``net`` that takes part in gradient averaging."""
        return net(*inputs)

    def extract(self, model: nn.Module, paths: Sequence[str], transform: Callable, **kw: Any) -> torch.Tensor:
        """Eval-mode N×D features of the images ``paths`` in order (``maskcl.models.features``)."""
        return torch.from_numpy(extract_features(model, paths, transform, **kw))

    def on_main(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """``fn(*args, **kw)`` computed once (rank 0), its result given to every rank."""
        return fn(*args, **kw)

    def gather(self, *tensors: torch.Tensor) -> List[torch.Tensor]:
        """Each tensor's rows from every rank, concatenated in rank order (= global batch order)."""
        return list(tensors)

    def gather_with_grad(self, t: torch.Tensor) -> torch.Tensor:
        """:meth:`gather` of one tensor that stays in the autograd graph: this rank's rows are ``t`` itself,
        and the backward hands each rank the gradient of its rows summed over every rank's loss."""
        return t

    def local_part(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous rows of a global-batch tensor (inverse of :meth:`gather`)."""
        return t

    def local_batch(self, batch: Sequence[T]) -> List[T]:
        """This rank's contiguous slice of a global batch (DataParallel's scatter)."""
        return list(batch)

    def mean(self, values: Dict[str, float]) -> Dict[str, float]:
        """Per-key mean over ranks (equal local batches: the global-batch mean)."""
        return values

    def barrier(self) -> None:
        """Wait until every rank gets here."""


class DistComm(LocalComm):
    """One rank of a torchrun job: process group, own device, and the collectives of the contract.

    Parameters
    ----------
    device : torch.device
        ``cuda:LOCAL_RANK`` (of the GPUs the launcher exposed through ``CUDA_VISIBLE_DEVICES``) or cpu.
    backend : str
        ``nccl`` or ``gloo``; the process group is initialised from torchrun's environment.
    """

    def __init__(self, device: torch.device, backend: str) -> None:
        import torch.distributed as dist

        self.dist = dist
        # rank 0 clusters (minutes on a large dataset) while the others wait in a broadcast
        timeout = timedelta(minutes=COLLECTIVE_TIMEOUT_MIN)
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group(backend=backend, device_id=device, timeout=timeout)
        else:
            dist.init_process_group(backend=backend, timeout=timeout)
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.is_main = self.rank == 0
        self.device = device
        self._wrapped: Dict[int, nn.Module] = {}

    def close(self) -> None:
        if self.dist.is_initialized():
            self.dist.destroy_process_group()

    # -- settings and batches --------------------------------------------------------------------
    def method_settings(self, s: TrainSettings) -> TrainSettings:
        # W ranks × local groups = max(bn_groups, W) groups over the global batch, chunk 0 on rank 0
        return dataclasses.replace(s, bn_groups=max(s.bn_groups, self.world_size) // self.world_size)

    def _span(self, n: int) -> Tuple[int, int]:
        per = n // self.world_size
        return self.rank * per, (self.rank + 1) * per

    def local_batch(self, batch: Sequence[T]) -> List[T]:
        lo, hi = self._span(len(batch))
        return list(batch[lo:hi])

    def local_part(self, t: torch.Tensor) -> torch.Tensor:
        lo, hi = self._span(t.shape[0])
        return t[lo:hi]

    # -- networks ---------------------------------------------------------------------------------
    def forward(self, net: nn.Module, *inputs: Any) -> Any:
        ddp = self._wrapped.get(id(net))
        if ddp is None:
            ddp = self._wrap(net)
            self._wrapped[id(net)] = ddp
        return ddp(*inputs)

    def _wrap(self, net: nn.Module) -> nn.Module:
        """DDP around ``net``; built at its first training forward, i.e. after any checkpoint load."""
        from torch.nn.parallel import DistributedDataParallel

        kw: Dict[str, Any] = {}
        # BatchNorm buffers are broadcast from rank 0 before every forward (= DataParallel's chunk 0)
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
            kw["forward_sync_buffers"] = True
        else:
            kw["broadcast_buffers"] = True
        # ablations leave whole heads unused (e.g. train.fusion_loss false); their grads stay None,
        # as in one process, so Adam skips them there and here alike
        return DistributedDataParallel(net, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                       find_unused_parameters=True, **kw)

    # -- collectives ------------------------------------------------------------------------------
    def _on_dev(self, t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(self.device).contiguous()

    def gather(self, *tensors: torch.Tensor) -> List[torch.Tensor]:
        out = []
        for t in tensors:
            x = self._on_dev(t)
            parts = [torch.empty_like(x) for _ in range(self.world_size)]
            self.dist.all_gather(parts, x)
            out.append(torch.cat(parts, dim=0).to(t.device))
        return out

    def gather_with_grad(self, t: torch.Tensor) -> torch.Tensor:
        return _GatherWithGrad.apply(t, self)

    def mean(self, values: Dict[str, float]) -> Dict[str, float]:
        keys = list(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self.device)
        self.dist.all_reduce(t)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist())}

    def barrier(self) -> None:
        self.dist.barrier()

    def on_main(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        box: List[Any] = [None]
        if self.is_main:
            try:
                box = [("ok", fn(*args, **kw))]
            except Exception as e:  # every rank must leave the broadcast, then rank 0 re-raises
                box = [("error", f"{type(e).__name__}: {e}")]
                self.dist.broadcast_object_list(box, src=0)
                raise
        self.dist.broadcast_object_list(box, src=0)
        status, value = box[0]
        if status != "ok":
            raise RuntimeError(f"rank 0 failed in {getattr(fn, '__name__', fn)}: {value}")
        return value

    def extract(self, model: nn.Module, paths: Sequence[str], transform: Callable, **kw: Any) -> torch.Tensor:
        """Each rank extracts a contiguous shard; the shards are all-gathered in order."""
        dist = self.dist
        for b in model.buffers():  # running statistics of rank 0 (others drift after their last step)
            dist.broadcast(b.data, src=0)
        n = len(paths)
        per = math.ceil(n / self.world_size)
        lo, hi = min(n, self.rank * per), min(n, (self.rank + 1) * per)
        local = None
        if hi > lo:
            if kw.get("dataset") is not None:  # a dataset in the order of paths: this rank's rows of it
                kw = {**kw, "dataset": Subset(kw["dataset"], range(lo, hi))}
            local = torch.from_numpy(extract_features(model, list(paths)[lo:hi], transform, **kw))
        dim = torch.tensor([0 if local is None else local.shape[1]], device=self.device)
        dist.all_reduce(dim, op=dist.ReduceOp.MAX)
        buf = torch.zeros(per, int(dim.item()), device=self.device)
        if local is not None:
            buf[:hi - lo] = local.to(self.device)
        parts = [torch.empty_like(buf) for _ in range(self.world_size)]
        dist.all_gather(parts, buf)
        counts = [max(0, min(n, (r + 1) * per) - min(n, r * per)) for r in range(self.world_size)]
        return torch.cat([p[:c] for p, c in zip(parts, counts)], dim=0).cpu()


class _GatherWithGrad(torch.autograd.Function):
    """All-gather in rank order whose backward sums the gradient over the ranks and keeps this rank's rows.

    A loss on rank r that reads every rank's rows (ISE's label-preserving loss compares this rank's
    samples with the supports of the whole batch) has a gradient for the rows of every rank; the
    backward all-reduces the gathered gradient, so rank q's rows get the sum over all ranks' losses,
    and DDP's average of the parameter gradients is the gradient of the mean over ranks, as one
    process computes it on the whole batch. Every rank must call it, in the same order.
    """

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor, comm: "DistComm") -> torch.Tensor:  # type: ignore[override]
        ctx.comm = comm
        ctx.rows = t.shape[0]
        x = comm._on_dev(t)
        parts = [torch.empty_like(x) for _ in range(comm.world_size)]
        comm.dist.all_gather(parts, x)
        parts[comm.rank] = x  # the same values; the graph is kept through the local slice by backward below
        return torch.cat(parts, dim=0).to(t.device)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):  # type: ignore[override]
        comm = ctx.comm
        g = comm._on_dev(grad)
        comm.dist.all_reduce(g)
        lo = comm.rank * ctx.rows
        return g[lo:lo + ctx.rows].to(grad.device), None
