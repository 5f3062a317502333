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
from .backbone import BACKBONES, POOLINGS, ReIDBackbone
from .transforms import test_transform

__all__ = ["MODEL_FORMAT", "save_model", "load_model"]

MODEL_FORMAT = "maskcl-model/1"
#: Keys of a ``model.pt`` every reader needs (``training``, ``dim``, ``epochs``, ... are provenance).
_REQUIRED = ("method", "arch", "pooling", "last_stride", "input_size", "settings", "seed", "state_dict")


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


def _metadata_problem(obj: Mapping[str, Any]) -> Optional[str]:
    """What keeps a ``model.pt`` dict from rebuilding its network and naming its run, or None.

    Every key :func:`save_model` writes that the readers use must be there with its type:
    the network's recipe (``arch``, ``pooling``, ``last_stride``, ``input_size``), the weights, and
    what names the run (``method``, ``settings``, ``seed``).
    """
    missing = [k for k in _REQUIRED if k not in obj]
    if missing:
        return f"metadata lacks {', '.join(missing)}"
    if not isinstance(obj["method"], str):
        return f"method {obj['method']!r} is not a name"
    if not isinstance(obj["arch"], str) or obj["arch"] not in BACKBONES:
        return f"arch {obj['arch']!r} is not one of the backbones ({', '.join(BACKBONES.names())})"
    if obj["pooling"] not in POOLINGS:
        return f"pooling {obj['pooling']!r} is not one of {', '.join(POOLINGS)}"
    if type(obj["last_stride"]) is not int or obj["last_stride"] not in (1, 2):
        return f"last_stride {obj['last_stride']!r} is not 1 or 2"
    size = obj["input_size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(type(v) is int and v > 0 for v in size)):
        return f"input_size {size!r} is not [height, width] in pixels"
    if type(obj["seed"]) is not int:
        return f"seed {obj['seed']!r} is not an integer"
    if not isinstance(obj["settings"], dict):
        return f"settings is a {type(obj['settings']).__name__}, not the training settings"
    weights = obj["state_dict"]
    if not isinstance(weights, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in weights.items()):
        return "state_dict is not a dict of named tensors"
    return None


def _fit_problem(model: ReIDBackbone, weights: Mapping[str, torch.Tensor], arch: str) -> Optional[str]:
    """How ``weights`` fail to fit ``model`` (missing, unexpected or mis-shaped tensors), or None."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shaped = [k for k in own if k in weights and tuple(weights[k].shape) != tuple(own[k].shape)]
    if shaped:
        k = shaped[0]
        return (f"its weights do not fit its arch {arch}: {len(shaped)} tensor(s) of another shape, e.g. {k} "
                f"{list(weights[k].shape)} where {arch} has {list(own[k].shape)}")
    if missing or unexpected:
        return (f"its weights do not fit its arch {arch}: {len(missing)} missing tensor(s) {missing[:3]}, "
                f"{len(unexpected)} unexpected {unexpected[:3]}")
    return None


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Tuple[ReIDBackbone, Any, Dict[str, Any]]:
    """Return (RGB backbone in eval mode on ``device``, its test transform, the file's metadata).

    Raises
    ------
    CheckpointError
        One line naming the file and the command that rebuilds it: missing, unreadable, of another
        format, metadata missing or of the wrong type, or weights that do not fit the recorded
        architecture. Whether the model is the one a run expects is the reader's check
        (``maskcl.evaluation.check_run_model``).
    """
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
    problem = _metadata_problem(obj)
    if problem is None:
        model = ReIDBackbone(obj["arch"], pretrained="none", last_stride=obj["last_stride"], pooling=obj["pooling"])
        problem = _fit_problem(model, obj["state_dict"], obj["arch"])
    if problem is not None:
        raise CheckpointError(f"{path}: malformed {MODEL_FORMAT} file: {problem}; {model_repair_hint(path)}")
    model.load_state_dict(obj["state_dict"])
    model.eval().to(device)
    h, w = obj["input_size"]
    meta = {k: v for k, v in obj.items() if k not in ("state_dict", "mask_state_dict")}
    return model, test_transform((h, w)), meta
