"""The MaskCL two-branch network (Li et al., arXiv 2305.13600; official code MingkunLishigure/SiCL).

Two independent backbones (no weight sharing): the RGB branch sees the augmented image, the mask
branch the person's mask (silhouette or part map, as 3-channel grayscale). A fusion module maps the
*detached* concatenation of both embeddings to a fused embedding (Linear 2D→D, BN with frozen bias,
L2). Each branch has a projection head (Linear D→D, BN with frozen bias, L2) on its pooled feature; only the RGB
one is used, as the student side of the cross-view losses. At test time only the RGB branch runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import ReIDBackbone

__all__ = ["ProjectionHead", "FusionModule", "MaskCLNet", "MaskCLOutput"]


class ProjectionHead(nn.Module):
    """Linear(D→D) + BN (frozen zero bias) + L2 on the pooled feature.

    The official head is ``full_connect`` + ``full_bn`` in SiCL ``maskcl/models/resnet.py`` (lines 73-81):
    its BatchNorm bias is frozen at zero, like the BN neck's and the fusion module's, so it is neither
    trained nor weight-decayed.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        self.bn = nn.BatchNorm1d(dim)
        self.bn.bias.requires_grad_(False)
        nn.init.kaiming_normal_(self.fc.weight, mode="fan_out")
        nn.init.zeros_(self.fc.bias)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.bn(self.fc(pooled)), dim=1)


class FusionModule(nn.Module):
    """Linear(2D→D, Kaiming fan-out, zero bias) + BN (frozen bias) + L2 on detached inputs."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(2 * dim, dim)
        nn.init.kaiming_normal_(self.fc.weight, mode="fan_out")
        nn.init.zeros_(self.fc.bias)
        self.bn = nn.BatchNorm1d(dim)
        self.bn.bias.requires_grad_(False)

    def forward(self, f_rgb: torch.Tensor, f_mask: torch.Tensor) -> torch.Tensor:
        x = torch.cat([f_rgb.detach(), f_mask.detach()], dim=1)  # N×2D, no gradient into the branches
        return F.normalize(self.bn(self.fc(x)), dim=1)


@dataclass
class MaskCLOutput:
    f_rgb: torch.Tensor   # N×D normalised RGB embedding
    g_rgb: torch.Tensor   # N×D normalised RGB projection (cross-view student)
    f_mask: torch.Tensor  # N×D normalised mask embedding
    f_fused: torch.Tensor  # N×D normalised fused embedding


class MaskCLNet(nn.Module):
    """RGB branch, mask branch, fusion and the RGB projection head."""

    def __init__(self, rgb: ReIDBackbone, mask: ReIDBackbone) -> None:
        super().__init__()
        if rgb.dim != mask.dim:
            raise ValueError("both branches must have the same feature dimension")
        self.rgb = rgb
        self.mask = mask
        self.dim = rgb.dim
        self.proj_rgb = ProjectionHead(self.dim)
        self.fusion = FusionModule(self.dim)

    def forward(self, x_rgb: torch.Tensor, x_mask: torch.Tensor) -> MaskCLOutput:
        f_r, pooled_r = self.rgb(x_rgb)
        f_m, _ = self.mask(x_mask)
        return MaskCLOutput(f_rgb=f_r, g_rgb=self.proj_rgb(pooled_r), f_mask=f_m,
                            f_fused=self.fusion(f_r, f_m))
