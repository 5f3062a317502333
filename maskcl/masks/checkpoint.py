"""Loading the official SCHP checkpoints safely and strictly.

The released ``.pth`` files (Google Drive only, see ``SCHP_VARIANTS``) hold ``{"state_dict": ...}``
with every key prefixed by ``module.`` (the model was trained inside ``DataParallel``). We load with
``weights_only=True`` so a file that carries pickled code is refused rather than executed, strip the
prefix, and compare keys and shapes against our network before assigning, so that a checkpoint of
another architecture or class count fails with one line listing what differs instead of PyTorch's
multi-page report. ``data/schp_lip_state_dict.tsv`` is the exact LIP key/shape manifest.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor

from ..errors import CheckpointError
from .labels import ATR, LIP, PASCAL, LabelSet
from .schp_net import AugmentCE2P

__all__ = ["SCHPVariant", "SCHP_VARIANTS", "get_variant", "manifest_shapes", "random_state_dict", "read_state_dict",
           "check_state_dict", "load_schp", "file_sha256", "CHECKPOINT_CONFIG_KEY", "missing_checkpoint_message",
           "folder_checkpoint_message"]

log = logging.getLogger(__name__)

#: The config key users set to point at a checkpoint (named in error messages only).
CHECKPOINT_CONFIG_KEY = "masks.schp.checkpoint"
_PREFIX = "module."
_SHOWN = 3


@dataclass(frozen=True)
class SCHPVariant:
    """One released SCHP checkpoint: label set, network input size and where to get it."""

    name: str
    label_set: LabelSet
    input_size: Tuple[int, int]
    filename: str
    drive_id: str
    reported_miou: str

    @property
    def num_classes(self) -> int:
        return self.label_set.num_classes

    @property
    def url(self) -> str:
        return f"https://drive.google.com/uc?id={self.drive_id}"


SCHP_VARIANTS: Dict[str, SCHPVariant] = {
    "lip": SCHPVariant("lip", LIP, (473, 473), "exp-schp-201908261155-lip.pth",
                       "1k4dllHpu0bdx38J7H28rVVLpU-kOHmnH", "59.36 (LIP val)"),
    "atr": SCHPVariant("atr", ATR, (512, 512), "exp-schp-201908301523-atr.pth",
                       "1ruJg4lqR_jgQPj-9K0PP-L2vJERYOxLP", "82.29 (ATR test)"),
    "pascal": SCHPVariant("pascal", PASCAL, (512, 512), "exp-schp-201908270938-pascal-person-part.pth",
                          "1E5YwNKW2VOEayK9mWCS3Kpsxf-3z04ZE", "71.46 (Pascal-Person-Part val)"),
}


def get_variant(name: str) -> SCHPVariant:
    try:
        return SCHP_VARIANTS[name]
    except KeyError:
        raise CheckpointError(f"unknown SCHP variant {name!r}; set masks.schp.variant to one of "
                              f"{', '.join(SCHP_VARIANTS)}") from None


def manifest_shapes(num_classes: int = 20, prefix: str = _PREFIX) -> Dict[str, Tuple[int, ...]]:
    """Keys and shapes of an official SCHP checkpoint, in registration order.

    Read from the packaged LIP manifest; the four class rows (``decoder.conv4`` and ``fushion.3``)
    are changed to ``num_classes`` for ATR (18) and Pascal (7).

    Returns
    -------
    dict
        ``prefix + key`` → shape tuple (603 entries).
    """
    text = resources.files("maskcl.masks").joinpath("data/schp_lip_state_dict.tsv").read_text("utf-8")
    out: Dict[str, Tuple[int, ...]] = {}
    class_keys = ("decoder.conv4.", "fushion.3.")
    for line in text.splitlines()[1:]:
        if not line.strip():
            continue
        key, shape_text = line.split("\t")
        shape = tuple(int(v) for v in shape_text.split("x"))
        bare = key[len(_PREFIX):] if key.startswith(_PREFIX) else key
        if bare.startswith(class_keys):
            shape = (num_classes,) + shape[1:]
        out[prefix + bare] = shape
    return out


def random_state_dict(num_classes: int = 20, seed: int = 0, prefix: str = _PREFIX) -> Dict[str, Tensor]:
    """A checkpoint-shaped state dict with random values, for tests and benchmarks only.

    Keys and shapes come from the manifest (with ``prefix``, as in the released files). Values keep
    activations finite through 101 layers: convs ~ N(0, 1/fan_in), ABN weights of random sign (so
    the ``|w| + eps`` mapping matters) with magnitude in [0.2, 1], running variances in [0.5, 2].
    """
    gen = torch.Generator().manual_seed(seed)
    out: Dict[str, Tensor] = {}
    for key, shape in manifest_shapes(num_classes, prefix).items():
        if len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            t = torch.randn(shape, generator=gen) / fan_in ** 0.5
        elif key.endswith("running_var"):
            t = 0.5 + 1.5 * torch.rand(shape, generator=gen)
        elif key.endswith("running_mean") or key.endswith("bias"):
            t = 0.1 * torch.randn(shape, generator=gen)
        else:  # ABN weight
            sign = torch.where(torch.rand(shape, generator=gen) < 0.5, -1.0, 1.0)
            t = sign * (0.2 + 0.8 * torch.rand(shape, generator=gen))
        out[key] = t
    return out


def file_sha256(path: Union[str, os.PathLike], chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def missing_checkpoint_message(path: Path, variant: Optional[SCHPVariant]) -> str:
    if variant is None:
        where = "; ".join(f"{v.name}: {v.filename} from {v.url}" for v in SCHP_VARIANTS.values())
    else:
        where = f"{variant.filename} from {variant.url} (Google Drive id {variant.drive_id})"
    return (f"SCHP checkpoint {path} not found; run the workflow's schp_checkpoint rule (it fetches the "
            f"official {where}, or masks.schp.source), or download it by hand (Google Drive only, linked "
            f"from github.com/GoGoDuck912/Self-Correction-Human-Parsing) and set {CHECKPOINT_CONFIG_KEY} "
            f"to its path")


def folder_checkpoint_message(path: Path, variant: Optional[SCHPVariant]) -> str:
    """``masks.schp.checkpoint`` names a folder: what to set it to instead.

    The schp_checkpoint rule cannot write a file where a folder stands (and Snakemake takes the folder
    for its existing output), so the fix is a file path: the official file inside the folder when it
    is there, else a file name in it the rule can fetch to, or null for the default place.
    """
    names = [variant.filename] if variant is not None else [v.filename for v in SCHP_VARIANTS.values()]
    inside = [path / n for n in names if (path / n).is_file()]
    if inside:
        fix = f"set {CHECKPOINT_CONFIG_KEY} to the checkpoint file inside it, {inside[0]}"
    else:
        fix = (f"set {CHECKPOINT_CONFIG_KEY} to a file path, such as {path / names[0]} (the schp_checkpoint rule "
               f"fetches the checkpoint there), or to null (the default resources/checkpoints/<official file>)")
    return f"SCHP checkpoint {path} is a folder, not a checkpoint file: {fix}"


def _not_a_torch_file(path: Path) -> Optional[str]:
    """Why ``path`` cannot be a PyTorch file (a zip since 1.6, a pickle before), or None.

    Without this, a web page saved under a checkpoint's name (a Drive sign-in or quota page) would be
    reported by ``torch.load`` as a file carrying pickled code.
    """
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return None
    if b"<html" in head.lower() or b"<!doctype" in head.lower():
        return "it is a web page, not a PyTorch checkpoint (a sign-in, quota or error page?)"
    return f"it is not a PyTorch checkpoint (it starts with {head[:8]!r})"


def read_state_dict(path: Union[str, os.PathLike], variant: Optional[SCHPVariant] = None) -> Dict[str, Tensor]:
    """Load a checkpoint file with ``weights_only=True`` and return its bare state dict.

    Accepts the official ``{"state_dict": {...}}`` wrapper or a bare state dict; strips ``module.``.

    Raises
    ------
    CheckpointError
        Missing or unreadable file, pickled objects beyond tensors and containers (refused, never
        executed), or no state dict inside.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(folder_checkpoint_message(path, variant))
    if not path.is_file():
        raise CheckpointError(missing_checkpoint_message(path, variant))
    wrong = _not_a_torch_file(path)
    if wrong:
        raise CheckpointError(f"{path}: {wrong}; use the official SCHP file (see docs/masks.md)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).strip().splitlines()
        hint = next((ln.strip() for ln in reason if "GLOBAL" in ln or "Unsupported" in ln), "")
        raise CheckpointError(
            f"{path}: refused to load: the file contains pickled Python objects, not only tensors "
            f"({hint or 'weights_only load failed'}); loading it could run arbitrary code, so only "
            f"plain state-dict checkpoints are accepted: use the official file or re-save "
            f"{{'state_dict': model.state_dict()}} from a trusted environment") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{path}: cannot read checkpoint ({first}); the file is damaged or not a "
                              f"PyTorch checkpoint, download it again") from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        sd = obj["state_dict"]
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        sd = obj
    else:
        keys = ", ".join(map(str, list(obj)[:5])) if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{path}: no 'state_dict' in the checkpoint (found: {keys}); expected the "
                              f"official SCHP file")
    bad = [k for k, v in sd.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{path}: state_dict entries that are not tensors: {', '.join(map(str, bad[:_SHOWN]))}")
    if sd and all(str(k).startswith(_PREFIX) for k in sd):
        sd = {k[len(_PREFIX):]: v for k, v in sd.items()}
    return dict(sd)


def _fmt_shape(shape: Tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "scalar"


def _listing(label: str, items: List[str]) -> str:
    more = f", … {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return f"{len(items)} {label} ({', '.join(items[:_SHOWN])}{more})"


def check_state_dict(sd: Mapping[str, Tensor], model: AugmentCE2P, *, path: Union[str, os.PathLike] = "checkpoint",
                     variant: Optional[SCHPVariant] = None) -> None:
    """Compare a bare state dict with ``model``; raise one ``CheckpointError`` line listing the
    missing, unexpected and mis-shaped keys (first few of each, with counts)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    misshaped = [k for k in expected if k in sd and tuple(sd[k].shape) != expected[k]]
    if not (missing or unexpected or misshaped):
        return
    parts = []
    if missing:
        parts.append(_listing("missing key(s)", missing))
    if unexpected:
        parts.append(_listing("unexpected key(s)", unexpected))
    if misshaped:
        parts.append(_listing("mis-shaped key(s)", [
            f"{k} {_fmt_shape(tuple(sd[k].shape))} vs {_fmt_shape(expected[k])}" for k in misshaped]))
    hint = ("it is not an SCHP (AugmentCE2P / ResNet-101) checkpoint; use an official SCHP file")
    if not missing and not unexpected and all(k.startswith(("decoder.conv4.", "fushion.3.")) for k in misshaped):
        n = int(sd["fushion.3.weight"].shape[0]) if "fushion.3.weight" in sd else -1
        match = [v.name for v in SCHP_VARIANTS.values() if v.num_classes == n]
        hint = (f"its class layers have {n} classes: set masks.schp.variant to {match[0]}" if match
                else f"its class layers have {n} classes, which no released SCHP variant has")
    name = f"SCHP {variant.name} ({variant.num_classes} classes)" if variant else "SCHP"
    raise CheckpointError(f"{path}: not a {name} checkpoint: {'; '.join(parts)}; {hint}")


def load_schp(path: Union[str, os.PathLike], variant: str = "lip", device: Union[str, torch.device] = "cpu") -> AugmentCE2P:
    """Build the SCHP network for ``variant`` and load an official checkpoint into it strictly.

    The network is built on the meta device and the checkpoint tensors are assigned to it, so no
    time is spent initialising 66.7 M parameters that are overwritten anyway.

    Parameters
    ----------
    path : path
        ``exp-schp-*.pth`` file.
    variant : {"lip", "atr", "pascal"}
        Which released model the file is (fixes the class count).
    device : str or torch.device
        Where the model is moved after loading.

    Returns
    -------
    AugmentCE2P
        In eval mode, float32, gradients off.

    Raises
    ------
    CheckpointError
        Missing file (with the official download location), unsafe or unreadable file, or keys /
        shapes that do not match the variant.
    """
    spec = get_variant(variant)
    sd = read_state_dict(path, spec)
    with torch.device("meta"):
        model = AugmentCE2P(spec.num_classes)
    check_state_dict(sd, model, path=path, variant=spec)
    sd = {k: v.to(torch.float32).contiguous() for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    model.requires_grad_(False)
    log.info("loaded SCHP %s checkpoint %s (%d tensors)", spec.name, path, len(sd))
    return model.eval().to(device)
