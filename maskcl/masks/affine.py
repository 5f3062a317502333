"""SCHP's letterbox affine transform and a batched, cv2-exact ``warpAffine`` in torch.

The official extractor letterboxes every image into the square network input with
``cv2.warpAffine(INTER_LINEAR, BORDER_CONSTANT 0)`` and warps the logits back the same way. OpenCV
is not a dependency, so the warp is reimplemented here with OpenCV's conventions:

* pixel ``i`` sits at coordinate ``i`` (no half-pixel shift); the matrix maps source to
  destination and every destination pixel samples the source at the inverse-mapped point;
* OpenCV 3.x/4.x quantises that point to 1/32 pixel in fixed point (``INTER_BITS = 5`` after a
  1/1024 rounding of the row and column terms); we reproduce the same integer arithmetic, so the
  bilinear weights are the same multiples of 1/1024 and a uint8 warp rounds exactly as OpenCV's
  does (checked bit-exact against opencv-python-headless 4.10 and 4.11). OpenCV 5 rewrote the warp
  without the quantisation; ``quantize=False`` reproduces that one;
* taps outside the source read the constant 0.

Everything is plain tensor arithmetic (gather, no ``grid_sample`` normalisation), batched over
images that share a size, and runs on whatever device the input lives on.
"""

from __future__ import annotations

from typing import Tuple, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ["letterbox_affine", "invert_affine", "warp_affine"]

_AB_SCALE = 1024  # OpenCV: AB_BITS = 10
_INTER_TAB = 32   # OpenCV: INTER_BITS = 5


