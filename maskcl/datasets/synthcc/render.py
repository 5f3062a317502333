"""From a posed figure to a ReID crop and its pixel-aligned label map.

The crop behaves like a detector's box: the figure's bounding box is jittered (margins, aspect,
horizontal shift) and resized to the output size, so absolute height is normalised away while body
proportions survive. Inside the box, the figure is rasterised at ``supersample`` times the output
size over the camera's background (cut where the person stands), shaded, resampled to the camera's
native resolution (which depends on the person's distance), blurred and resampled to the output
size, then the camera's gain, white balance and sensor noise are applied. Labels use a majority vote
over each output pixel's supersampled block (never blending), so they stay valid class indices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .cameras import CameraSettings
from .config import SynthCCConfig
from .figure import Figure

__all__ = ["FrameParams", "RenderedImage", "SceneCanvas", "make_canvas", "ground_range", "render_frame"]


@dataclass(frozen=True)
class FrameParams:
    """Everything that varies between frames of one tracklet."""

    yaw: float            # degrees
    phase: float          # gait phase, radians
    foot_x: float         # scene pixels
    foot_y: float         # scene pixels (ground contact point)
    margin_top: float     # detector box margins, fractions of the figure height
    margin_bottom: float
    aspect: float         # box width relative to the output aspect
    shift: float          # box centre shift, fraction of its width
    gain: float           # per-image illumination factor


@dataclass(frozen=True)
class RenderedImage:
    rgb: np.ndarray       # (H, W, 3) uint8
    labels: np.ndarray    # (H, W) uint8, LIP indices
    coverage: np.ndarray  # (H, W) float32: fraction of each pixel covered by the figure (renderer's mask)


@dataclass(frozen=True)
class SceneCanvas:
    """A camera's background, edge-padded so that boxes near the frame border stay defined."""

    image: Image.Image
    pad: int
    width: int            # unpadded size
    height: int


