"""SCHP inference exactly as the official ``simple_extractor.py``, batched, on CPU or GPU.

Per image: BGR uint8 → letterbox into the square input with SCHP's affine transform (bilinear,
black border, rounded to uint8 like ``cv2.warpAffine``) → ``ToTensor`` → BGR ImageNet normalisation
→ network → fusion logits (stride 4) → bilinear upsampling (``align_corners=True``) to the input
size → inverse affine warp of every logit channel back to the original size → argmax. The
extractor runs batch 1; the network is fully convolutional with per-image statistics frozen, so
batching changes nothing but speed. Warps run in torch on the model's device.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import CheckpointError, ConfigError
from ..devices import select_device
from .affine import invert_affine, letterbox_affine, warp_affine
from .checkpoint import file_sha256, folder_checkpoint_message, get_variant, load_schp, missing_checkpoint_message
from .schp_net import AugmentCE2P
from .sources import MASK_SOURCES, ImageReadError, MaskItem, MaskSource, read_image

__all__ = ["BGR_MEAN", "BGR_STD", "SCHPParser", "SCHPSource", "resolve_device"]

log = logging.getLogger(__name__)

#: ImageNet statistics in BGR order, as the extractor's ``Normalize`` (channel 0 = blue).
BGR_MEAN: Tuple[float, float, float] = (0.406, 0.456, 0.485)
BGR_STD: Tuple[float, float, float] = (0.225, 0.224, 0.229)

_AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: Union[str, torch.device]) -> torch.device:
    """``masks.schp.device`` → this job's device; ``auto`` claims a GPU of its own (``maskcl.devices``)."""
    return select_device(device, key="masks.schp.device")


