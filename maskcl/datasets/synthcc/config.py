"""Every SynthCC generation parameter in one dataclass, plus the size presets.

The resolved config (preset + overrides) and the seed are what ``synthcc.json`` records and what
idempotent regeneration compares, so anything that changes a pixel must live here. Ranges are
``(low, high)`` pairs sampled uniformly unless a field's comment says otherwise; body ratios are
fractions of the person's height.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from ...errors import ConfigError

__all__ = ["SynthCCConfig", "PRESETS", "HAIRSTYLES", "resolve_config", "expected_counts"]

#: Hairstyles the renderer knows; each changes the head/upper-body silhouette differently.
HAIRSTYLES: Tuple[str, ...] = ("crop", "bob", "long", "ponytail", "bun", "afro")

Range = Tuple[float, float]


def json_record(record: Any) -> Dict[str, Any]:
    """A flat dataclass as a JSON-ready dict: top-level tuples become lists (what JSON reads back)."""
    return {f.name: (list(v) if isinstance(v, tuple) else v)
            for f in dataclasses.fields(record) for v in [getattr(record, f.name)]}


@dataclass(frozen=True)
class SynthCCConfig:
    """All generation parameters of SynthCC (see the module docstring for conventions)."""

    # ---- output images
    image_height: int = 128
    image_width: int = 64
    #: Figures are drawn at this multiple of the output size, then resampled (anti-aliasing).
    supersample: int = 3

    # ---- identities, outfits, cameras, frames
    n_train_ids: int = 50
    n_test_ids: int = 40
    #: Outfits of a clothes-changing identity (clothes-consistent identities have one).
    outfits_per_id: int = 3
    #: Share of identities that change clothes, per split (LTCC: 46/77 train, 45/75 test).
    train_change_share: float = 1.0
    test_change_share: float = 0.6
    n_cameras: int = 8
    #: Distinct cameras that see one (identity, outfit); at least 2 so every query has a match.
    cameras_per_outfit: int = 3
    #: Images per (identity, outfit, camera) tracklet.
    frames_per_camera_train: int = 4
    frames_per_camera_test: int = 5
    #: Query images per test tracklet (LTCC: one per identity, outfit and camera); the rest is gallery.
    queries_per_tracklet: int = 1

    # ---- identity traits (fixed per person)
    height_m: Range = (1.52, 1.95)
    head_ratio: Range = (0.122, 0.148)
    head_aspect: Range = (0.72, 0.86)          # head width / head height
    leg_ratio: Range = (0.445, 0.535)          # hip-joint height / height
    shoulder_ratio: Range = (0.215, 0.275)     # shoulder breadth / height
    hip_ratio: Range = (0.175, 0.235)          # hip breadth / height
    waist_ratio: Range = (0.74, 0.98)          # waist breadth / min(shoulder, hip) breadth
    torso_depth_ratio: Range = (0.48, 0.68)    # torso depth / shoulder breadth (side-view width)
    limb_thickness: Range = (0.8, 1.25)        # multiplier on average limb girth
    #: Weight of a shared "build" factor in the body ratios above (0 = all independent).
    build_correlation: float = 0.5
    stride_deg: Range = (14.0, 26.0)           # thigh swing amplitude while walking
    arm_swing_deg: Range = (8.0, 26.0)
    hairstyles: Tuple[str, ...] = HAIRSTYLES
    #: Share of identities who sometimes wear skirts, and their chance per outfit.
    skirt_wearer_share: float = 0.35
    p_skirt: float = 0.45

    # ---- outfits (per identity and outfit)
    p_stripes: float = 0.2
    p_checks: float = 0.15
    p_long_sleeves: float = 0.5
    p_sleeveless: float = 0.08
    p_coat: float = 0.15
    p_shorts: float = 0.2
    p_hat: float = 0.08
    #: Chance that a later outfit keeps the first outfit's lower garment / shoes (people re-wear jeans).
    p_same_lower: float = 0.2
    p_same_shoes: float = 0.45
    #: Loose garments add up to this fraction of the limb/torso width.
    max_garment_looseness: float = 0.45
    colour_jitter: float = 0.08                # per-channel multiplicative jitter around a palette colour

    # ---- cameras (per camera)
    scene_width: int = 640
    scene_height: int = 360
    n_clutter: Tuple[int, int] = (14, 26)
    camera_height_m: Range = (2.4, 4.5)
    gain: Range = (0.72, 1.22)
    colour_cast: float = 0.10                  # max per-channel deviation of the camera's white balance
    blur_sigma: Range = (0.0, 0.9)             # at the native crop resolution, in pixels
    noise_sigma: Range = (1.5, 6.0)            # in 8-bit grey levels
    resolution: Range = (0.7, 1.4)             # native crop height / output height, at median distance
    #: Yaw jitter around the tracklet's walking direction, and per frame.
    tracklet_yaw_jitter_deg: float = 20.0
    frame_yaw_jitter_deg: float = 6.0

    # ---- detector box (per image)
    box_margin: Range = (-0.01, 0.09)          # of the figure height, top and bottom independently
    box_aspect_jitter: float = 0.1             # box width / (height * W/H) in 1 +- this
    box_shift: float = 0.06                    # horizontal centre jitter, of the box width
    gain_jitter: float = 0.06                  # per-image illumination change within a camera

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict (tuples become lists), the form stored in ``synthcc.json``."""
        return json_record(self)

    def validate(self) -> "SynthCCConfig":
        """Raise ``ConfigError`` naming the first inconsistent parameter; return self."""
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"data.synthcc.overrides.{key}: {why}")

        for key in ("image_height", "image_width"):
            if not 16 <= getattr(self, key) <= 1024:
                raise bad(key, "must be between 16 and 1024 pixels")
        if not 1 <= self.supersample <= 8:
            raise bad("supersample", "must be between 1 and 8")
        if self.n_train_ids < 1 or self.n_test_ids < 1:
            raise bad("n_train_ids" if self.n_train_ids < 1 else "n_test_ids", "needs at least 1 identity")
        if not 2 <= self.outfits_per_id <= 8:
            raise bad("outfits_per_id", "must be between 2 and 8 (a clothes-changing identity has >= 2)")
        for key in ("train_change_share", "test_change_share", "skirt_wearer_share", "p_skirt", "p_stripes",
                    "p_checks", "p_long_sleeves", "p_sleeveless", "p_coat", "p_shorts", "p_hat",
                    "p_same_lower", "p_same_shoes", "build_correlation"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise bad(key, "must be between 0 and 1")
        if self.p_stripes + self.p_checks > 1.0:
            raise bad("p_checks", "p_stripes + p_checks must not exceed 1")
        if self.p_long_sleeves + self.p_sleeveless > 1.0:
            raise bad("p_sleeveless", "p_long_sleeves + p_sleeveless must not exceed 1")
        if round(self.test_change_share * self.n_test_ids) < 1:
            raise bad("test_change_share", "leaves no clothes-changing test identity; raise it or n_test_ids")
        if not 2 <= self.n_cameras <= 99:
            raise bad("n_cameras", "must be between 2 and 99")
        if not 2 <= self.cameras_per_outfit <= self.n_cameras:
            raise bad("cameras_per_outfit", f"must be between 2 and n_cameras ({self.n_cameras}) so that "
                      "every query has a cross-camera match")
        if self.frames_per_camera_train < 1:
            raise bad("frames_per_camera_train", "must be at least 1")
        if not 1 <= self.queries_per_tracklet < self.frames_per_camera_test:
            raise bad("queries_per_tracklet", "must be at least 1 and below frames_per_camera_test so that "
                      "every tracklet keeps a gallery image")
        if not self.hairstyles or any(h not in HAIRSTYLES for h in self.hairstyles):
            raise bad("hairstyles", f"must be a non-empty list drawn from {', '.join(HAIRSTYLES)}")
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple) and f.name != "hairstyles" and (len(v) != 2 or v[0] > v[1]):
                raise bad(f.name, "must be a [low, high] pair with low <= high")
        if self.scene_width < 64 or self.scene_height < 64:
            raise bad("scene_width", "scenes must be at least 64x64 pixels")
        return self


