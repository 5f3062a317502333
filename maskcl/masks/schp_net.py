"""The SCHP human parser ("AugmentCE2P", Li et al., TPAMI 2020) in plain PyTorch.

Paper: "Self-Correction for Human Parsing", https://arxiv.org/abs/1910.09777. The released code
builds this network on InPlaceABN, a compiled CUDA/C++ extension that cannot be imported on a CPU
machine; here every ABN is an ordinary module with the same parameter names, so the official
checkpoints load with strict key matching and the model runs anywhere.

Layout (module names are the checkpoint's keys without ``module.``):

* backbone: ResNet-101 with a deep stem (three 3x3 convs, 3→64→64→128), Bottleneck blocks
  [3, 4, 23, 3], stride on the 3x3 conv, layer4 dilated (dilation 2, stride 1): output stride 16;
* ``context_encoding``: PSP pooling (1, 2, 3, 6) + 3x3 bottleneck, 2048 → 512 channels;
* ``decoder``: PSP output upsampled to layer1 resolution and fused with a 48-channel layer1 skip;
* ``edge``: 1x1 convs on layer1..3 plus a shared 3x3 edge classifier;
* ``fushion`` (sic): 1x1 convs over [parsing features, edge features] → class logits at stride 4.

Shapes for a 473x473 input: stem 237, layer1 119, layer2 60, layer3/4 30; logits N×C×119×119.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ABN", "Bottleneck", "PSPModule", "EdgeModule", "DecoderModule", "AugmentCE2P", "build_schp"]

_EPS = 1e-5
_SLOPE = 0.01


def _resize(x: Tensor, size: Tuple[int, int]) -> Tensor:
    # Every internal resize of the official network is bilinear with align_corners=True.
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class ABN(nn.Module):
    """Inference replacement of InPlaceABN: batch norm with scale ``|w| + eps``, optional leaky ReLU.

    InPlaceABN's kernels compute ``(x - mean) / sqrt(var + eps) * (|weight| + eps) + bias``; using
    the raw weight (as a plain ``BatchNorm2d`` would) changes the logits wherever a stored weight is
    negative. The module holds exactly ``weight``, ``bias``, ``running_mean`` and ``running_var``
    (no ``num_batches_tracked``), the four keys InPlaceABN saves.

    Parameters
    ----------
    num_features : int
        Channels.
    activation : {"none", "leaky_relu"}
        The backbone's ABNs use "none" (a plain ReLU follows in the block); the head's use
        "leaky_relu" with slope 0.01, InPlaceABN's default.
    """

    def __init__(self, num_features: int, activation: str = "leaky_relu", slope: float = _SLOPE,
                 eps: float = _EPS) -> None:
        super().__init__()
        if activation not in ("none", "leaky_relu"):
            raise ValueError(f"ABN activation must be 'none' or 'leaky_relu', got {activation!r}")
        self.num_features = num_features
        self.activation = activation
        self.slope = slope
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        # Inference only: batch statistics (training) are not needed to run released checkpoints.
        scale = self.weight.abs() + self.eps
        y = F.batch_norm(x, self.running_mean, self.running_var, scale, self.bias,
                         training=False, momentum=0.0, eps=self.eps)
        if self.activation == "leaky_relu":
            y = F.leaky_relu(y, self.slope)
        return y

    def extra_repr(self) -> str:
        return f"{self.num_features}, activation={self.activation}, eps={self.eps}"


def _backbone_bn(channels: int) -> ABN:
    return ABN(channels, activation="none")


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride and dilation on the 3x3 conv)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = _backbone_bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation,
                               bias=False)
        self.bn2 = _backbone_bn(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = _backbone_bn(planes * 4)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual)


def _conv_abn(cin: int, cout: int, kernel: int = 1) -> nn.Sequential:
    """1x1 (or kxk) conv without bias + leaky ABN: the head's building block (keys ``.0``/``.1``)."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), ABN(cout))