class SCHPParser:
    """Pre-process, run and post-process SCHP on batches of BGR images.

    Parameters
    ----------
    model : AugmentCE2P
        Loaded network (see ``maskcl.masks.checkpoint.load_schp``); moved to ``device``.
    input_size : (int, int)
        Network input (473, 473) for LIP, (512, 512) for ATR and Pascal.
    device : str or torch.device
    amp : {"none", "bf16", "fp16"}
        Autocast dtype for the network (pre/post-processing stays float32).
    channels_last : bool
        NHWC memory format for the network (faster convolutions on GPUs).
    quantize_warp : bool
        Use OpenCV 3/4's 1/32-pixel warp arithmetic (what the official extractor ran with).
    """

    def __init__(self, model: AugmentCE2P, *, input_size: Tuple[int, int] = (473, 473),
                 device: Union[str, torch.device] = "cpu", amp: str = "none", channels_last: bool = False,
                 quantize_warp: bool = True) -> None:
        if amp not in _AMP:
            raise ConfigError(f"masks.schp.amp must be one of {', '.join(_AMP)}, got {amp!r}")
        self.device = torch.device(device)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.amp = amp
        self.channels_last = bool(channels_last)
        self.quantize_warp = bool(quantize_warp)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = model.eval().to(self.device, memory_format=fmt)
        self._mean = torch.tensor(BGR_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(BGR_STD, device=self.device).view(1, 3, 1, 1)

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @torch.no_grad()
    def preprocess(self, images: Sequence[np.ndarray]) -> Tuple[Tensor, List[np.ndarray]]:
        """Letterbox and normalise a batch.

        Parameters
        ----------
        images : sequence of np.ndarray, each (H_i, W_i, 3) uint8, BGR

        Returns
        -------
        x : Tensor, shape (N, 3, S_h, S_w), float32 on the device
        matrices : list of (2, 3) float64 arrays, original → input, one per image
        """
        n = len(images)
        out = torch.empty((n, 3) + self.input_size, dtype=torch.float32, device=self.device)
        matrices = [letterbox_affine(im.shape[0], im.shape[1], self.input_size) for im in images]
        for idx in _group_by_shape([im.shape[:2] for im in images]):
            batch = torch.from_numpy(np.stack([images[i] for i in idx])).to(self.device)
            batch = batch.permute(0, 3, 1, 2).to(torch.float32)
            warped = warp_affine(batch, np.stack([matrices[i] for i in idx]), self.input_size,
                                 round_uint8=True, quantize=self.quantize_warp)
            out[idx] = warped
        out = (out / 255.0 - self._mean) / self._std
        return out, matrices

    @torch.no_grad()
    def logits(self, x: Tensor) -> Tensor:
        """Fusion logits upsampled to the input size: (N, C, S_h, S_w) float32."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = _AMP[self.amp]
        ctx = (torch.autocast(device_type=self.device.type, dtype=dtype) if dtype is not None
               else contextlib.nullcontext())
        with ctx:
            fusion = self.model(x)
        return F.interpolate(fusion.float(), size=self.input_size, mode="bilinear", align_corners=True)

    @torch.no_grad()
    def postprocess(self, logits: Tensor, sizes: Sequence[Tuple[int, int]],
                    matrices: Sequence[np.ndarray]) -> List[np.ndarray]:
        """Warp each image's logits back to its original (H, W) and take the argmax.

        Returns
        -------
        list of np.ndarray, each (H_i, W_i) uint8 class indices.
        """
        labels: List[Optional[np.ndarray]] = [None] * len(sizes)
        for idx in _group_by_shape(sizes):
            inv = np.stack([invert_affine(matrices[i]) for i in idx])
            back = warp_affine(logits[idx], inv, tuple(sizes[idx[0]]), quantize=self.quantize_warp)
            arg = back.argmax(dim=1).to(torch.uint8).cpu().numpy()
            for j, i in enumerate(idx):
                labels[i] = arg[j]
        assert all(lab is not None for lab in labels)
        return labels  # type: ignore[return-value]

    def parse(self, images: Sequence[np.ndarray]) -> List[np.ndarray]:
        """Label maps for BGR uint8 images (the whole official pipeline)."""
        if not images:
            return []
        x, matrices = self.preprocess(images)
        return self.postprocess(self.logits(x), [im.shape[:2] for im in images], matrices)


def _group_by_shape(shapes: Sequence[Tuple[int, ...]]) -> List[List[int]]:
    groups: Dict[Tuple[int, ...], List[int]] = defaultdict(list)
    for i, s in enumerate(shapes):
        groups[tuple(s)].append(i)
    return list(groups.values())


@MASK_SOURCES.register("schp")
class SCHPSource(MaskSource):
    """SCHP label maps from an official checkpoint (LIP by default).

    Slow on a CPU: about one image every few seconds at 473x473 (see ``bench/results_schp.md``);
    use a GPU for real datasets.

    Parameters
    ----------
    checkpoint : path
        Official ``exp-schp-*.pth`` file (Google Drive only; the error names the link).
    variant : {"lip", "atr", "pascal"}
    batch_size, workers : int
        Images per forward pass; DataLoader processes decoding images.
    device : "auto", "cpu", "cuda", "cuda:N"
    amp : {"none", "bf16", "fp16"}
        Autocast on the network; "none" is the official fp32.
    channels_last : bool
        NHWC convolutions; applied on CUDA devices only.
    """

    name: ClassVar[str] = "schp"

    def __init__(self, *, checkpoint: Union[str, Path], variant: str = "lip", batch_size: int = 1,
                 workers: int = 0, device: str = "auto", amp: str = "none", channels_last: bool = True) -> None:
        self.variant = get_variant(variant)
        self.label_set = self.variant.label_set
        self.checkpoint = Path(checkpoint)
        if self.checkpoint.is_dir():
            raise CheckpointError(folder_checkpoint_message(self.checkpoint, self.variant))
        if not self.checkpoint.is_file():
            raise CheckpointError(missing_checkpoint_message(self.checkpoint, self.variant))
        if amp not in _AMP:
            raise ConfigError(f"masks.schp.amp must be one of {', '.join(_AMP)}, got {amp!r}")
        self.batch_size = int(batch_size)
        self.workers = int(workers)
        self.device = resolve_device(device)
        self.amp = amp
        self.channels_last = bool(channels_last) and self.device.type == "cuda"
        self._sha256: Optional[str] = None
        self._parser: Optional[SCHPParser] = None

    def params(self) -> Dict[str, Any]:
        if self._sha256 is None:
            self._sha256 = file_sha256(self.checkpoint)
        return {"variant": self.variant.name, "checkpoint_sha256": self._sha256,
                "input_size": list(self.variant.input_size), "amp": self.amp}

    def load(self, item: MaskItem) -> np.ndarray:
        img = read_image(item.path, "BGR")
        if max(img.shape[:2]) < 2:
            raise ImageReadError(f"image {item.path} is {img.shape[1]}x{img.shape[0]} pixels; SCHP needs "
                                 f"at least 2 pixels along one side")
        return img

    @property
    def parser(self) -> SCHPParser:
        if self._parser is None:
            model = load_schp(self.checkpoint, self.variant.name)
            self._parser = SCHPParser(model, input_size=self.variant.input_size, device=self.device,
                                      amp=self.amp, channels_last=self.channels_last)
            log.info("SCHP %s on %s (amp=%s, channels_last=%s, batch %d)", self.variant.name, self.device,
                     self.amp, self.channels_last, self.batch_size)
        return self._parser

    def predict(self, samples: Sequence[np.ndarray]) -> List[np.ndarray]:
        return self.parser.parse(samples)

    def close(self) -> None:
        self._parser = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

