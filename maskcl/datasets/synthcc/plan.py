"""Which images exist: identities, splits, outfits, the cameras that see each outfit, tracklets.

LTCC's structure in miniature: disjoint train and test identities (numbers interleaved), some test
identities change clothes and some do not, each (identity, outfit) is seen by several cameras as a
short tracklet of a person walking in one direction, and the query set holds one image per (test
identity, outfit, camera) while the gallery keeps the rest. With at least two cameras per outfit,
every clothes-changing query has a gallery image of the same person in another outfit and another
camera, and every query has a same-clothes match in another camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np

from . import seeding
from .cameras import VIEWS, CameraSettings, sample_camera
from .config import SynthCCConfig
from .identity import IdentityTraits, Outfit, sample_identity, sample_outfits
from .render import FrameParams, ground_range

__all__ = ["SPLIT_FOLDERS", "Tracklet", "ImageSpec", "DatasetPlan", "plan_dataset", "frame_params"]

#: Manifest split → LTCC folder (the gallery folder is called ``test``).
SPLIT_FOLDERS: Dict[str, str] = {"train": "train", "query": "query", "gallery": "test"}


@dataclass(frozen=True)
class Tracklet:
    """One person in one outfit walking past one camera."""

    pid: int
    outfit: int
    cam: int
    group: str                       # train | test
    view: str                        # front | back | left | right (walking direction)
    yaw: float                       # degrees
    frames: Tuple[int, ...]          # frame numbers (file-name field)
    query: Tuple[int, ...]           # frame numbers that go to the query set (test only)
    phase0: float
    dphase: float
    start: Tuple[float, float]       # foot position in scene pixels
    step: Tuple[float, float]        # per-frame displacement in scene pixels


@dataclass(frozen=True)
class ImageSpec:
    pid: int
    outfit: int
    cam: int
    frame: int
    index: int                       # position within the tracklet
    split: str                       # train | query | gallery

    @property
    def basename(self) -> str:
        return f"{self.pid:03d}_{self.outfit}_c{self.cam}_{self.frame:06d}.png"

    @property
    def relpath(self) -> str:
        return f"{SPLIT_FOLDERS[self.split]}/{self.basename}"


@dataclass(frozen=True)
class DatasetPlan:
    cfg: SynthCCConfig
    seed: int
    train_ids: Tuple[int, ...]
    test_ids: Tuple[int, ...]
    changing_ids: Tuple[int, ...]   # identities with more than one outfit (both splits)
    identities: Dict[int, IdentityTraits]
    outfits: Dict[int, List[Outfit]]
    outfit_cameras: Dict[Tuple[int, int], Tuple[int, ...]]
    cameras: Dict[int, CameraSettings]
    tracklets: List[Tracklet]

    def images(self) -> List[ImageSpec]:
        """Every image, sorted by split folder and file name."""
        out = []
        for tr in self.tracklets:
            for i, f in enumerate(tr.frames):
                split = "train" if tr.group == "train" else ("query" if f in tr.query else "gallery")
                out.append(ImageSpec(tr.pid, tr.outfit, tr.cam, f, i, split))
        return sorted(out, key=lambda s: s.relpath)


def _tracklet(cfg: SynthCCConfig, seed: int, cam: CameraSettings, pid: int, outfit: int, group: str) -> Tracklet:
    rng = seeding.stream(seed, seeding.TRACKLET, pid, outfit, cam.cam)
    view = str(rng.choice(list(VIEWS), p=np.asarray(cam.view_weights) / sum(cam.view_weights)))
    yaw = VIEWS[view] + float(rng.normal(0.0, cfg.tracklet_yaw_jitter_deg / 2))
    n = cfg.frames_per_camera_train if group == "train" else cfg.frames_per_camera_test
    first = int(rng.integers(0, 900_000))
    gap = int(rng.integers(4, 30))
    frames = tuple(first + gap * k for k in range(n))
    query: Tuple[int, ...] = ()
    if group == "test":
        query = tuple(sorted(frames[i] for i in rng.choice(n, cfg.queries_per_tracklet, replace=False)))
    _, near, far = ground_range(cam, cfg.scene_height)
    speed = float(rng.uniform(0.5, 1.5))
    t = math.radians(yaw)
    step = (math.sin(t) * 0.035 * speed * cfg.scene_width, math.cos(t) * 0.06 * speed * (far - near))
    start = (float(rng.uniform(0.15, 0.85) * cfg.scene_width), float(rng.uniform(near, far)))
    return Tracklet(pid, outfit, cam.cam, group, view, yaw, frames, query, float(rng.uniform(0, 2 * math.pi)),
                    float(rng.uniform(0.6, 1.4)), start, step)


def plan_dataset(cfg: SynthCCConfig, seed: int) -> DatasetPlan:
    """Draw identities, their split and outfits, the cameras of each outfit and all tracklets.

    Parameters
    ----------
    cfg : SynthCCConfig
    seed : int

    Returns
    -------
    DatasetPlan
    """
    rng = seeding.stream(seed, seeding.PLAN)
    n = cfg.n_train_ids + cfg.n_test_ids
    perm = rng.permutation(n) + 1
    train_ids = tuple(sorted(int(p) for p in perm[:cfg.n_train_ids]))
    test_ids = tuple(sorted(int(p) for p in perm[cfg.n_train_ids:]))
    n_cc_train = round(cfg.train_change_share * cfg.n_train_ids)
    n_cc_test = round(cfg.test_change_share * cfg.n_test_ids)
    changing = sorted(int(p) for p in rng.choice(train_ids, n_cc_train, replace=False)) + \
        sorted(int(p) for p in rng.choice(test_ids, n_cc_test, replace=False))
    cameras = {c: sample_camera(cfg, seed, c) for c in range(1, cfg.n_cameras + 1)}
    identities: Dict[int, IdentityTraits] = {}
    outfits: Dict[int, List[Outfit]] = {}
    outfit_cams: Dict[Tuple[int, int], Tuple[int, ...]] = {}
    tracklets: List[Tracklet] = []
    cc = set(changing)
    for pid in sorted(train_ids + test_ids):
        group = "train" if pid in train_ids else "test"
        identities[pid] = sample_identity(cfg, seed, pid)
        outfits[pid] = sample_outfits(cfg, seed, identities[pid], cfg.outfits_per_id if pid in cc else 1)
        for o in outfits[pid]:
            orng = seeding.stream(seed, seeding.PLAN, pid, o.outfit)
            cams = tuple(sorted(int(c) + 1 for c in orng.choice(cfg.n_cameras, cfg.cameras_per_outfit,
                                                                 replace=False)))
            outfit_cams[(pid, o.outfit)] = cams
            tracklets += [_tracklet(cfg, seed, cameras[c], pid, o.outfit, group) for c in cams]
    return DatasetPlan(cfg, seed, train_ids, test_ids, tuple(changing), identities, outfits, outfit_cams,
                       cameras, tracklets)


def frame_params(cfg: SynthCCConfig, cam: CameraSettings, track: Tracklet, index: int,
                 rng: np.random.Generator) -> FrameParams:
    """Pose, position and detector-box jitter of frame ``index`` of ``track``.

    Parameters
    ----------
    cfg : SynthCCConfig
    cam : CameraSettings
        The tracklet's camera (its ground plane bounds the walk).
    track : Tracklet
    index : int
        Position of the frame within the tracklet (the walk advances with it).
    rng : numpy.random.Generator
        The image's own stream.

    Returns
    -------
    FrameParams
    """
    _, near, far = ground_range(cam, cfg.scene_height)
    fx = track.start[0] + index * track.step[0]
    fy = track.start[1] + index * track.step[1]
    lo_x, hi_x = 0.1 * cfg.scene_width, 0.9 * cfg.scene_width
    fx = float(np.clip(fx, lo_x, hi_x))
    fy = float(np.clip(fy, near, far))
    aj, bm = cfg.box_aspect_jitter, cfg.box_margin
    return FrameParams(
        yaw=track.yaw + float(rng.normal(0.0, cfg.frame_yaw_jitter_deg / 2)),
        phase=track.phase0 + index * track.dphase + float(rng.normal(0.0, 0.15)),
        foot_x=fx, foot_y=fy,
        margin_top=float(rng.uniform(*bm)), margin_bottom=float(rng.uniform(*bm)),
        aspect=1.0 + float(rng.uniform(-aj, aj)), shift=float(rng.uniform(-cfg.box_shift, cfg.box_shift)),
        gain=1.0 + float(rng.uniform(-cfg.gain_jitter, cfg.gain_jitter)),
    )
