"""The person as flat shapes: a jointed 3-D body posed mid-stride, turned and projected.

Limbs are cylinders (drawn as capsules of constant width), the torso is a stack of elliptical cross
sections (so a profile is as narrow as the torso is deep), and the walk swings thighs and arms about
the hip and shoulder axes. Shapes come back in painter's order (far to near) with their LIP label and
material; coordinates are metres in the image plane, x to the right and y up, feet on y = 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Tuple

import numpy as np

from .identity import IdentityTraits, Outfit
from .palette import LABEL

__all__ = ["Material", "Shape", "Figure", "build_figure"]


@dataclass(frozen=True)
class Material:
    """How a shape is coloured: a base colour plus an optional pattern or texture."""

    rgb: Tuple[int, int, int]
    kind: str = "cloth"                       # cloth | skin | hair
    pattern: str = "solid"                    # solid | stripes | checks
    rgb2: Tuple[int, int, int] = (0, 0, 0)
    period: float = 0.0                       # pattern period in metres


@dataclass(frozen=True)
class Shape:
    points: np.ndarray                        # (N, 2) polygon, metres
    label: int
    material: int


@dataclass(frozen=True)
class Figure:
    shapes: List[Shape]
    materials: List[Material]
    bbox: Tuple[float, float, float, float]   # x0, y0, x1, y1 (metres)
    pattern_origin: Tuple[float, float]       # where stripes and checks are anchored


# ----------------------------------------------------------------------------- polygon helpers
@lru_cache(maxsize=64)
def _arc(n: int, t0: float, t1: float, endpoint: bool = True) -> np.ndarray:
    t = np.linspace(t0, t1, n, endpoint=endpoint)
    return np.stack([np.cos(t), np.sin(t)], 1)


def _capsule(a: np.ndarray, b: np.ndarray, r: float, r2: float | None = None, n: int = 6) -> np.ndarray:
    """Rounded polygon around the segment a-b (2-D): radius ``r`` at a, ``r2`` (default ``r``) at b."""
    r2 = r if r2 is None else r2
    d = b - a
    length = math.hypot(d[0], d[1])
    ca, sa = (d[0] / length, d[1] / length) if length > 1e-9 else (1.0, 0.0)
    rot = np.array([[ca, sa], [-sa, ca]])           # row vectors rotated by the segment's angle
    p1 = a + r * (_arc(n + 1, math.pi / 2, 3 * math.pi / 2) @ rot)
    p2 = b + r2 * (_arc(n + 1, -math.pi / 2, math.pi / 2) @ rot)
    return np.concatenate([p1, p2])


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 24, t0: float = 0.0,
             t1: float = 2 * math.pi) -> np.ndarray:
    unit = _arc(n, t0, t1, (t1 - t0) < 2 * math.pi - 1e-9)
    return unit * np.array([rx, ry]) + np.array([cx, cy])


def _clip_to_ellipse(p: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Pull points outside the ellipse radially onto it (keeps the face inside the head)."""
    q = p.copy()
    k = np.sqrt(((q[:, 0] - cx) / rx) ** 2 + ((q[:, 1] - cy) / ry) ** 2)
    out = k > 1.0
    q[out, 0] = cx + (q[out, 0] - cx) / k[out]
    q[out, 1] = cy + (q[out, 1] - cy) / k[out]
    return q


class _Projector:
    """Turns the body by ``yaw`` about the vertical axis and drops depth (orthographic view)."""

    def __init__(self, yaw_deg: float) -> None:
        t = math.radians(yaw_deg)
        self.c, self.s = math.cos(t), math.sin(t)

    def xy(self, p: np.ndarray) -> np.ndarray:
        return np.array([p[0] * self.c + p[2] * self.s, p[1]])

    def depth(self, p: np.ndarray) -> float:
        return float(-p[0] * self.s + p[2] * self.c)

    def half_width(self, w: float, d: float) -> float:
        """Half the projected width of an elliptical cross-section (breadth ``w``, depth ``d``)."""
        return 0.5 * math.hypot(w * self.c, d * self.s)


