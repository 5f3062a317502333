"""``model.pt``: written once at the end of training (:func:`save_model`) and loaded for inference
(:func:`load_model`: evaluation, figures, users' own code) — the file format lives only here.

``model.pt`` holds the RGB branch (the only one MaskCL uses at test time) with everything needed to
rebuild it and its test transform: architecture, pooling, last stride, input size and the training
settings. MaskCL runs also keep the mask branch under ``mask_state_dict`` for analysis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch

from ..errors import CheckpointError
from ..io import atomic_path
from ..repair import model_repair_hint
from .backbone import ReIDBackbone
from .transforms import test_transform

__all__ = ["MODEL_FORMAT", "save_model", "load_model"]

MODEL_FORMAT = "maskcl-model/1"


def save_model(path: str | Path, *, method: str, arch: str, dim: int, pooling: str, last_stride: int,
               input_size: Sequence[int], settings: Mapping[str, Any], seed: int, epochs: int, train_images: int,
               weights: Mapping[str, Any], training: Optional[Mapping[str, Any]] = None) -> None:
    """Write ``model.pt`` atomically: the metadata keys in this fixed order, then ``weights``.

    ``weights`` holds ``state_dict`` (the RGB branch) and, for MaskCL, ``mask_state_dict``; ``settings``
    is the training settings as a plain dict, ``training`` the hardware that trained it
    (``maskcl.hardware.training_hardware``), both stored for provenance.
    """
    payload: Dict[str, Any] = {
        "format": MODEL_FORMAT, "method": method, "arch": arch, "dim": dim, "pooling": pooling,
        "last_stride": last_stride, "input_size": list(input_size), "settings": settings, "seed": seed,
        "epochs": epochs, "train_images": train_images, "training": dict(training or {}),
    }
    payload.update(weights)
    with atomic_path(path, suffix=".pt") as tmp:
        try:
            torch.save(payload, tmp)
        except RuntimeError as e:  # torch's own writer failing (disk full): name the file it was writing
            if "failed writing file" not in str(e) and "file write failed" not in str(e):
                raise
            raise RuntimeError(f"{path}: {e}") from None


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Tuple[ReIDBackbone, Any, Dict[str, Any]]:
    """Return (RGB backbone in eval mode on ``device``, its test transform, the file's metadata)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: model file not found; {model_repair_hint(path)}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if isinstance(e, OSError) and e.errno is not None:  # permissions, disk: an I/O failure, named as one
            raise
        reason = (str(e).strip().splitlines() or [""])[0].split(". ")[0][:200]
        raise CheckpointError(f"{path}: not a readable model file, truncated or damaged ({type(e).__name__}: "
                              f"{reason}); {model_repair_hint(path)}") from None
    if not isinstance(obj, dict) or obj.get("format") != MODEL_FORMAT:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: not a {MODEL_FORMAT} file (format {found}); {model_repair_hint(path)}")
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
