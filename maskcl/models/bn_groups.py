"""BatchNorm over sub-batches: DataParallel's BN behaviour on one device.

Under ``nn.DataParallel`` with G GPUs each replica normalises its own contiguous 1/G of the batch, and
only the first replica's running statistics survive. The official MaskCL code was tuned that way
(its authors report 10–20 points lost on one GPU). ``convert_bn_groups(model, G)`` reproduces it on
one device: in training every BatchNorm normalises each contiguous chunk with the chunk's own
statistics and updates its running statistics from chunk 0 only. Eval mode is unchanged, and the
state-dict keys are those of ordinary BatchNorm (the converted modules are BatchNorm subclasses
sharing the original parameters and buffers), like ``SyncBatchNorm.convert_sync_batchnorm``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GroupedBatchNorm1d", "GroupedBatchNorm2d", "convert_bn_groups"]


def _grouped_forward(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, groups: int) -> torch.Tensor:
    if x.shape[0] % groups != 0:
        raise ValueError(f"batch of {x.shape[0]} cannot be split into {groups} BN groups")
    out = []
    for i, c in enumerate(x.chunk(groups, dim=0)):
        if i == 0 and bn.track_running_stats:
            bn.num_batches_tracked.add_(1)
            momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            out.append(F.batch_norm(c, bn.running_mean, bn.running_var, bn.weight, bn.bias, True,
                                    momentum, bn.eps))
        else:
            out.append(F.batch_norm(c, None, None, bn.weight, bn.bias, True, 0.0, bn.eps))
    return torch.cat(out, dim=0)


class GroupedBatchNorm1d(nn.BatchNorm1d):
    groups: int = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.groups > 1:
            return _grouped_forward(self, x, self.groups)
        return super().forward(x)


class GroupedBatchNorm2d(nn.BatchNorm2d):
    groups: int = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.groups > 1:
            return _grouped_forward(self, x, self.groups)
        return super().forward(x)


def _convert(bn: nn.modules.batchnorm._BatchNorm, groups: int) -> nn.Module:
    cls = GroupedBatchNorm2d if isinstance(bn, nn.BatchNorm2d) else GroupedBatchNorm1d
    new = cls(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
              track_running_stats=bn.track_running_stats)
    new.groups = groups
    if bn.affine:
        new.weight = bn.weight
        new.bias = bn.bias
    if bn.track_running_stats:
        new.running_mean = bn.running_mean
        new.running_var = bn.running_var
        new.num_batches_tracked = bn.num_batches_tracked
    new.train(bn.training)
    return new


def convert_bn_groups(module: nn.Module, groups: int) -> nn.Module:
    """Replace every BatchNorm1d/2d in ``module`` (in place) by a grouped one; returns ``module``."""
    if groups <= 1:
        return module
    for name, child in list(module.named_children()):
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)) and not isinstance(
                child, (GroupedBatchNorm1d, GroupedBatchNorm2d)):
            setattr(module, name, _convert(child, groups))
        else:
            convert_bn_groups(child, groups)
    return module