def _dir(swing: float, abduct: float = 0.0, side: float = 0.0) -> np.ndarray:
    """Unit vector hanging down, swung forward by ``swing`` and out sideways by ``abduct`` (radians)."""
    return np.array([side * math.sin(abduct), -math.cos(abduct) * math.cos(swing),
                     math.cos(abduct) * math.sin(swing)])


# ----------------------------------------------------------------------------- the figure
def build_figure(t: IdentityTraits, o: Outfit, yaw_deg: float, phase: float) -> Figure:
    """Pose person ``t`` in outfit ``o`` at walking ``phase`` (radians) seen at body yaw ``yaw_deg``.

    Parameters
    ----------
    t : IdentityTraits
    o : Outfit
    yaw_deg : float
        0 faces the camera, 180 walks away, +90 / -90 are profiles facing image right / left.
    phase : float
        Gait phase; the left thigh swings forward by ``stride * sin(phase)``.

    Returns
    -------
    Figure
        Shapes in painter's order, materials, and the bounding box of all shapes.
    """
    H = t.height
    pj = _Projector(yaw_deg)
    c, s = pj.c, pj.s
    L = LABEL
    mats = [Material(t.skin_rgb, "skin"), Material(t.hair_rgb, "hair"),
            Material(o.upper_rgb, "cloth", o.pattern, o.pattern_rgb, o.pattern_period * H),
            Material(o.lower_rgb), Material(o.shoe_rgb), Material(o.hat_rgb)]
    SKIN, HAIR, UPPER, LOWER, SHOE, HAT = range(6)
    upper_label = L["coat"] if o.upper_type == "coat" else L["upper"]

    # Girths and lengths (fractions of height from anthropometric averages, scaled by build).
    ua_r, fa_r, hand_r = 0.028 * H * t.limb, 0.022 * H * t.limb, 0.017 * H * (0.5 + 0.5 * t.limb)
    # Thighs and calves taper: radius at the top joint, at the knee, at the ankle.
    th_r, knee_r, ankle_r, shoe_r = 0.047 * H * t.limb, 0.029 * H * t.limb, 0.019 * H * t.limb, 0.024 * H
    calf_r = 0.031 * H * t.limb
    neck_r = 0.27 * t.head_w
    ankle_h = 0.045 * H
    thigh_len, calf_len = 0.53 * (t.leg_len - ankle_h), 0.47 * (t.leg_len - ankle_h)
    shoulder_y = H - t.head_h - 0.042 * H
    ua_len, fa_len, hand_len = 0.186 * H, 0.146 * H, 0.095 * H
    waist_y = t.leg_len + 0.38 * (shoulder_y - t.leg_len)

    # ---- legs (3-D joints), then drop the figure so the lowest shoe touches the ground
    stride, swing = math.radians(t.stride_deg), math.radians(t.arm_swing_deg)
    legs: Dict[str, Dict[str, np.ndarray]] = {}
    for side, ph in (("left", phase), ("right", phase + math.pi)):
        sx = 1.0 if side == "left" else -1.0
        a = stride * math.sin(ph)
        flex = math.radians(8.0 + 45.0 * max(0.0, math.cos(ph)) ** 2)
        hip = np.array([sx * (t.hip_w / 2 - 0.95 * th_r), t.leg_len, 0.0])
        knee = hip + thigh_len * _dir(a, -0.045, sx)   # thighs converge slightly toward the knees
        ankle = knee + calf_len * _dir(a - flex)
        heel = ankle + np.array([0.0, -0.6 * ankle_h, -0.03 * H])
        toe = ankle + np.array([0.0, -0.75 * ankle_h, 0.11 * H])
        legs[side] = {"hip": hip, "knee": knee, "ankle": ankle, "heel": heel, "toe": toe}
    ground = min(min(j["heel"][1], j["toe"][1]) for j in legs.values()) - shoe_r
    lift = np.array([0.0, -ground, 0.0])
    for j in legs.values():
        for k in j:
            j[k] = j[k] + lift
    dy = -ground
    shoulder_y += dy
    waist_y += dy
    leg_top = t.leg_len + dy

    # ---- torso cross-sections: (y, breadth, depth)
    levels = [
        (shoulder_y + 0.030 * H, 2.2 * neck_r, 2.2 * neck_r),
        (shoulder_y + 0.020 * H, 2.2 * neck_r + 0.4 * (t.shoulder_w - 2.2 * neck_r), 0.75 * t.torso_depth),
        (shoulder_y + 0.004 * H, 0.85 * t.shoulder_w, 0.8 * t.torso_depth),
        (shoulder_y - 0.015 * H, t.shoulder_w - 0.01 * H, 0.85 * t.torso_depth),
        (shoulder_y - 0.090 * H, max(t.shoulder_w - 1.8 * ua_r, t.waist_w), t.torso_depth),
        (waist_y, t.waist_w, 0.85 * t.torso_depth),
        (leg_top + 0.02 * H, t.hip_w, 0.78 * t.hip_w),
        (leg_top - 0.03 * H, 0.92 * t.hip_w, 0.70 * t.hip_w),
    ]

    def hw_at(y: float, grow: float = 0.0) -> float:
        ys = [lv[0] for lv in levels]
        if y >= ys[0]:
            lv = levels[0]
        elif y <= ys[-1]:
            lv = levels[-1]
        else:
            i = next(i for i in range(len(ys) - 1) if ys[i] >= y >= ys[i + 1])
            f = (ys[i] - y) / (ys[i] - ys[i + 1])
            lv = (y, levels[i][1] + f * (levels[i + 1][1] - levels[i][1]),
                  levels[i][2] + f * (levels[i + 1][2] - levels[i][2]))
        return pj.half_width(lv[1], lv[2]) * (1.0 + grow) + 0.004 * H * (grow > 0)

    def leg_spread(y: float, r: float) -> float:
        """Largest |x| of either leg (plus ``r``) at height ``y`` along the thigh and calf."""
        best = 0.0
        for j in legs.values():
            for a, b in ((j["hip"], j["knee"]), (j["knee"], j["ankle"])):
                pa, pb = pj.xy(a), pj.xy(b)
                if min(pa[1], pb[1]) <= y <= max(pa[1], pb[1]) and abs(pa[1] - pb[1]) > 1e-9:
                    f = (y - pa[1]) / (pb[1] - pa[1])
                    best = max(best, abs(pa[0] + f * (pb[0] - pa[0])) + r)
        return best

    def trunk(y_top: float, y_bot: float, grow: float, flare: float = 0.0) -> np.ndarray:
        ys = [y_top] + [lv[0] for lv in levels if y_bot < lv[0] < y_top] + [y_bot]
        hws = [hw_at(y, grow) for y in ys]
        if flare > 0 and y_bot < leg_top - 0.03 * H:  # a coat hem has to cover the striding thighs
            hws[-1] = max(hws[-1], leg_spread(y_bot, th_r * (1 + grow)) + flare)
        left = [(-w, y) for w, y in zip(hws, ys)]
        right = [(w, y) for w, y in zip(hws[::-1], ys[::-1])]
        return np.array(left + right)

    shapes_legs: List[Tuple[float, List[Shape]]] = []
    for side, j in legs.items():
        arm_lbl = L["left_leg"] if side == "left" else L["right_leg"]
        shoe_lbl = L["left_shoe"] if side == "left" else L["right_shoe"]
        hip2, knee2, ankle2 = pj.xy(j["hip"]), pj.xy(j["knee"]), pj.xy(j["ankle"])
        calf_top = knee2 + 0.3 * (ankle2 - knee2)
        group = [Shape(_capsule(hip2, knee2, th_r, knee_r), arm_lbl, SKIN),
                 Shape(_capsule(knee2, calf_top, knee_r, calf_r), arm_lbl, SKIN),
                 Shape(_capsule(calf_top, ankle2, calf_r, ankle_r), arm_lbl, SKIN),
                 Shape(_capsule(pj.xy(j["heel"]), pj.xy(j["toe"]), shoe_r), shoe_lbl, SHOE)]
        lo = o.lower_looseness
        if o.lower_type == "trousers":
            g = 1 + 0.6 * lo
            r_knee = max(knee_r * 1.2, calf_r) * g + 0.004 * H
            group += [Shape(_capsule(hip2, knee2, th_r * g + 0.004 * H, r_knee), L["pants"], LOWER),
                      Shape(_capsule(knee2, ankle2, r_knee, max(ankle_r * 1.5, calf_r * 0.95) * g + 0.003 * H),
                            L["pants"], LOWER)]
        elif o.lower_type == "shorts":
            f = o.lower_length
            end = j["hip"] + f * (j["knee"] - j["hip"])
            r_end = (th_r + f * (knee_r - th_r)) * (1 + lo) + 0.006 * H
            group.append(Shape(_capsule(hip2, pj.xy(end), th_r * (1 + lo) + 0.006 * H, r_end), L["pants"], LOWER))
        shapes_legs.append((pj.depth(j["hip"]), group))

    # ---- arms
    outer = t.hip_w / 2 * (1 + 0.2 * o.lower_looseness) + 0.9 * fa_r
    if o.upper_hem > 0.0 or o.upper_type == "coat":
        outer = max(outer, hw_at(leg_top, o.upper_looseness * 0.25) / max(abs(c), 0.3) + 0.6 * fa_r)
    shapes_arms: List[Tuple[float, List[Shape]]] = []
    for side, ph in (("left", phase + math.pi), ("right", phase)):
        sx = 1.0 if side == "left" else -1.0
        lbl = L["left_arm"] if side == "left" else L["right_arm"]
        sj = np.array([sx * (t.shoulder_w / 2 - ua_r), shoulder_y - 0.9 * ua_r, 0.0])
        abd = math.asin(float(np.clip((outer - abs(sj[0])) / (ua_len + fa_len), 0.035, 0.35)))
        b = swing * math.sin(ph)
        elbow = sj + ua_len * _dir(b, abd, sx)
        eps = math.radians(10.0 + 20.0 * max(0.0, math.sin(b)))
        d2 = _dir(b + eps, 1.1 * abd, sx)
        wrist = elbow + fa_len * d2
        tip = wrist + hand_len * d2
        s2, e2, w2 = pj.xy(sj), pj.xy(elbow), pj.xy(wrist)
        group = [Shape(_capsule(s2, e2, ua_r), lbl, SKIN), Shape(_capsule(e2, w2, fa_r), lbl, SKIN),
                 Shape(_capsule(w2, pj.xy(tip), hand_r), lbl, SKIN)]
        lu = o.upper_looseness
        if o.sleeves == "short":
            end = sj + 0.55 * (elbow - sj)
            group.append(Shape(_capsule(s2, pj.xy(end), ua_r * (1 + lu) + 0.004 * H), upper_label, UPPER))
        elif o.sleeves == "long":
            cuff = wrist - 0.04 * H * d2
            group += [Shape(_capsule(s2, e2, ua_r * (1 + lu) + 0.004 * H), upper_label, UPPER),
                      Shape(_capsule(e2, pj.xy(cuff), fa_r * (1 + lu) + 0.004 * H), upper_label, UPPER)]
        shapes_arms.append((pj.depth(sj), group))

    # ---- trunk garments
    pelvis: List[Shape] = []
    if o.lower_type in ("trousers", "shorts"):
        band = leg_top + 0.085 * H
        pelvis.append(Shape(trunk(band, leg_top - 0.035 * H, 0.15 * o.lower_looseness + 1e-3), L["pants"], LOWER))
    skirt: List[Shape] = []
    if o.lower_type == "skirt":
        top = leg_top + 0.09 * H
        hem = leg_top - o.lower_length * t.leg_len
        w_top = hw_at(top, 0.05)
        w_hip = hw_at(leg_top + 0.02 * H, 0.05 + 0.2 * o.lower_looseness)
        w_hem = max(w_hip * (1.08 + 0.5 * o.lower_looseness), leg_spread(hem, th_r) + 0.006 * H)
        pts = [(-w_top, top), (-w_hip, leg_top + 0.02 * H), (-w_hem, hem), (0.0, hem - 0.012 * H),
               (w_hem, hem), (w_hip, leg_top + 0.02 * H), (w_top, top)]
        skirt.append(Shape(np.array(pts), L["skirt"], LOWER))
    head_c = pj.xy(np.array([0.0, H + dy - t.head_h / 2, 0.012 * H]))
    hx, hy = float(head_c[0]), float(head_c[1])
    neck = Shape(_capsule(pj.xy(np.array([0.0, shoulder_y, 0.0])),
                          pj.xy(np.array([0.0, hy - 0.25 * t.head_h, 0.006 * H])), neck_r), L["face"], SKIN)
    hem_y = leg_top - o.upper_hem * H
    torso = Shape(trunk(shoulder_y + 0.030 * H, hem_y, 0.25 * o.upper_looseness + 1e-3,
                        flare=0.015 * H if o.upper_type == "coat" else 0.0), upper_label, UPPER)

    # ---- head and hair
    rx = pj.half_width(t.head_w, 1.15 * t.head_w)
    ry = t.head_h / 2
    hair = _hair(t, pj, hx, hy, rx, ry, shoulder_y, H, head_c_3d=np.array([0.0, hy, 0.012 * H]))
    head = [Shape(_ellipse(hx, hy, rx, ry), L["face"], SKIN)]
    face: List[Shape] = []
    if c > -0.25:
        f = _ellipse(hx + s * 0.33 * rx, hy - 0.2 * ry, rx * (0.86 - 0.3 * abs(s)), 0.78 * ry)
        face.append(Shape(_clip_to_ellipse(f, hx, hy, rx * 0.995, ry * 0.995), L["face"], SKIN))
    hat: List[Shape] = []
    if o.hat:
        hr = rx + 0.01 * H
        hat.append(Shape(_ellipse(hx - 0.05 * s * rx, hy + 0.28 * ry, hr, 0.78 * ry, 14, 0.0, math.pi),
                         L["hat"], HAT))
        brim_len = rx * (0.35 + 0.55 * abs(s))
        a = np.array([hx + s * 0.2 * rx, hy + 0.3 * ry])
        hat.append(Shape(_capsule(a, a + np.array([s * brim_len, 0.0]), 0.06 * ry), L["hat"], HAT))

    # ---- painter's order
    near_arms = [g for d, g in sorted(shapes_arms, key=lambda x: x[0]) if d >= -0.02 * H]
    behind = sorted([(d, g) for d, g in shapes_legs] + [(d, g) for d, g in shapes_arms if d < -0.02 * H],
                    key=lambda x: x[0])
    order: List[Shape] = list(hair["behind_body"])
    for _, g in behind:
        order += g
    order += pelvis + skirt + [neck, torso]
    for g in near_arms:
        order += g
    order += hair["behind_head"] + head + hair["cap"] + face + hat + hair["over_head"] + hair["over_body"]
    pts = np.concatenate([sh.points for sh in order])
    bbox = (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()))
    return Figure(order, mats, bbox, (0.0, shoulder_y))


