"""Who a person is (traits fixed for life) and what they wear (one record per outfit).

Identity lives in body shape, gait, hair and skin; clothes change colour, pattern, sleeve length, fit
and garment type between outfits. All garment colours come from the one shared palette, so colour
alone says little about who someone is. Traits are drawn from a per-identity stream and outfits from
a per-identity outfit stream, so adding identities never changes existing ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import seeding
from .config import SynthCCConfig, json_record
from .palette import GARMENT_PALETTE, HAIR_COLOURS, HAIR_WEIGHTS, SKIN_TONES

__all__ = ["IdentityTraits", "Outfit", "sample_identity", "sample_outfits"]

RGB = Tuple[int, int, int]

# Garment-specific preferences over GARMENT_PALETTE (same order); people wear dark trousers more
# often than yellow ones, but every garment can take every palette colour.
_UPPER_W = (1.2, 1.0, 1.0, 0.8, 1.3, 1.0, 0.8, 0.8, 0.9, 0.7, 0.6, 0.5, 0.5, 0.6, 0.7, 0.5, 0.5, 0.8, 0.6, 0.6)
_LOWER_W = (2.2, 1.4, 1.0, 0.4, 0.3, 1.2, 2.4, 0.4, 0.2, 0.3, 0.2, 0.1, 0.1, 0.5, 0.3, 0.2, 0.2, 1.0, 1.2, 0.8)
_SHOE_W = (3.0, 1.0, 1.0, 0.6, 2.2, 0.6, 0.3, 0.2, 0.4, 0.3, 0.2, 0.2, 0.1, 0.2, 0.2, 0.1, 0.1, 0.6, 0.4, 1.6)


@dataclass(frozen=True)
class IdentityTraits:
    """Body and appearance of one person; lengths in metres, angles in degrees."""

    pid: int
    height: float
    head_h: float
    head_w: float
    leg_len: float            # hip-joint height
    shoulder_w: float
    hip_w: float
    waist_w: float
    torso_depth: float
    limb: float               # girth multiplier
    stride_deg: float
    arm_swing_deg: float
    hairstyle: str
    hair_size: float          # 0..1: length of long hair / ponytail, size of bun / afro
    hair_colour: str
    hair_rgb: RGB
    skin_rgb: RGB
    skirt_wearer: bool

    def to_dict(self) -> Dict[str, Any]:
        return json_record(self)


@dataclass(frozen=True)
class Outfit:
    """One set of clothes. ``looseness`` values are fractions added to the covered body width."""

    outfit: int               # 1-based, per person (LTCC file-name field)
    upper_type: str           # shirt | coat
    sleeves: str              # none | short | long
    upper_colour: str
    upper_rgb: RGB
    pattern: str              # solid | stripes | checks
    pattern_rgb: RGB
    pattern_period: float     # fraction of height
    upper_looseness: float
    upper_hem: float          # hem below the hip joint, fraction of height
    lower_type: str           # trousers | shorts | skirt
    lower_colour: str
    lower_rgb: RGB
    lower_looseness: float
    lower_length: float       # shorts: fraction of thigh; skirt: fraction of leg length
    shoe_colour: str
    shoe_rgb: RGB
    hat: bool
    hat_rgb: RGB

    def to_dict(self) -> Dict[str, Any]:
        return json_record(self)

    def lower_key(self) -> Tuple[Any, ...]:
        return (self.lower_type, self.lower_colour, self.lower_looseness, self.lower_length)


def _u(rng: np.random.Generator, r: Sequence[float]) -> float:
    return float(rng.uniform(r[0], r[1]))


def _correlated_uniforms(rng: np.random.Generator, n: int, rho: float) -> np.ndarray:
    """``n`` U(0,1) values sharing one Gaussian factor with loading ``rho`` (a person's build)."""
    build = rng.standard_normal()
    z = rho * build + math.sqrt(max(0.0, 1.0 - rho * rho)) * rng.standard_normal(n)
    return np.array([0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in z])


def _lerp(r: Sequence[float], t: float) -> float:
    return float(r[0] + (r[1] - r[0]) * t)


def sample_identity(cfg: SynthCCConfig, seed: int, pid: int) -> IdentityTraits:
    """Draw the traits of person ``pid`` from its own stream.

    Parameters
    ----------
    cfg : SynthCCConfig
    seed : int
        Dataset seed.
    pid : int
        Person id (as written in file names).

    Returns
    -------
    IdentityTraits
    """
    rng = seeding.stream(seed, seeding.IDENTITY, pid)
    height = _u(rng, cfg.height_m)
    # Shoulder, hip, waist, torso depth and limb girth share a build factor.
    sh, hp, wa, dp, lb = _correlated_uniforms(rng, 5, cfg.build_correlation)
    head_h = height * _u(rng, cfg.head_ratio)
    shoulder_w = height * _lerp(cfg.shoulder_ratio, sh)
    hip_w = height * _lerp(cfg.hip_ratio, hp)
    hair_idx = int(rng.choice(len(HAIR_COLOURS), p=np.asarray(HAIR_WEIGHTS) / sum(HAIR_WEIGHTS)))
    tone = rng.uniform(0, len(SKIN_TONES) - 1)
    lo = int(math.floor(tone))
    hi = min(lo + 1, len(SKIN_TONES) - 1)
    skin = tuple(int(round((1 - (tone - lo)) * a + (tone - lo) * b)) for a, b in zip(SKIN_TONES[lo], SKIN_TONES[hi]))
    return IdentityTraits(
        pid=pid, height=height, head_h=head_h, head_w=head_h * _u(rng, cfg.head_aspect),
        leg_len=height * _u(rng, cfg.leg_ratio), shoulder_w=shoulder_w, hip_w=hip_w,
        waist_w=min(shoulder_w, hip_w) * _lerp(cfg.waist_ratio, wa),
        torso_depth=shoulder_w * _lerp(cfg.torso_depth_ratio, dp), limb=_lerp(cfg.limb_thickness, lb),
        stride_deg=_u(rng, cfg.stride_deg), arm_swing_deg=_u(rng, cfg.arm_swing_deg),
        hairstyle=str(rng.choice(list(cfg.hairstyles))), hair_size=float(rng.uniform()),
        hair_colour=HAIR_COLOURS[hair_idx][0], hair_rgb=HAIR_COLOURS[hair_idx][1],
        skin_rgb=skin, skirt_wearer=bool(rng.uniform() < cfg.skirt_wearer_share),  # type: ignore[arg-type]
    )


def _weights(w: Sequence[float]) -> np.ndarray:
    a = np.asarray(w, dtype=float)
    return a / a.sum()


def _jitter(rng: np.random.Generator, rgb: RGB, amount: float) -> RGB:
    f = 1.0 + rng.uniform(-amount, amount, 3)
    return tuple(int(np.clip(round(c * k), 0, 255)) for c, k in zip(rgb, f))  # type: ignore[return-value]


def _pick(rng: np.random.Generator, w: Sequence[float], exclude: Sequence[int] = ()) -> int:
    p = _weights(w)
    if exclude:
        p = p.copy()
        p[list(exclude)] = 0.0
        p /= p.sum()
    return int(rng.choice(len(p), p=p))


def sample_outfits(cfg: SynthCCConfig, seed: int, traits: IdentityTraits, n: int) -> List[Outfit]:
    """Draw ``n`` outfits of one person; upper-garment colours are distinct between them.

    Later outfits may keep the first outfit's lower garment (``p_same_lower``) or shoes
    (``p_same_shoes``), as people re-wear jeans and shoes on different days.

    Parameters
    ----------
    cfg : SynthCCConfig
    seed : int
        Dataset seed.
    traits : IdentityTraits
        The wearer (skirt preference and hairstyle matter: no hats over buns or afros).
    n : int
        Number of outfits, numbered 1..n.

    Returns
    -------
    list of Outfit
    """
    rng = seeding.stream(seed, seeding.OUTFITS, traits.pid)
    outfits: List[Outfit] = []
    used_upper: List[int] = []
    first: Optional[Outfit] = None
    for k in range(1, n + 1):
        up = _pick(rng, _UPPER_W, used_upper)
        used_upper.append(up)
        coat = bool(rng.uniform() < cfg.p_coat)
        r = rng.uniform()
        pattern = "stripes" if r < cfg.p_stripes else "checks" if r < cfg.p_stripes + cfg.p_checks else "solid"
        pat = _pick(rng, _UPPER_W, [up])
        r = rng.uniform()
        sleeves = "long" if coat or r < cfg.p_long_sleeves else (
            "none" if r < cfg.p_long_sleeves + cfg.p_sleeveless else "short")
        loose_up = float(rng.uniform(0.0, cfg.max_garment_looseness)) + (0.1 if coat else 0.0)
        hem = float(rng.uniform(0.12, 0.24) if coat else rng.uniform(-0.02, 0.05))
        r = rng.uniform()
        if traits.skirt_wearer and r < cfg.p_skirt:
            lower_type, length = "skirt", float(rng.uniform(0.3, 0.75))
        elif rng.uniform() < cfg.p_shorts:
            lower_type, length = "shorts", float(rng.uniform(0.45, 0.85))
        else:
            lower_type, length = "trousers", 1.0
        lo = _pick(rng, _LOWER_W)
        loose_lo = float(rng.uniform(0.0, cfg.max_garment_looseness))
        shoe = _pick(rng, _SHOE_W)
        hat_ok = traits.hairstyle not in ("bun", "afro")
        hat = bool(hat_ok and rng.uniform() < cfg.p_hat)
        hat_c = _pick(rng, _UPPER_W)
        keep_lower = first is not None and rng.uniform() < cfg.p_same_lower
        keep_shoes = first is not None and rng.uniform() < cfg.p_same_shoes
        cj = cfg.colour_jitter
        outfit = Outfit(
            outfit=k, upper_type="coat" if coat else "shirt", sleeves=sleeves,
            upper_colour=GARMENT_PALETTE[up][0], upper_rgb=_jitter(rng, GARMENT_PALETTE[up][1], cj),
            pattern=pattern, pattern_rgb=_jitter(rng, GARMENT_PALETTE[pat][1], cj),
            pattern_period=float(rng.uniform(0.018, 0.04)), upper_looseness=loose_up, upper_hem=hem,
            lower_type=lower_type, lower_colour=GARMENT_PALETTE[lo][0],
            lower_rgb=_jitter(rng, GARMENT_PALETTE[lo][1], cj), lower_looseness=loose_lo, lower_length=length,
            shoe_colour=GARMENT_PALETTE[shoe][0], shoe_rgb=_jitter(rng, GARMENT_PALETTE[shoe][1], cj),
            hat=hat, hat_rgb=_jitter(rng, GARMENT_PALETTE[hat_c][1], cj),
        )
        if keep_lower and first is not None:
            outfit = replace(outfit, lower_type=first.lower_type, lower_colour=first.lower_colour,
                              lower_rgb=first.lower_rgb, lower_looseness=first.lower_looseness,
                              lower_length=first.lower_length)
        if keep_shoes and first is not None:
            outfit = replace(outfit, shoe_colour=first.shoe_colour, shoe_rgb=first.shoe_rgb)
        if first is None:
            first = outfit
        outfits.append(outfit)
    return outfits

