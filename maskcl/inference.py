"""A trained model outside the DAG: :func:`load_model` and :meth:`ReIDModel.embed`.

``model.pt`` records the network (architecture, pooling, last stride), its input size and the training
settings; :func:`load_model` rebuilds it with the test transform of the evaluate rule, and
:meth:`ReIDModel.embed` runs the same feature extractor the evaluate rule ranks with
(``maskcl.models.features.extract_features``: same transform, same L2 normalisation, flip off as the
official evaluator and the schema's ``evaluate.flip``), so features taken here rank as the run's own
``metrics.json`` says. Images may be paths, PIL images or uint8 arrays (H×W×3 RGB or H×W grey).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from .errors import InferenceError
from .image_modes import check_image_mode
from .models.backbone import ReIDBackbone

__all__ = ["IMAGE_SUFFIXES", "ImageInput", "ReIDModel", "image_size", "list_images", "load_model", "read_image"]

#: What :meth:`ReIDModel.embed` takes per image.
ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]

#: File suffixes read as images when a folder is given (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def read_image(item: Any, where: str = "") -> Image.Image:
    """One input as a PIL RGB image; anything else is one :class:`InferenceError` line naming it.

    ``where`` names an in-memory image (``images[3]``) in the error; a path names itself.
    """
    if isinstance(item, (str, os.PathLike)):
        path = os.fspath(item)
        with _opened(path) as im:
            check_image_mode(path, im.mode, error=InferenceError, fix="convert it to 8-bit RGB")
            return im.convert("RGB")
    if isinstance(item, Image.Image):
        check_image_mode(where or "image", item.mode, error=InferenceError, fix="convert it to 8-bit RGB")
        return item.convert("RGB")
    if isinstance(item, np.ndarray):
        shape_ok = item.ndim == 2 or (item.ndim == 3 and item.shape[2] == 3)
        if item.dtype != np.uint8 or not shape_ok or 0 in item.shape:
            raise InferenceError(f"{where or 'array'}: an array image must be uint8 of shape (H, W, 3) in RGB "
                                 f"order or (H, W) grey; got {item.dtype} {tuple(item.shape)}")
        return Image.fromarray(np.ascontiguousarray(item)).convert("RGB")
    raise InferenceError(f"{where or 'input'}: a {type(item).__name__} is not an image; pass a path, a PIL image "
                         f"or a uint8 array")


def image_size(path: Union[str, os.PathLike]) -> Tuple[int, int]:
    """(height, width) of an image file from its header, with :func:`read_image`'s errors."""
    with _opened(os.fspath(path)) as im:
        return im.height, im.width


@contextmanager
def _opened(path: str) -> Iterator[Image.Image]:
    """An image file opened by PIL; a missing, folder or undecodable file is one :class:`InferenceError` line
    (decoding is lazy, so a truncated file fails inside the ``with`` body and is named the same way)."""
    try:
        with Image.open(path) as im:
            yield im
    except FileNotFoundError:
        raise InferenceError(f"{path}: image not found; check the path") from None
    except IsADirectoryError:
        raise InferenceError(f"{path}: a folder, not an image; pass the images in it") from None
    except (OSError, ValueError) as e:
        if isinstance(e, OSError) and e.errno is not None:  # permissions, disk: the system's failure
            raise
        raise InferenceError(f"{path}: cannot decode the image ({e}); replace the file with a JPEG or "
                             f"PNG image") from None


def list_images(folder: Union[str, os.PathLike]) -> List[Path]:
    """The image files under ``folder`` (recursively), sorted by relative path; none is an error."""
    root = Path(folder)
    if not root.is_dir():
        raise InferenceError(f"{root}: no such folder; give a folder of images")
    found = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not found:
        raise InferenceError(f"{root}: no image in the folder (looked for {', '.join(IMAGE_SUFFIXES)}); "
                             f"give a folder of person crops")
    return found


class _Inputs(torch.utils.data.Dataset):
    """(tensor, index) for mixed inputs, in order, each read by :func:`read_image`."""

    def __init__(self, items: Sequence[ImageInput], transform: Any) -> None:
        self.items, self.transform = list(items), transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int]:
        return self.transform(read_image(self.items[i], where=f"images[{i}]")), i