def _hair(t: IdentityTraits, pj: _Projector, hx: float, hy: float, rx: float, ry: float, shoulder_y: float,
          H: float, head_c_3d: np.ndarray) -> Dict[str, List[Shape]]:
    """Hair pieces by layer: behind_body, behind_head, cap, over_head, over_body."""
    c, s = pj.c, pj.s
    HAIR, lbl = 1, LABEL["hair"]
    out: Dict[str, List[Shape]] = {k: [] for k in ("behind_body", "behind_head", "cap", "over_head", "over_body")}
    front, back = c > 0.35, c < -0.25
    style, size = t.hairstyle, t.hair_size
    thick = {"crop": 0.006, "bob": 0.013, "long": 0.012, "ponytail": 0.007, "bun": 0.007, "afro": 0.0}[style] * H

    # Cap: the hair on the skull; the face (drawn over it) leaves the hairline.
    if style == "afro":
        k = 1.3 + 0.35 * size
        cap = _ellipse(hx - 0.08 * s * rx, hy + 0.22 * ry, rx * k, ry * (1.1 + 0.25 * size))
    elif back:
        cap = _ellipse(hx, hy + 0.06 * ry, rx + thick, ry * 0.97 + thick)
    else:
        cap = _ellipse(hx - 0.14 * s * rx, hy + 0.14 * ry + 0.3 * thick, rx + thick, ry * 0.9 + thick)
    out["cap"].append(Shape(cap, lbl, HAIR))

    def put(layer_front: str, layer_side: str, layer_back: str, shape: Shape) -> None:
        out[layer_front if front else layer_back if back else layer_side].append(shape)

    if style in ("bob", "long"):
        bottom = hy - 1.05 * ry if style == "bob" else shoulder_y - (0.04 + 0.14 * size) * H
        w_top = rx + thick + 0.004 * H
        w_bot = (rx + 0.012 * H) if style == "bob" else (rx * 1.15 + 0.01 * H)
        off = -s * (0.15 if style == "bob" else 0.45) * rx
        if not front and not back:
            w_bot *= 0.75
        top = hy + 0.55 * ry
        mass = np.array([(hx + off - w_top, top), (hx + off - w_bot, bottom + 0.02 * H),
                         (hx + off - 0.6 * w_bot, bottom), (hx + off + 0.6 * w_bot, bottom),
                         (hx + off + w_bot, bottom + 0.02 * H), (hx + off + w_top, top)])
        mass = np.concatenate([_ellipse(hx + off, top, w_top, 0.45 * ry, 10, 0.0, math.pi), mass[1:-1]])
        put("behind_body" if style == "long" else "behind_head", "behind_head", "over_head", Shape(mass, lbl, HAIR))
        if style == "long" and front:
            for sx in (-1.0, 1.0):   # strands falling over the front of the shoulders, framing the face
                r = 0.014 * H
                a = np.array([hx + sx * (rx + 0.2 * r), hy - 0.1 * ry])
                b = np.array([hx + sx * (rx + 0.6 * r), bottom + 0.03 * H])
                out["over_body"].append(Shape(_capsule(a, b, r, 0.8 * r), lbl, HAIR))
    elif style == "ponytail":
        a3 = head_c_3d + np.array([0.0, 0.4 * ry, -0.95 * ry])
        b3 = a3 + np.array([0.0, -(0.08 + 0.1 * size) * H, -0.035 * H])
        tail = _capsule(pj.xy(a3), pj.xy(b3), 0.018 * H + 0.006 * H * size)
        knot = _ellipse(*pj.xy(a3), 0.028 * H, 0.024 * H, 12)
        put("behind_body", "behind_head", "over_head", Shape(tail, lbl, HAIR))
        put("behind_head", "behind_head", "over_head", Shape(knot, lbl, HAIR))
    elif style == "bun":
        b3 = head_c_3d + np.array([0.0, 0.85 * ry, -0.35 * ry])
        r = (0.035 + 0.02 * size) * H
        bx, by = pj.xy(b3)
        put("behind_head", "behind_head", "over_head", Shape(_ellipse(bx, by, r, 0.85 * r, 16), lbl, HAIR))
    return out
