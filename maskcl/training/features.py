"""Eval-mode feature extraction for training-time needs (memory init, per-epoch clustering)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

__all__ = ["extract_features"]


@torch.no_grad()
def extract_features(model: nn.Module, dataset: Dataset, *, batch_size: int, device: torch.device,
                     workers: int = 0, channels_last: str = "auto") -> torch.Tensor:
    """N×D features of ``dataset`` items (image, index) in dataset order, on the CPU.

    The model is put in eval mode for the extraction and its previous mode is restored.
    """
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda")
    out = []
    cl = device.type == "cuda" and channels_last in ("auto", "on")
    try:
        for x, _ in loader:
            x = x.to(device, non_blocking=True)
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            out.append(model(x).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out, dim=0)
