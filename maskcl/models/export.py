"""Loading a trained ``model.pt`` for inference (evaluation, figures, users' own code).

``model.pt`` holds the RGB branch (the only one MaskCL uses at test time) with everything needed to
rebuild it and its test transform: architecture, pooling, last stride, input size and the training
settings. MaskCL runs also keep the mask branch under ``mask_state_dict`` for analysis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple

import torch

from ..errors import CheckpointError
from .backbone import ReIDBackbone

__all__ = ["MODEL_FORMAT", "load_model"]

MODEL_FORMAT = "maskcl-model/1"


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Tuple[ReIDBackbone, Any, Dict[str, Any]]:
    """Return (RGB backbone in eval mode on ``device``, its test transform, the file's metadata)."""
    from ..training.transforms import test_transform

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: model file not found; run the train stage first")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable model file ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict) or obj.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{path}: not a {MODEL_FORMAT} file (format {obj.get('format') if isinstance(obj, dict) else type(obj).__name__})")
    model = ReIDBackbone(obj["arch"], pretrained="none", last_stride=int(obj["last_stride"]),
                         pooling=obj["pooling"])
    missing, unexpected = model.load_state_dict(obj["state_dict"], strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit {obj['arch']}: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}")
    model.eval().to(device)
    h, w = obj["input_size"]
    meta = {k: v for k, v in obj.items() if k not in ("state_dict", "mask_state_dict")}
    return model, test_transform((int(h), int(w))), meta