class PSPModule(nn.Module):
    """Pyramid pooling: per-size pooled priors, upsampled and concatenated with the features."""

    def __init__(self, features: int = 2048, out_features: int = 512,
                 sizes: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.stages = nn.ModuleList([
            nn.Sequential(nn.AdaptiveAvgPool2d(s), nn.Conv2d(features, out_features, 1, bias=False),
                          ABN(out_features))
            for s in sizes])
        self.bottleneck = _conv_abn(features + len(sizes) * out_features, out_features, kernel=3)

    def forward(self, feats: Tensor) -> Tensor:
        size = (feats.shape[2], feats.shape[3])
        priors = [_resize(stage(feats), size) for stage in self.stages] + [feats]
        return self.bottleneck(torch.cat(priors, 1))


class EdgeModule(nn.Module):
    """Edge branch: per-level 256-ch features and a shared 3x3 two-class edge classifier."""

    def __init__(self, in_features: Sequence[int] = (256, 512, 1024), mid: int = 256, out: int = 2) -> None:
        super().__init__()
        self.conv1 = _conv_abn(in_features[0], mid)
        self.conv2 = _conv_abn(in_features[1], mid)
        self.conv3 = _conv_abn(in_features[2], mid)
        self.conv4 = nn.Conv2d(mid, out, 3, padding=1, bias=True)
        self.conv5 = nn.Conv2d(out * 3, out, 1, bias=True)

    def forward(self, x1: Tensor, x2: Tensor, x3: Tensor) -> Tuple[Tensor, Tensor]:
        size = (x1.shape[2], x1.shape[3])
        f1, f2, f3 = self.conv1(x1), self.conv2(x2), self.conv3(x3)
        e1, e2, e3 = self.conv4(f1), self.conv4(f2), self.conv4(f3)
        f2, f3 = _resize(f2, size), _resize(f3, size)
        e2, e3 = _resize(e2, size), _resize(e3, size)
        edge = self.conv5(torch.cat([e1, e2, e3], 1))
        return edge, torch.cat([f1, f2, f3], 1)


class DecoderModule(nn.Module):
    """Parsing decoder: context features upsampled to stride 4 and fused with a layer1 skip."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv1 = _conv_abn(512, 256)
        self.conv2 = _conv_abn(256, 48)
        self.conv3 = nn.Sequential(nn.Conv2d(304, 256, 1, bias=False), ABN(256),
                                   nn.Conv2d(256, 256, 1, bias=False), ABN(256))
        self.conv4 = nn.Conv2d(256, num_classes, 1, bias=True)

    def forward(self, xt: Tensor, xl: Tensor, with_logits: bool = True) -> Tuple[Optional[Tensor], Tensor]:
        size = (xl.shape[2], xl.shape[3])
        xt = _resize(self.conv1(xt), size)
        fea = self.conv3(torch.cat([xt, self.conv2(xl)], 1))
        return (self.conv4(fea) if with_logits else None), fea


class AugmentCE2P(nn.Module):
    """SCHP network; ``forward`` returns the fusion logits (N×C×H/4×W/4), the ones inference uses.

    Parameters
    ----------
    num_classes : int
        20 (LIP), 18 (ATR) or 7 (Pascal-Person-Part) for the released checkpoints.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.inplanes = 128
        self.conv1 = nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False)
        self.bn1 = _backbone_bn(64)
        self.conv2 = nn.Conv2d(64, 64, 3, stride=1, padding=1, bias=False)
        self.bn2 = _backbone_bn(64)
        self.conv3 = nn.Conv2d(64, 128, 3, stride=1, padding=1, bias=False)
        self.bn3 = _backbone_bn(128)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, 3)
        self.layer2 = self._make_layer(128, 4, stride=2)
        self.layer3 = self._make_layer(256, 23, stride=2)
        self.layer4 = self._make_layer(512, 3, stride=1, dilation=2)
        self.context_encoding = PSPModule(2048, 512)
        self.edge = EdgeModule()
        self.decoder = DecoderModule(num_classes)
        self.fushion = nn.Sequential(nn.Conv2d(1024, 256, 1, bias=False), ABN(256), nn.Dropout2d(0.1),
                                     nn.Conv2d(256, num_classes, 1, bias=True))

    def _make_layer(self, planes: int, blocks: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
                _backbone_bn(planes * Bottleneck.expansion))
        layers = [Bottleneck(self.inplanes, planes, stride, dilation, downsample)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes, 1, dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor, with_aux: bool = False
                ) -> Union[Tensor, List[List[Tensor]]]:
        """Run the network on a normalised BGR batch.

        Parameters
        ----------
        x : Tensor, shape (N, 3, H, W)
            Preprocessed input (see ``maskcl.masks.schp``).
        with_aux : bool
            Also compute the decoder logits and return the official nested structure
            ``[[parsing, fusion], [edge]]`` (all N×·×H/4×W/4). Off by default: inference needs only
            the fusion logits, and skipping ``decoder.conv4`` saves a little time.

        Returns
        -------
        Tensor, shape (N, num_classes, ceil(H/4), ceil(W/4)), or the nested list when ``with_aux``.
        """
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        x = self.maxpool(x)
        x2 = self.layer1(x)
        x3 = self.layer2(x2)
        x4 = self.layer3(x3)
        x5 = self.layer4(x4)
        context = self.context_encoding(x5)
        parsing, parsing_fea = self.decoder(context, x2, with_logits=with_aux)
        edge, edge_fea = self.edge(x2, x3, x4)
        fusion = self.fushion(torch.cat([parsing_fea, edge_fea], 1))
        if with_aux:
            assert parsing is not None
            return [[parsing, fusion], [edge]]
        return fusion


def build_schp(num_classes: int) -> AugmentCE2P:
    """An SCHP network in eval mode with ``num_classes`` output classes and PyTorch's default
    initialisation (real weights come from ``maskcl.masks.checkpoint.load_schp``)."""
    return AugmentCE2P(num_classes).eval()
