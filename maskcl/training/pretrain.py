"""Self-supervised warm-up: a download-free initialisation for machines without ImageNet weights.

The paper starts both MaskCL branches (and the baselines) from ImageNet weights, so the RGB branch
begins by seeing more than colour. Where those weights cannot be fetched, this stage trains the
backbone with SimCLR-style instance discrimination (Chen et al., ICML 2020: two augmented views per
image, NT-Xent loss with in-batch negatives) on the *training images only* — no labels, no test data —
and writes the trunk's weights under torchvision names, which ``train.pretrained: <path>`` (or
``pretrained: ssl`` in the workflow) loads for every method alike.

The augmentations (random resized crop, flip, colour jitter, random grayscale) make instance
discrimination impossible from colour alone, which is what ImageNet pre-training also provides.
Seeding and the device choice are the training engine's (``maskcl.training.runtime``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from tqdm import tqdm

from ..hardware import training_hardware
from ..errors import ConfigError
from ..io import atomic_path
from ..config import section_defaults, settings_from_dict
from ..models.backbone import build_backbone
from ..models.images import load_rgb
from ..models.transforms import IMAGENET_MEAN, IMAGENET_STD
from .runtime import resolve_device, seed_everything, worker_init

__all__ = ["PretrainSettings", "pretrain_ssl", "nt_xent_loss", "ssl_transform"]

log = logging.getLogger(__name__)


#: Keys of the warm-up job that are the runs' own ``train`` settings (the backbone, its input, the job's
#: process): their defaults are the schema's ``train`` section's.
_FROM_TRAIN = ("arch", "height", "width", "workers", "device")


@dataclass
class PretrainSettings:
    """The warm-up job's settings; every default is the schema's (``pretrain``, and ``train`` for :data:`_FROM_TRAIN`)."""

    arch: str
    height: int
    width: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    temperature: float
    proj_dim: int
    crop_scale: float
    jitter: float
    grayscale: float
    workers: int
    device: str

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "PretrainSettings":
        train = section_defaults("train")
        merged = {**{k: train[k] for k in _FROM_TRAIN}, **section_defaults("pretrain")}
        merged.pop("seed")  # the job's seed, not a setting of the record
        merged.update(values)
        return settings_from_dict(cls, merged, "pretrain")


def ssl_transform(size: tuple, s: PretrainSettings) -> T.Compose:
    j = s.jitter
    return T.Compose([
        T.RandomResizedCrop(size, scale=(s.crop_scale, 1.0), ratio=(0.35, 0.65),
                            interpolation=InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(j, j, j, min(0.1, j / 4))], p=0.8),
        T.RandomGrayscale(p=s.grayscale),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class _TwoViews(Dataset):
    def __init__(self, paths: Sequence[str], transform: T.Compose) -> None:
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        img = load_rgb(self.paths[i])
        return self.transform(img), self.transform(img)


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent: each view's positive is the other view of its image, the rest of the 2B are
    negatives. z1, z2: B×d (normalised inside)."""
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)  # 2B×d
    sim = z @ z.t() / temperature
    n = z1.shape[0]
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


class _SimCLR(nn.Module):
    def __init__(self, arch: str, proj_dim: int) -> None:
        super().__init__()
        self.backbone = build_backbone(arch, pretrained="none", last_stride=1)
        d = self.backbone.dim
        self.head = nn.Sequential(nn.Linear(d, d), nn.BatchNorm1d(d), nn.ReLU(inplace=True),
                                  nn.Linear(d, proj_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, pooled = self.backbone(x)
        return self.head(pooled)


def pretrain_ssl(paths: Sequence[str], settings: PretrainSettings, *, seed: int, out_path: str,
                 threads: Optional[int] = None, progress: bool = True) -> List[Dict[str, Any]]:
    """Train the backbone on ``paths`` without labels and save its trunk weights to ``out_path``.

    Returns the per-epoch log rows (epoch, loss, seconds), also stored in the output file.
    """
    if threads:
        torch.set_num_threads(int(threads))
    device = resolve_device(settings.device)
    seed_everything(seed)
    model = _SimCLR(settings.arch, settings.proj_dim).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(settings.epochs, 1))
    ds = _TwoViews(paths, ssl_transform((settings.height, settings.width), settings))
    if len(ds) < settings.batch_size:
        # drop_last would leave no batch at all and an untrained backbone that looks trained
        raise ConfigError(f"pretrain.batch_size {settings.batch_size} exceeds the {len(ds)} training images; "
                          f"lower pretrain.batch_size")
    rows: List[Dict[str, Any]] = []
    for epoch in range(settings.epochs):
        t0 = time.time()
        seed_everything(seed, epoch)
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch, 11]).generate_state(1)[0]))
        loader = DataLoader(ds, batch_size=settings.batch_size, shuffle=True, drop_last=True, generator=gen,
                            num_workers=settings.workers, worker_init_fn=worker_init,
                            pin_memory=device.type == "cuda")
        model.train()
        total, n = 0.0, 0
        for v1, v2 in tqdm(loader, desc=f"ssl epoch {epoch + 1}/{settings.epochs}", disable=not progress,
                           leave=False, mininterval=2.0):
            z1, z2 = model(v1.to(device)), model(v2.to(device))
            loss = nt_xent_loss(z1.float(), z2.float(), settings.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            n += 1
        sched.step()
        rows.append({"epoch": epoch + 1, "loss": total / max(n, 1), "epoch_s": round(time.time() - t0, 2)})
        log.info("ssl epoch %d/%d: loss %.4f (%.1fs)", epoch + 1, settings.epochs, rows[-1]["loss"],
                 rows[-1]["epoch_s"])
    payload = {"format": "maskcl-ssl/1", "arch": settings.arch, "backbone": model.backbone.trunk_state_dict(),
               "settings": asdict(settings), "seed": seed, "rows": rows, "train_images": len(ds),
               "training": training_hardware(device, batch_size=settings.batch_size)}
    with atomic_path(out_path, suffix=".pt") as tmp:
        torch.save(payload, tmp)
    return rows