@dataclass
class ReIDModel:
    """A loaded ``model.pt``: the torch network, its test transform and what the file records.

    Attributes
    ----------
    network : ReIDBackbone
        The RGB network in eval mode on ``device`` (fine-tune it, or export it: ``maskcl export-onnx``).
    transform : callable
        PIL RGB image → normalised tensor (3, H, W): the evaluate rule's resize and normalisation.
    meta : dict
        The file's metadata: ``method``, ``arch``, ``input_size``, ``settings``, ``seed``, ``training``
        (the hardware that trained it), ...
    device : torch.device
    path : Path
    """

    network: ReIDBackbone
    transform: Any
    meta: Dict[str, Any]
    device: torch.device
    path: Path

    @property
    def input_size(self) -> Tuple[int, int]:
        """(height, width) every image is resized to."""
        h, w = self.meta["input_size"]
        return int(h), int(w)

    @property
    def dim(self) -> int:
        """Feature dimension."""
        return int(self.network.dim)

    def embed(self, images: Sequence[ImageInput], *, batch_size: int = 64, flip: bool = False,
              num_workers: int = 0, progress: bool = False) -> np.ndarray:
        """L2-normalised float32 features (N × D) of ``images``, in input order.

        ``flip`` adds the horizontally flipped image's features before normalising (``evaluate.flip``;
        off in the official evaluator and by default). An empty input is an error, not an empty array:
        it is a wrong folder or list far more often than an intended no-op.
        """
        from .models.features import extract_features

        if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)):
            raise InferenceError("embed takes a sequence of images; wrap a single image in a list")
        items = list(images)
        if not items:
            raise InferenceError("embed: no images given")
        if int(batch_size) < 1:
            raise InferenceError(f"embed: batch_size must be >= 1, got {batch_size}")
        return extract_features(self.network, items, self.transform, batch_size=int(batch_size),
                                device=self.device, flip=flip, normalize=True, num_workers=num_workers,
                                dataset=_Inputs(items, self.transform), progress=progress, log_summary=False)


def load_model(path: Union[str, os.PathLike], device: Union[str, torch.device] = "auto") -> ReIDModel:
    """Read a ``model.pt`` written by the train rule; ``device`` ``auto`` takes a GPU when one is visible.

    Raises
    ------
    CheckpointError
        The file is missing, not a ``model.pt``, of another format version or damaged (one line).
    """
    from .devices import select_device
    from .models.export import load_model as _load

    dev = select_device(device, key="device")
    network, transform, meta = _load(path, dev)
    return ReIDModel(network=network, transform=transform, meta=meta, device=dev, path=Path(path))


class _Normalised(torch.nn.Module):
    """The network followed by the L2 normalisation :meth:`ReIDModel.embed` applies, for export."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.network(images), p=2, dim=1)


def export_onnx(model: ReIDModel, out: Union[str, os.PathLike], *, opset: int = 18, tolerance: float = 1e-4,
                check_batch: int = 3) -> float:
    """Write ``out`` as ONNX: images (N × 3 × H × W, ImageNet-normalised) → L2-normalised features.

    The batch is dynamic. Before the file gets its name it is run once in onnxruntime on a batch of
    ``check_batch`` seeded inputs and compared with torch; a difference above ``tolerance`` leaves no
    file and is an error. The input size, normalisation, method and architecture are stored in the
    file's metadata. Returns the largest absolute difference measured.

    Raises
    ------
    InferenceError
        The ``onnx`` extra is missing, or the exported graph disagrees with torch.
    """
    try:
        import onnx
        import onnxruntime
        import onnxscript  # noqa: F401 - torch's exporter needs it; named here so a missing one says so
    except ImportError as e:
        raise InferenceError(f"exporting to ONNX needs the onnx extra ({e.name} is missing); install it with "
                             f"pip install -e \".[onnx]\"") from None
    from .io import atomic_path
    from .models.transforms import IMAGENET_MEAN, IMAGENET_STD

    h, w = model.input_size
    wrapped = _Normalised(model.network).eval().cpu()
    example = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(0))
    out = Path(out)
    try:
        with atomic_path(out, suffix=".onnx") as tmp:
            torch.onnx.export(wrapped, (example,), str(tmp), input_names=["images"], output_names=["features"],
                              dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1, max=65536)}},
                              dynamo=True, opset_version=opset, verbose=False, external_data=False)
            graph = onnx.load(str(tmp))
            meta = {"maskcl_format": "maskcl-onnx/1", "method": str(model.meta.get("method")),
                    "arch": str(model.meta.get("arch")), "input_height": str(h), "input_width": str(w),
                    "input": "RGB, resized to input_height x input_width (bicubic), scaled to [0, 1], then "
                             "normalised with mean and std",
                    "mean": ",".join(f"{v:g}" for v in IMAGENET_MEAN), "std": ",".join(f"{v:g}" for v in IMAGENET_STD),
                    "output": "L2-normalised features; rank by Euclidean distance", "source": str(model.path)}
            for k, v in meta.items():
                entry = graph.metadata_props.add()
                entry.key, entry.value = k, v
            onnx.save(graph, str(tmp))
            x = torch.randn(check_batch, 3, h, w, generator=torch.Generator().manual_seed(1))
            session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
            got = session.run(["features"], {"images": x.numpy()})[0]
            with torch.inference_mode():
                want = wrapped(x).numpy()
            diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
            if not diff <= tolerance:
                raise InferenceError(f"{out}: the exported graph disagrees with torch (max |difference| {diff:.3g} > "
                                     f"{tolerance:g}, outputs {got.shape} vs {want.shape}); no file written; report "
                                     f"this with your torch and onnxruntime versions")
    finally:  # the network is the model's own: back where the caller had it
        model.network.to(model.device)
    return diff