def letterbox_affine(height: int, width: int, out_size: Tuple[int, int]) -> np.ndarray:
    """The affine map SCHP uses to fit a whole image into the network input.

    Follows ``SimpleFolderDataset._box2cs`` + ``get_affine_transform`` for the box
    ``[0, 0, w-1, h-1]``: the box is enlarged to the output aspect ratio, scaled uniformly by
    ``k = (out_w - 1) / box_w`` and its centre ``((w-1)/2, (h-1)/2)`` is sent to
    ``((out_w-1)/2, (out_h-1)/2)``. For a square input the long side spans pixels ``0 … S-1`` and
    the short side is centred.

    Parameters
    ----------
    height, width : int
        Original image size (at least 2 pixels along the longer side).
    out_size : (int, int)
        Network input size ``(H, W)``, e.g. ``(473, 473)`` for LIP.

    Returns
    -------
    np.ndarray, shape (2, 3), float64
        Source → destination matrix in OpenCV's pixel convention.
    """
    out_h, out_w = out_size
    if max(height, width) < 2:
        raise ValueError(f"image of {width}x{height} pixels is too small to letterbox (need at least 2 "
                         f"pixels along one side)")
    aspect = out_w / out_h
    box_w, box_h = float(width - 1), float(height - 1)
    cx, cy = box_w * 0.5, box_h * 0.5
    if box_w > aspect * box_h:
        box_h = box_w / aspect
    elif box_w < aspect * box_h:
        box_w = box_h * aspect
    k = (out_w - 1) / box_w
    return np.array([[k, 0.0, (out_w - 1) * 0.5 - k * cx],
                     [0.0, k, (out_h - 1) * 0.5 - k * cy]], dtype=np.float64)


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix (as ``cv2.invertAffineTransform``)."""
    full = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def _quantised_coords(inv: Tensor, out_h: int, out_w: int) -> Tuple[Tensor, Tensor]:
    """Sampling points in 1/32-pixel integer units, computed exactly as OpenCV's WarpAffineInvoker.

    ``inv`` is (N, 2, 3) float64 (destination → source). Returns X, Y of shape (N, out_h, out_w),
    int64, such that the point is ``(X / 32, Y / 32)``.
    """
    dev = inv.device
    xs = torch.arange(out_w, dtype=torch.float64, device=dev)
    ys = torch.arange(out_h, dtype=torch.float64, device=dev)
    half = _AB_SCALE // _INTER_TAB // 2
    shift = _AB_SCALE // _INTER_TAB

    def axis(row: int) -> Tensor:
        per_row = torch.round((inv[:, row, 1, None] * ys + inv[:, row, 2, None]) * _AB_SCALE)  # N×H
        per_col = torch.round(inv[:, row, 0, None] * xs * _AB_SCALE)                              # N×W
        total = (per_row[:, :, None] + per_col[:, None, :]).to(torch.int64) + half
        return torch.div(total, shift, rounding_mode="floor")  # arithmetic shift right

    return axis(0), axis(1)


def warp_affine(src: Tensor, matrices: Union[np.ndarray, Tensor], out_size: Tuple[int, int],
                round_uint8: bool = False, quantize: bool = True) -> Tensor:
    """``cv2.warpAffine(src, M, (out_w, out_h), INTER_LINEAR, BORDER_CONSTANT, 0)`` for a batch.

    Parameters
    ----------
    src : Tensor, shape (N, C, H, W), floating point
        Images or logits; all share one size. Integer images must be converted to float first.
    matrices : array or Tensor, shape (N, 2, 3) or (2, 3)
        Source → destination matrices (OpenCV convention), one per image or one for all.
    out_size : (int, int)
        Destination ``(out_h, out_w)``.
    round_uint8 : bool
        Round and clip the result as OpenCV does for an 8-bit image (``floor(v + 0.5)``, 0…255).
    quantize : bool
        Snap sampling points to 1/32 pixel as OpenCV 3.x/4.x does (bit-exact with 4.10 and 4.11,
        the behaviour of the environment SCHP was released with). ``False`` samples at the exact
        point, which is what OpenCV 5's rewritten warp does (equal up to float rounding).

    Returns
    -------
    Tensor, shape (N, C, out_h, out_w), same dtype and device as ``src``.
    """
    if src.ndim != 4 or not src.is_floating_point():
        raise ValueError(f"warp_affine expects a floating N×C×H×W tensor, got {tuple(src.shape)} {src.dtype}")
    n, c, h, w = src.shape
    out_h, out_w = out_size
    m = torch.as_tensor(np.asarray(matrices) if not isinstance(matrices, Tensor) else matrices,
                        dtype=torch.float64, device=src.device)
    if m.ndim == 2:
        m = m.expand(n, 2, 3)
    if m.shape != (n, 2, 3):
        raise ValueError(f"expected {n} matrices of shape 2x3, got {tuple(m.shape)}")
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64, device=src.device).expand(n, 1, 3)
    inv = torch.linalg.inv(torch.cat([m, bottom], 1))[:, :2]

    if quantize:
        qx, qy = _quantised_coords(inv, out_h, out_w)
        x0 = torch.div(qx, _INTER_TAB, rounding_mode="floor")
        y0 = torch.div(qy, _INTER_TAB, rounding_mode="floor")
        fx = ((qx - x0 * _INTER_TAB).to(src.dtype) / _INTER_TAB).reshape(n, 1, -1)
        fy = ((qy - y0 * _INTER_TAB).to(src.dtype) / _INTER_TAB).reshape(n, 1, -1)
    else:
        xs = torch.arange(out_w, dtype=torch.float64, device=src.device)[None, None, :]
        ys = torch.arange(out_h, dtype=torch.float64, device=src.device)[None, :, None]
        sx = inv[:, 0, 0, None, None] * xs + inv[:, 0, 1, None, None] * ys + inv[:, 0, 2, None, None]
        sy = inv[:, 1, 0, None, None] * xs + inv[:, 1, 1, None, None] * ys + inv[:, 1, 2, None, None]
        x0, y0 = torch.floor(sx), torch.floor(sy)
        fx = (sx - x0).to(src.dtype).reshape(n, 1, -1)
        fy = (sy - y0).to(src.dtype).reshape(n, 1, -1)
        x0, y0 = x0.to(torch.int64), y0.to(torch.int64)
    x0, y0 = x0.reshape(n, -1), y0.reshape(n, -1)

    flat = src.reshape(n, c, h * w)
    out = torch.zeros((n, c, out_h * out_w), dtype=src.dtype, device=src.device)
    for dy, dx, weight in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)),
                           (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        idx = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).unsqueeze(1).expand(n, c, -1)
        out += torch.gather(flat, 2, idx) * (weight * inside.unsqueeze(1).to(src.dtype))
    if round_uint8:
        out = torch.floor(out + 0.5).clamp_(0, 255)
    return out.reshape(n, c, out_h, out_w)