def make_canvas(scene: Image.Image) -> SceneCanvas:
    pad = max(scene.width, scene.height) // 4
    arr = np.pad(np.asarray(scene), ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    return SceneCanvas(Image.fromarray(arr), pad, scene.width, scene.height)


def ground_range(cam: CameraSettings, scene_h: int) -> Tuple[float, float, float]:
    """(horizon y, nearest and farthest foot y) in scene pixels where people may stand."""
    hy = cam.horizon * scene_h
    return hy, hy + 0.5 * (scene_h - hy), scene_h - 2.0


def _block_majority(labels: np.ndarray, ss: int) -> np.ndarray:
    """Most frequent label of every ss×ss block; ties go to the lower index (background first)."""
    h, w = labels.shape[0] // ss, labels.shape[1] // ss
    n = int(labels.max()) + 1
    block = (np.arange(h)[:, None, None, None] * w + np.arange(w)[None, None, :, None])
    block = np.broadcast_to(block, (h, ss, w, ss)).reshape(-1)
    counts = np.bincount(block * n + labels.reshape(-1).astype(np.int64), minlength=h * w * n)
    return counts.reshape(h, w, n).argmax(-1).astype(np.uint8)


def render_frame(fig: Figure, cam: CameraSettings, canvas: SceneCanvas, fp: FrameParams, cfg: SynthCCConfig,
                 rng: np.random.Generator) -> RenderedImage:
    """Render one crop.

    Parameters
    ----------
    fig : Figure
        The posed person (metres, feet on y = 0).
    cam : CameraSettings
    canvas : SceneCanvas
        The camera's padded background.
    fp : FrameParams
    cfg : SynthCCConfig
        Output size and supersampling factor.
    rng : numpy.random.Generator
        The image's own stream (texture and sensor noise).

    Returns
    -------
    RenderedImage
        ``rgb`` (H, W, 3) uint8, ``labels`` (H, W) uint8 and ``coverage`` (H, W) float32.
    """
    h_out, w_out, ss = cfg.image_height, cfg.image_width, cfg.supersample
    hc, wc = h_out * ss, w_out * ss

    # ---- detector box around the figure (metres)
    x0, y0, x1, y1 = fig.bbox
    fh = y1 - y0
    top, bot = y1 + fp.margin_top * fh, y0 - fp.margin_bottom * fh
    bh = top - bot
    bw = max(bh * w_out / h_out * fp.aspect, (x1 - x0) * 1.04)
    left = 0.5 * (x0 + x1) + fp.shift * bw - bw / 2
    sx, sy = wc / bw, hc / bh

    # ---- rasterise shapes into a segment map (painter's order)
    seg_img = Image.new("L", (wc, hc), 0)
    draw = ImageDraw.Draw(seg_img)
    for i, sh in enumerate(fig.shapes, 1):
        px = (sh.points[:, 0] - left) * sx
        py = (top - sh.points[:, 1]) * sy
        draw.polygon(list(zip(px.tolist(), py.tolist())), fill=i)
    seg_full = np.asarray(seg_img)
    fg_full = seg_full > 0
    # Colour work only on the block columns that hold the figure (plus one block of margin).
    cols = np.flatnonzero(fg_full.any(0))
    b0 = max(0, int(cols[0]) // ss - 1) if cols.size else 0
    b1 = min(w_out, int(cols[-1]) // ss + 2) if cols.size else w_out
    c0, c1 = b0 * ss, b1 * ss
    seg, fg = seg_full[:, c0:c1], fg_full[:, c0:c1]
    label_of = np.array([0] + [sh.label for sh in fig.shapes], np.uint8)
    mat_of = np.array([-1] + [sh.material for sh in fig.shapes], np.int16)
    base = np.zeros((len(fig.shapes) + 1, 3), np.float32)
    for i, sh in enumerate(fig.shapes, 1):
        base[i] = fig.materials[sh.material].rgb
    col = base[seg]

    # ---- patterns (anchored on the body, so stripes move with the person) and hair texture
    mat_map = mat_of[seg]
    for m, mat in enumerate(fig.materials):
        if mat.kind == "cloth" and mat.pattern == "solid":
            continue
        where = mat_map == m
        if not where.any():
            continue
        yy, xx = np.nonzero(where)
        if mat.kind == "hair":
            streak = rng.normal(0.0, 1.0, wc + 8).astype(np.float32)
            streak = np.convolve(streak, np.ones(5, np.float32) / 5, "same")[:wc]
            col[yy, xx] *= (1.0 + 0.22 * streak[xx + c0])[:, None]
            continue
        if mat.kind != "cloth":
            continue
        ym = fig.pattern_origin[1] - (top - (yy + 0.5) / sy)
        xm = left + (xx + c0 + 0.5) / sx - fig.pattern_origin[0]
        p = mat.period
        if mat.pattern == "stripes":
            mix = (np.floor(ym / p) % 2).astype(np.float32)
        else:  # checks: gingham-like, half tone where one band crosses
            mix = 0.5 * ((np.floor(ym / p) % 2) + (np.floor(xm / p) % 2)).astype(np.float32)
        col[yy, xx] = col[yy, xx] * (1 - mix[:, None]) + np.asarray(mat.rgb2, np.float32) * mix[:, None]

    # ---- shading: darken near part and silhouette boundaries (volume), light from above. Computed per
    # output pixel (the blur is wider than a pixel anyway) and spread over its supersampled block.
    edge = np.zeros(seg.shape, bool)
    edge[:, 1:] |= seg[:, 1:] != seg[:, :-1]
    edge[1:, :] |= seg[1:, :] != seg[:-1, :]
    density = edge.reshape(h_out, ss, b1 - b0, ss).mean(axis=(1, 3))
    blurred = Image.fromarray((density * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius=1.2))
    eb = np.asarray(blurred, np.float32) / 255
    vert = 1.06 - 0.14 * (np.arange(h_out, dtype=np.float32) / h_out)[:, None]
    shade = (1.0 - 0.5 * np.minimum(1.0, eb * 2.2)) * vert
    col *= np.repeat(np.repeat(shade, ss, 0), ss, 1)[..., None]
    col[~fg] = 0.0
    col_full = np.zeros((hc, wc, 3), np.uint8)
    col_full[:, c0:c1] = np.clip(col + 0.5, 0, 255).astype(np.uint8)

    # ---- optics: the native resolution depends on distance (nearer people are sharper)
    hy, near, far = ground_range(cam, canvas.height)
    rel = math.sqrt(max(fp.foot_y - hy, 1.0) / (0.5 * (near + far) - hy))
    nf = float(np.clip(cam.resolution * rel, 0.35, ss))
    nw, nh = max(8, round(w_out * nf)), max(16, round(h_out * nf))

    # ---- figure resampled with premultiplied alpha (a linear filter commutes with the blend)
    fig_n = np.asarray(Image.fromarray(col_full).resize((nw, nh), Image.Resampling.LANCZOS), np.float32)
    alpha = np.asarray(Image.fromarray(fg_full.astype(np.uint8) * 255).resize(
        (nw, nh), Image.Resampling.LANCZOS), np.float32) / 255

    # ---- background: the camera frame where the person stands, with a soft contact shadow
    k = (fp.foot_y - hy) / cam.camera_height_m          # scene pixels per metre at this distance
    fx, fy = fp.foot_x + canvas.pad, fp.foot_y + canvas.pad
    box = (fx + left * k, fy - top * k, fx + (left + bw) * k, fy - bot * k)
    bg = np.asarray(canvas.image.transform((nw, nh), Image.Transform.EXTENT, box, Image.Resampling.BILINEAR),
                    np.float32)
    nsx, nsy = nw / bw, nh / bh
    srx = 0.24 * (1.0 + 0.8 * abs(math.sin(math.radians(fp.yaw)))) * nsx
    scx, scy, sry = (0.0 - left) * nsx, top * nsy, 0.05 * nsy
    r0, r1 = max(0, int(scy - 2 * sry)), min(nh, int(scy + 2 * sry) + 1)
    if r1 > r0:
        yy = ((np.arange(r0, r1, dtype=np.float32) + 0.5 - scy) / sry)[:, None] ** 2
        xx = ((np.arange(nw, dtype=np.float32) + 0.5 - scx) / srx)[None, :] ** 2
        soft = np.clip(1.6 - (xx + yy), 0.0, 1.0)          # a soft-edged elliptical contact shadow
        bg[r0:r1] *= (1.0 - 0.4 * soft)[..., None]
    comp = fig_n + (1.0 - alpha[..., None]) * bg

    # ---- lens blur, resample to the output size
    img = Image.fromarray(np.clip(comp + 0.5, 0, 255).astype(np.uint8))
    if cam.blur_sigma > 0.05:
        img = img.filter(ImageFilter.GaussianBlur(radius=cam.blur_sigma))
    if (nw, nh) != (w_out, h_out):
        img = img.resize((w_out, h_out), Image.Resampling.BICUBIC)

    # ---- sensor: gain, white balance, noise
    out = np.asarray(img, np.float32) * (cam.gain * fp.gain) * np.asarray(cam.cast, np.float32)
    out += rng.normal(0.0, cam.noise_sigma, (h_out, w_out, 1)).astype(np.float32)
    out += rng.normal(0.0, 0.5 * cam.noise_sigma, (h_out, w_out, 3)).astype(np.float32)
    rgb = np.clip(out + 0.5, 0, 255).astype(np.uint8)

    labels = _block_majority(label_of[seg_full], ss)
    coverage = fg_full.reshape(h_out, ss, w_out, ss).mean(axis=(1, 3)).astype(np.float32)
    return RenderedImage(rgb, labels, coverage)