def expected_counts(cfg: SynthCCConfig) -> Dict[str, Dict[str, int]]:
    """Images, identities and outfits per split implied by ``cfg`` (what the loader checks against).

    Parameters
    ----------
    cfg : SynthCCConfig

    Returns
    -------
    dict
        ``{"train" | "query" | "gallery": {"images": int, "ids": int, "clothes": int}}``.
    """
    n_cc_train = round(cfg.train_change_share * cfg.n_train_ids)
    n_cc_test = round(cfg.test_change_share * cfg.n_test_ids)
    train_outfits = n_cc_train * cfg.outfits_per_id + (cfg.n_train_ids - n_cc_train)
    test_outfits = n_cc_test * cfg.outfits_per_id + (cfg.n_test_ids - n_cc_test)
    cpo = cfg.cameras_per_outfit
    return {
        "train": {"images": train_outfits * cpo * cfg.frames_per_camera_train, "ids": cfg.n_train_ids,
                  "clothes": train_outfits},
        "query": {"images": test_outfits * cpo * cfg.queries_per_tracklet, "ids": cfg.n_test_ids,
                  "clothes": test_outfits},
        "gallery": {"images": test_outfits * cpo * (cfg.frames_per_camera_test - cfg.queries_per_tracklet),
                    "ids": cfg.n_test_ids, "clothes": test_outfits},
    }


