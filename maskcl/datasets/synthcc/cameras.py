"""Cameras: a fixed background scene, a ground plane, optics and a white balance per camera.

A camera's scene is rendered once (indoor corridor or outdoor street: a gradient plus clutter) and
every crop of that camera is cut from it where the person stands, so backgrounds repeat within a
camera and differ between cameras, as in real surveillance footage. People stand on a ground plane:
their apparent size follows from the camera height and their distance below the horizon.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from . import seeding
from .config import SynthCCConfig, json_record

__all__ = ["CameraSettings", "VIEWS", "sample_camera", "render_scene"]

#: Walking directions as body yaw (0 = facing the camera, 180 = walking away, ±90 = profile).
VIEWS: Dict[str, float] = {"front": 0.0, "back": 180.0, "left": -90.0, "right": 90.0}


@dataclass(frozen=True)
class CameraSettings:
    """Everything that makes one camera look different from another."""

    cam: int                          # 1-based (file-name field c<cam>)
    kind: str                         # indoor | outdoor
    horizon: float                    # fraction of the scene height
    camera_height_m: float
    gain: float
    cast: Tuple[float, float, float]  # per-channel white-balance multipliers
    blur_sigma: float
    noise_sigma: float
    resolution: float                 # native crop height / output height at median distance
    view_weights: Tuple[float, float, float, float]  # front, back, left, right
    wall_rgb: Tuple[int, int, int]
    wall2_rgb: Tuple[int, int, int]
    floor_rgb: Tuple[int, int, int]
    floor2_rgb: Tuple[int, int, int]
    n_clutter: int

    def to_dict(self) -> Dict[str, Any]:
        return json_record(self)


def _rgb(rng: np.random.Generator, lo: int, hi: int, tint: float = 0.25) -> Tuple[int, int, int]:
    base = rng.uniform(lo, hi)
    t = 1.0 + rng.uniform(-tint, tint, 3)
    return tuple(int(np.clip(base * k, 0, 255)) for k in t)  # type: ignore[return-value]


def sample_camera(cfg: SynthCCConfig, seed: int, cam: int) -> CameraSettings:
    """Draw the settings of camera ``cam`` from its own stream.

    Parameters
    ----------
    cfg : SynthCCConfig
    seed : int
        Dataset seed.
    cam : int
        1-based camera number.

    Returns
    -------
    CameraSettings
    """
    rng = seeding.stream(seed, seeding.CAMERA, cam)
    kind = "indoor" if rng.uniform() < 0.5 else "outdoor"
    cast = 1.0 + rng.uniform(-cfg.colour_cast, cfg.colour_cast, 3)
    cast = cast / cast.mean()
    views = rng.dirichlet([0.9, 0.9, 0.9, 0.9])
    if kind == "indoor":
        wall, wall2 = _rgb(rng, 120, 225), _rgb(rng, 90, 200)
        floor, floor2 = _rgb(rng, 70, 170, 0.15), _rgb(rng, 60, 160, 0.15)
    else:
        wall, wall2 = _rgb(rng, 150, 235, 0.2), _rgb(rng, 80, 190, 0.3)   # sky / building band
        floor, floor2 = _rgb(rng, 80, 150, 0.08), _rgb(rng, 60, 130, 0.08)
    return CameraSettings(
        cam=cam, kind=kind, horizon=float(rng.uniform(0.22, 0.45)),
        camera_height_m=float(rng.uniform(*cfg.camera_height_m)), gain=float(rng.uniform(*cfg.gain)),
        cast=tuple(float(c) for c in cast), blur_sigma=float(rng.uniform(*cfg.blur_sigma)),  # type: ignore[arg-type]
        noise_sigma=float(rng.uniform(*cfg.noise_sigma)), resolution=float(rng.uniform(*cfg.resolution)),
        view_weights=tuple(float(v) for v in views),  # type: ignore[arg-type]
        wall_rgb=wall, wall2_rgb=wall2, floor_rgb=floor, floor2_rgb=floor2,
        n_clutter=int(rng.integers(cfg.n_clutter[0], cfg.n_clutter[1] + 1)),
    )


def _vertical_gradient(h: int, w: int, top: Tuple[int, int, int], bottom: Tuple[int, int, int]) -> np.ndarray:
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    return (np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t) * np.ones((1, w, 1), np.float32)


def _clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, cam: CameraSettings, w: int, h: int,
             hy: int) -> None:
    """Doors, windows, posters, pillars, plants, benches and bins along the back wall / street."""
    items: List[str] = (["door", "window", "poster", "pillar", "plant", "bench", "bin"] if cam.kind == "indoor"
                        else ["building", "building", "tree", "pole", "bench", "bin", "sign"])
    for _ in range(cam.n_clutter):
        item = items[int(rng.integers(len(items)))]
        x = int(rng.uniform(-0.05, 1.0) * w)
        col = _rgb(rng, 30, 230, 0.45)
        dark = tuple(int(c * 0.55) for c in col)
        if item in ("door", "window", "poster", "sign"):
            bw = int(rng.uniform(0.05, 0.16) * w)
            bh = int(rng.uniform(0.25, 0.8) * hy) if item != "door" else int(hy * rng.uniform(0.8, 1.1))
            y1 = hy + int(rng.uniform(0, 0.05) * h) if item == "door" else int(rng.uniform(0.1, 0.9) * hy) + bh
            draw.rectangle([x, y1 - bh, x + bw, y1], fill=col, outline=dark, width=max(1, w // 300))
            if item == "window":
                draw.line([x + bw // 2, y1 - bh, x + bw // 2, y1], fill=dark, width=max(1, w // 400))
                draw.line([x, y1 - bh // 2, x + bw, y1 - bh // 2], fill=dark, width=max(1, w // 400))
        elif item == "building":
            bw = int(rng.uniform(0.12, 0.35) * w)
            top = int(rng.uniform(0.0, 0.7) * hy)
            draw.rectangle([x, top, x + bw, hy + 2], fill=col)
            win = _rgb(rng, 40, 200, 0.3)
            step = max(4, int(rng.uniform(0.025, 0.05) * w))
            for wy in range(top + step // 2, hy - step // 2, step):
                for wx in range(x + step // 3, x + bw - step // 2, step):
                    draw.rectangle([wx, wy, wx + step // 2, wy + step // 2], fill=win)
        elif item in ("pillar", "pole"):
            bw = int(rng.uniform(0.008, 0.05) * w)
            draw.rectangle([x, 0 if item == "pillar" else int(rng.uniform(0, 0.5) * hy), x + bw,
                            hy + int(0.12 * (h - hy))], fill=col)
        elif item in ("plant", "tree"):
            r = int(rng.uniform(0.03, 0.1) * w)
            cy = hy - int(rng.uniform(0.1, 0.6) * hy) if item == "tree" else hy + r // 3
            draw.rectangle([x - r // 6, cy, x + r // 6, max(cy + r, hy + int(0.08 * (h - hy)))], fill=(70, 50, 35))
            green = (int(rng.uniform(30, 90)), int(rng.uniform(90, 160)), int(rng.uniform(30, 80)))
            draw.ellipse([x - r, cy - r, x + r, cy + int(r * 0.8)], fill=green)
        else:  # bench / bin: low objects on the ground line
            bw = int(rng.uniform(0.03, 0.14) * w)
            bh = int(rng.uniform(0.04, 0.12) * h)
            y1 = hy + int(rng.uniform(0.02, 0.2) * (h - hy))
            draw.rectangle([x, y1 - bh, x + bw, y1], fill=col, outline=dark)


def _floor_objects(draw: ImageDraw.ImageDraw, rng: np.random.Generator, cam: CameraSettings, w: int, h: int,
                   hy: int) -> None:
    """Objects standing on the ground at various distances, sized by perspective (behind passers-by)."""
    kinds = {"pillar": (0.45, 3.2), "plant": (0.7, 1.1), "bench": (1.6, 0.5), "bin": (0.5, 0.9),
             "bollard": (0.22, 0.9), "sign": (0.7, 1.9)}
    names = list(kinds)
    n = max(1, cam.n_clutter // 2)
    grounds = np.sort(rng.uniform(hy + 0.04 * (h - hy), h + 0.1 * (h - hy), n))
    for g in grounds:                                   # far first, so nearer objects overlap them
        kind = names[int(rng.integers(len(names)))]
        k = (g - hy) / cam.camera_height_m               # pixels per metre at that distance
        ow, oh = kinds[kind][0] * k * rng.uniform(0.8, 1.25), kinds[kind][1] * k * rng.uniform(0.8, 1.25)
        x = rng.uniform(-0.05, 1.0) * w
        col = _rgb(rng, 30, 220, 0.4)
        dark = tuple(int(c * 0.6) for c in col)
        box = [x, g - oh, x + ow, g]
        if kind == "plant":
            draw.rectangle([x + 0.3 * ow, g - 0.35 * oh, x + 0.7 * ow, g], fill=dark)
            green = (int(rng.uniform(30, 90)), int(rng.uniform(90, 160)), int(rng.uniform(30, 80)))
            draw.ellipse([x, g - oh, x + ow, g - 0.25 * oh], fill=green)
        elif kind == "bench":
            draw.rectangle([x, g - oh, x + ow, g - 0.6 * oh], fill=col, outline=dark)
            draw.rectangle([x + 0.05 * ow, g - 0.6 * oh, x + 0.12 * ow, g], fill=dark)
            draw.rectangle([x + 0.88 * ow, g - 0.6 * oh, x + 0.95 * ow, g], fill=dark)
        elif kind == "sign":
            draw.rectangle([x + 0.45 * ow, g - oh, x + 0.55 * ow, g], fill=dark)
            draw.rectangle([x, g - oh, x + ow, g - 0.55 * oh], fill=col, outline=dark)
        else:
            draw.rectangle(box, fill=col, outline=dark)
        # a soft contact shadow on the floor
        draw.ellipse([x - 0.1 * ow, g - 0.04 * k, x + 1.1 * ow, g + 0.04 * k], outline=None,
                     fill=tuple(int(c * 0.8) for c in cam.floor_rgb))


def render_scene(cfg: SynthCCConfig, seed: int, cam: CameraSettings) -> Image.Image:
    """The camera's background frame, deterministic by seed.

    Parameters
    ----------
    cfg : SynthCCConfig
        Scene size.
    seed : int
    cam : CameraSettings

    Returns
    -------
    PIL.Image.Image
        RGB image of ``scene_width`` × ``scene_height`` pixels.
    """
    rng = seeding.stream(seed, seeding.SCENE, cam.cam)
    w, h = cfg.scene_width, cfg.scene_height
    hy = int(cam.horizon * h)
    img = np.empty((h, w, 3), np.float32)
    img[:hy] = _vertical_gradient(hy, w, cam.wall_rgb, cam.wall2_rgb)
    img[hy:] = _vertical_gradient(h - hy, w, cam.floor2_rgb, cam.floor_rgb)
    # Floor tiles / paving in perspective: rows get denser toward the horizon.
    ys = hy + (h - hy) * (np.linspace(0.0, 1.0, 14) ** 2)
    for y in ys[1:]:
        img[int(y) - 1:int(y) + 1, :, :] *= 0.88
    vx = rng.uniform(0.3, 0.7) * w
    yy = np.arange(hy, h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    depth = (yy - hy + 1.0) / (h - hy)
    u = (xx - vx) / depth
    line = (np.abs(((u / (0.12 * w)) % 1.0) - 0.5) > 0.47)
    img[hy:][line] *= 0.88
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    _clutter(draw, rng, cam, w, h, hy)
    _floor_objects(draw, rng, cam, w, h, hy)
    pil = pil.filter(ImageFilter.GaussianBlur(radius=0.6))
    # Low-frequency illumination falloff and fine texture noise.
    arr = np.asarray(pil, np.float32)
    gx = rng.uniform(-0.2, 0.2) * (np.linspace(-1, 1, w, dtype=np.float32)[None, :, None])
    gy = rng.uniform(-0.15, 0.1) * (np.linspace(-1, 1, h, dtype=np.float32)[:, None, None])
    arr = arr * (1.0 + gx + gy) + rng.normal(0.0, 3.0, (h, w, 1)).astype(np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
