"""ReID backbones: torchvision ResNets with last stride 1, a BN neck and L2-normalised output.

This is the backbone of ClusterContrast and MaskCL (``maskcl/models/resnet.py`` in the official code):
ResNet-50 (ResNet-18 for CPU runs), the stride of the last stage set to 1 so a 256×128 input keeps a
16×8 feature map, global pooling, BatchNorm1d with a frozen zero bias, and no classifier. In training
mode the model also returns the pooled (pre-neck) feature so that method heads (MaskCL's projection
head) can use it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError
from ..registry import Registry

__all__ = ["BACKBONES", "POOLINGS", "ReIDBackbone", "GeneralizedMeanPooling", "build_backbone", "load_pretrained",
           "feature_dim"]

log = logging.getLogger(__name__)

#: Backbone name → (torchvision constructor name, ImageNet weights enum name, feature dim).
BACKBONES = Registry("backbone")
for _name, _dim in (("resnet18", 512), ("resnet34", 512), ("resnet50", 2048), ("resnet101", 2048)):
    BACKBONES.register(_name, _dim)
#: Global poolings of the backbone (``train.pooling``).
POOLINGS = ("avg", "gem")


def feature_dim(arch: str) -> int:
    return int(BACKBONES.get(arch))


class GeneralizedMeanPooling(nn.Module):
    """GeM pooling with a trainable exponent p (ClusterContrast's ``--pooling-type gem``)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x.clamp(min=self.eps).pow(self.p), 1).pow(1.0 / self.p)


def _torchvision_resnet(arch: str) -> nn.Module:
    import torchvision

    ctor = getattr(torchvision.models, arch)
    return ctor(weights=None)


def load_pretrained(trunk: nn.Module, arch: str, pretrained: str) -> str:
    """Load initial weights into a torchvision ResNet trunk.

    ``pretrained`` is ``none``, ``imagenet`` (torchvision's ImageNet weights, downloaded into the torch
    hub cache on first use) or a path to a file holding a state dict (plain, or under ``state_dict`` /
    ``backbone``; e.g. the output of our self-supervised warm-up stage). Returns a description for logs.
    """
    if pretrained in (None, "", "none"):
        return "random init"
    if pretrained == "imagenet":
        import torchvision

        enum_name = {"resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights",
                     "resnet50": "ResNet50_Weights", "resnet101": "ResNet101_Weights"}[arch]
        weights = getattr(torchvision.models, enum_name).IMAGENET1K_V1
        try:
            state = weights.get_state_dict(progress=False)
        except Exception as e:  # network errors surface as URLError/OSError/RuntimeError
            hub = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
            raise CheckpointError(
                f"train.pretrained: imagenet needs torchvision's {arch} ImageNet weights from {weights.url}, "
                f"which could not be fetched ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else e}); "
                f"download that file to {hub}, or set train.pretrained to none or to a weights file") from None
        missing, unexpected = trunk.load_state_dict(state, strict=False)
        bad = [k for k in missing if not k.startswith("fc.")]
        if bad:
            raise CheckpointError(f"ImageNet weights for {arch} are missing keys {bad[:5]}")
        return f"ImageNet ({weights.url})"
    path = Path(pretrained)
    if not path.is_file():
        raise CheckpointError(f"train.pretrained: {path} does not exist; set it to none, imagenet, or an "
                              f"existing weights file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"train.pretrained: {path} is not a safe torch weights file "
                              f"({type(e).__name__}); only tensors/dicts are accepted") from None
    state = obj
    for key in ("backbone", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise CheckpointError(f"train.pretrained: {path} does not hold a state dict")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    own = trunk.state_dict()
    missing = [k for k in own if k not in state and not k.startswith("fc.")]
    shaped = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or shaped:
        raise CheckpointError(f"train.pretrained: {path} does not fit {arch}: {len(missing)} missing keys "
                              f"(e.g. {missing[:3]}), {len(shaped)} mis-shaped (e.g. {shaped[:3]})")
    trunk.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return f"weights file {path}"


class ReIDBackbone(nn.Module):
    """ResNet trunk → pooling → BN neck (frozen bias) → L2 normalisation.

    ``forward`` returns the normalised neck feature (N, D) in eval mode and the tuple
    (normalised neck feature, pooled feature) in training mode.
    """

    def __init__(self, arch: str = "resnet50", pretrained: str = "none", last_stride: int = 1,
                 pooling: str = "avg") -> None:
        super().__init__()
        self.arch = arch
        self.dim = feature_dim(arch)
        trunk = _torchvision_resnet(arch)
        self.init_source = load_pretrained(trunk, arch, pretrained)
        if last_stride == 1:
            block = trunk.layer4[0]
            if hasattr(block, "conv2") and block.conv2.stride == (2, 2) and arch not in ("resnet18", "resnet34"):
                block.conv2.stride = (1, 1)
            else:
                block.conv1.stride = (1, 1)
            block.downsample[0].stride = (1, 1)
        self.base = nn.Sequential(trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool,
                                  trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4)
        if pooling == "avg":
            self.pool: nn.Module = nn.AdaptiveAvgPool2d(1)
        elif pooling == "gem":
            self.pool = GeneralizedMeanPooling()
        else:
            raise ValueError(f"unknown pooling {pooling!r} ({' or '.join(POOLINGS)})")
        self.neck = nn.BatchNorm1d(self.dim)
        self.neck.bias.requires_grad_(False)
        nn.init.constant_(self.neck.weight, 1.0)
        nn.init.constant_(self.neck.bias, 0.0)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        pooled = self.pool(self.base(x)).flatten(1)  # N×D
        feat = F.normalize(self.neck(pooled), dim=1)
        if self.training:
            return feat, pooled
        return feat

    def trunk_state_dict(self) -> Dict[str, torch.Tensor]:
        """The trunk's weights under torchvision names (for ``pretrained: <path>``)."""
        names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
        out: Dict[str, torch.Tensor] = {}
        for prefix, module in zip(names, self.base):
            for k, v in module.state_dict().items():
                out[f"{prefix}.{k}"] = v.detach().clone()
        return out


def build_backbone(arch: str = "resnet50", pretrained: str = "none", last_stride: int = 1,
                   pooling: str = "avg") -> ReIDBackbone:
    model = ReIDBackbone(arch, pretrained=pretrained, last_stride=last_stride, pooling=pooling)
    log.info("backbone %s (%d-d), init: %s", arch, model.dim, model.init_source)
    return model