#: Size presets. ``tiny`` keeps the end-to-end DAG test to minutes, ``default`` is the 15-minute CPU
#: DAG, ``large`` the benchmark size. Everything else keeps the dataclass defaults.
PRESETS: Dict[str, SynthCCConfig] = {
    "tiny": SynthCCConfig(image_height=64, image_width=32, n_train_ids=8, n_test_ids=6, n_cameras=4,
                          cameras_per_outfit=2, frames_per_camera_train=3, frames_per_camera_test=3,
                          test_change_share=0.67, scene_width=320, scene_height=180),
    "default": SynthCCConfig(),
    "large": SynthCCConfig(n_train_ids=170, n_test_ids=100, n_cameras=12, cameras_per_outfit=4,
                           frames_per_camera_train=6, frames_per_camera_test=5, train_change_share=0.7),
}


def _coerce(key: str, default: Any, value: Any) -> Any:
    """Check an override against the type of the field's default and convert lists to tuples."""
    def fail(what: str) -> ConfigError:
        return ConfigError(f"data.synthcc.overrides.{key}: expected {what}, got {value!r}")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("a number")
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise fail("a list")
        if default and isinstance(default[0], str):
            if not all(isinstance(v, str) for v in value):
                raise fail("a list of names")
            return tuple(value)
        items = tuple(_coerce(key, d, v) for d, v in zip(default, value))
        if len(value) != len(default):
            raise fail(f"a list of {len(default)} numbers")
        return items
    return value  # pragma: no cover - every field has one of the types above


def resolve_config(preset: str = "default", overrides: Optional[Mapping[str, Any]] = None) -> SynthCCConfig:
    """The preset's config with ``overrides`` applied and validated.

    Parameters
    ----------
    preset : str
        One of ``PRESETS`` (``tiny``, ``default``, ``large``).
    overrides : mapping, optional
        Field name → value; lists are accepted for the ``(low, high)`` ranges.

    Returns
    -------
    SynthCCConfig

    Raises
    ------
    ConfigError
        Unknown preset or key (the message lists the valid ones), wrong type, or inconsistent values.
    """
    if preset not in PRESETS:
        raise ConfigError(f"data.synthcc.preset: unknown SynthCC preset {preset!r}; "
                          f"valid presets: {', '.join(PRESETS)}")
    base = PRESETS[preset]
    overrides = dict(overrides or {})
    valid = [f.name for f in dataclasses.fields(SynthCCConfig)]
    unknown = sorted(k for k in overrides if k not in valid)
    if unknown:
        raise ConfigError(f"data.synthcc.overrides: unknown SynthCC parameter {unknown[0]!r}; "
                          f"valid parameters: {', '.join(valid)}")
    changes = {k: _coerce(k, getattr(base, k), v) for k, v in overrides.items()}
    return dataclasses.replace(base, **changes).validate()

