"""Write a complete SynthCC dataset atomically, or return at once if the same one is already there.

Everything is generated into a temporary folder beside ``root`` and renamed into place only when the
last file (``synthcc.json``) is written, so a killed run never leaves something that looks complete.
``SHA256SUMS`` (``sha256sum -c`` format) lists every file's digest: a dataset is reused only when
each file still matches, so a damaged or edited image is regenerated rather than reused.
A root holding a dataset made with other parameters is replaced (rename the old one aside, rename the
new one in, delete the old one). Images are independent of the number of workers: each is drawn from
its own ``(seed, pid, outfit, cam, frame)`` stream.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
from PIL import Image

from ...errors import ConfigError, DatasetError
from ...io import json_default, read_json, write_json_atomic, write_text_atomic
from ...layout import SYNTHCC_META
from . import seeding
from .cameras import render_scene
from .config import SynthCCConfig, expected_counts, resolve_config
from .contact_sheet import contact_sheet
from .figure import build_figure
from .palette import GARMENT_PALETTE, HAIR_COLOURS, LIP_LABELS, SKIN_TONES, label_palette
from .plan import SPLIT_FOLDERS, DatasetPlan, ImageSpec, Tracklet, frame_params, plan_dataset
from .render import RenderedImage, SceneCanvas, make_canvas, render_frame

__all__ = ["GENERATOR_VERSION", "META", "SUMS", "generate_synthcc", "requested_parameters", "render_spec", "Renderer"]

log = logging.getLogger(__name__)

#: Bump when the renderer changes pixels for the same parameters (forces regeneration).
GENERATOR_VERSION = 1
META = SYNTHCC_META  # the layout owns the name (maskcl.layout)
#: Every file's sha256 (``sha256sum`` format), written before ``META``.
SUMS = "SHA256SUMS"


def requested_parameters(cfg: SynthCCConfig, seed: int) -> Dict[str, Any]:
    """What ``synthcc.json`` must hold for an existing dataset to be reused."""
    return {"generator_version": GENERATOR_VERSION, "seed": int(seed), "config": cfg.to_dict()}


class Renderer:
    """Renders ``ImageSpec``s of one plan, caching each camera's background."""

    def __init__(self, plan: DatasetPlan) -> None:
        self.plan = plan
        self._canvas: Dict[int, SceneCanvas] = {}
        self._tracks: Dict[Tuple[int, int, int], Tracklet] = {(t.pid, t.outfit, t.cam): t for t in plan.tracklets}

    def canvas(self, cam: int) -> SceneCanvas:
        if cam not in self._canvas:
            self._canvas[cam] = make_canvas(render_scene(self.plan.cfg, self.plan.seed, self.plan.cameras[cam]))
        return self._canvas[cam]

    def render(self, spec: ImageSpec) -> RenderedImage:
        plan, cfg = self.plan, self.plan.cfg
        rng = seeding.stream(plan.seed, seeding.IMAGE, spec.pid, spec.outfit, spec.cam, spec.frame)
        cam = plan.cameras[spec.cam]
        fp = frame_params(cfg, cam, self._tracks[(spec.pid, spec.outfit, spec.cam)], spec.index, rng)
        fig = build_figure(plan.identities[spec.pid], plan.outfits[spec.pid][spec.outfit - 1], fp.yaw, fp.phase)
        return render_frame(fig, cam, self.canvas(spec.cam), fp, cfg, rng)


def render_spec(plan: DatasetPlan, spec: ImageSpec) -> RenderedImage:
    """Render one image of ``plan`` in memory (tests compare it with the files)."""
    return Renderer(plan).render(spec)


def _save(rendered: RenderedImage, image_path: Path, label_path: Path) -> None:
    Image.fromarray(rendered.rgb).save(image_path, format="PNG", compress_level=6)
    h, w = rendered.labels.shape
    lab = Image.frombytes("P", (w, h), np.ascontiguousarray(rendered.labels).tobytes())
    lab.putpalette(label_palette(len(LIP_LABELS)))
    lab.save(label_path, format="PNG", compress_level=6)


# Worker state: set once per process by the pool initializer (plans are too big to send per task).
_WORKER: Dict[str, Any] = {}


def _init_worker(plan: DatasetPlan, out: str) -> None:
    _WORKER["renderer"] = Renderer(plan)
    _WORKER["out"] = Path(out)


def _render_batch(specs: List[ImageSpec]) -> int:
    renderer: Renderer = _WORKER["renderer"]
    out: Path = _WORKER["out"]
    for spec in specs:
        _save(renderer.render(spec), out / spec.relpath, out / "parsing" / spec.relpath)
    return len(specs)


def _render_all(plan: DatasetPlan, out: Path, workers: int) -> None:
    specs = plan.images()
    by_pid: Dict[int, List[ImageSpec]] = {}
    for s in specs:
        by_pid.setdefault(s.pid, []).append(s)
    batches = [by_pid[p] for p in sorted(by_pid)]
    t0, done = time.perf_counter(), 0
    if workers <= 1:
        _init_worker(plan, str(out))
        try:
            for b in batches:
                done += _render_batch(b)
        finally:
            _WORKER.clear()
    else:
        # fork, where available: spawn would re-run the caller's main script in every worker (a
        # Snakemake ``script:`` adapter or a script without a main guard).
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(plan, str(out))) as pool:
            for n in pool.map(_render_batch, batches):
                done += n
    dt = time.perf_counter() - t0
    log.info("synthcc: rendered %d images in %.1f s (%.0f images/s, %d worker(s))", done, dt, done / max(dt, 1e-9),
             workers)


def _metadata(plan: DatasetPlan, preset: str, overrides: Mapping[str, Any]) -> Dict[str, Any]:
    cfg = plan.cfg
    specs = plan.images()
    counts = expected_counts(cfg)
    for split in counts:
        counts[split]["cameras"] = len({s.cam for s in specs if s.split == split})
    changing = set(plan.changing_ids)
    identities = []
    for pid in sorted(plan.identities):
        d = plan.identities[pid].to_dict()
        d["split"] = "train" if pid in plan.train_ids else "test"
        d["cloth_changing"] = pid in changing
        d["outfits"] = [dict(o.to_dict(), cameras=list(plan.outfit_cameras[(pid, o.outfit)]))
                        for o in plan.outfits[pid]]
        identities.append(d)
    return {
        "dataset": "synthcc",
        "parameters": requested_parameters(cfg, plan.seed),
        "preset": preset,
        "overrides": dict(overrides),
        "format": {"image": "<pid:03d>_<outfit>_c<cam>_<frame:06d>.png (LTCC)", "folders": SPLIT_FOLDERS,
                   "parsing": "parsing/<folder>/<basename> (palette PNG, values = LIP class indices)"},
        "labels": {str(i): name for i, name in enumerate(LIP_LABELS)},
        "palette": {"garments": {n: list(c) for n, c in GARMENT_PALETTE},
                    "hair": {n: list(c) for n, c in HAIR_COLOURS},
                    "skin_tones": [list(c) for c in SKIN_TONES]},
        "counts": counts,
        "splits": {
            "train": {"ids": list(plan.train_ids), "cloth_changing": sorted(changing & set(plan.train_ids))},
            "test": {"ids": list(plan.test_ids), "cloth_changing": sorted(changing & set(plan.test_ids))},
        },
        "cameras": [plan.cameras[c].to_dict() for c in sorted(plan.cameras)],
        "identities": identities,
        "tracklets": [{"pid": t.pid, "outfit": t.outfit, "cam": t.cam, "view": t.view, "yaw": t.yaw,
                       "frames": list(t.frames), "query": list(t.query)} for t in plan.tracklets],
    }


def _write_info(plan: DatasetPlan, out: Path) -> None:
    changing = set(plan.changing_ids)
    for group, ids in (("train", plan.train_ids), ("test", plan.test_ids)):
        cc = [p for p in ids if p in changing]
        uc = [p for p in ids if p not in changing]
        write_text_atomic(out / "info" / f"cloth-change_id_{group}.txt", "".join(f"{p}\n" for p in cc))
        write_text_atomic(out / "info" / f"cloth-unchange_id_{group}.txt", "".join(f"{p}\n" for p in uc))


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_sums(out: Path) -> None:
    """``SUMS`` for every file under ``out`` except ``META`` (written after it) and itself."""
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    lines = [f"{_file_sha256(out / rel)}  {rel}\n" for rel in files if rel not in (META, SUMS)]
    write_text_atomic(out / SUMS, "".join(lines))


def _damaged_file(root: Path) -> Optional[str]:
    """The first file of ``root`` that is missing or differs from ``SUMS`` (what is wrong), else None.

    A dataset written before ``SUMS`` existed has no digests: its images are decoded instead.
    """
    sums = root / SUMS
    if sums.is_file():
        for line in sums.read_text(encoding="utf-8").splitlines():
            digest, _, rel = line.partition("  ")
            p = root / rel
            if not p.is_file():
                return f"{p} is missing"
            if _file_sha256(p) != digest:
                return f"{p} is damaged (its sha256 differs from {sums})"
        return None
    for p in sorted(root.rglob("*.png")):
        try:
            with Image.open(p) as im:
                im.load()
        except Exception as e:  # PIL raises many types for a damaged file
            return f"{p} is unreadable ({type(e).__name__}: {e})"
    return None


def _stored_parameters(root: Path) -> Optional[Dict[str, Any]]:
    """The parameters of a complete, undamaged SynthCC dataset at ``root``, or None if there is none."""
    meta = root / META
    if not meta.is_file():
        return None
    try:
        data = read_json(meta)
    except (OSError, ValueError):
        return None
    counts = data.get("counts", {})
    for split, folder in SPLIT_FOLDERS.items():
        want = counts.get(split, {}).get("images")
        for d in (root / folder, root / "parsing" / folder):
            got = len([p for p in d.iterdir() if p.suffix == ".png"]) if d.is_dir() else -1
            if got != want:
                log.warning("synthcc: %s holds %s images, %s expected; regenerating", d, got, want)
                return None
    params = data.get("parameters")
    if not isinstance(params, dict):
        return None
    damaged = _damaged_file(root)
    if damaged:
        log.warning("synthcc: %s; regenerating the dataset", damaged)
        return None
    return params


#: What the generator writes at the top of a dataset folder (a dataset written before ``SUMS`` existed
#: is recognised by this layout).
_TOP_LEVEL = frozenset(list(SPLIT_FOLDERS.values()) + ["parsing", "info", "contact_sheet.png", META, SUMS])
_SHOWN = 5


def _user_files(root: Path) -> List[str]:
    """Files under ``root`` the generator did not write (relative paths, sorted): what a user left there.

    The generator's files are those ``SUMS`` lists, plus ``SUMS`` and ``META``; without ``SUMS`` (an
    older dataset), those of its layout (:data:`_TOP_LEVEL`). Regenerating replaces the folder whole,
    so these would be deleted with it.
    """
    if not root.is_dir():
        return []
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink())
    sums = root / SUMS
    if sums.is_file():
        try:
            listed = {line.partition("  ")[2] for line in sums.read_text(encoding="utf-8").splitlines()}
        except (OSError, UnicodeDecodeError):
            listed = set()
        if listed:
            return [f for f in files if f not in listed and f not in (META, SUMS)]
    return [f for f in files if f.split("/", 1)[0] not in _TOP_LEVEL]


def _refuse_user_files(root: Path, files: List[str], why: str) -> DatasetError:
    more = f" (and {len(files) - _SHOWN} more)" if len(files) > _SHOWN else ""
    return DatasetError(f"synthcc: {root} {why}, and holds {len(files)} file(s) the generator did not write: "
                        f"{', '.join(files[:_SHOWN])}{more}; regenerating would delete them: move them out of "
                        f"{root} (or set data.root to another folder), then rerun")


def _clean_stale(root: Path) -> None:
    """Remove the temp/old folders of earlier runs that were killed (their process no longer exists)."""
    for p in root.parent.glob(f".{root.name}.*-*-*"):
        kind, _, rest = p.name[len(root.name) + 2:].partition("-")
        if kind not in ("tmp", "old") or not p.is_dir():
            continue
        try:
            os.kill(int(rest.split("-")[0]), 0)
        except (ValueError, ProcessLookupError):
            size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())
            shutil.rmtree(p, ignore_errors=True)
            what = "an interrupted generation" if kind == "tmp" else "an interrupted replacement of the old copy"
            log.info("synthcc: removed leftover temporary folder %s from %s (%.1f MB)", p, what, size / 1e6)
        except PermissionError:  # another user's live process
            pass


def generate_synthcc(root: Path, preset: str = "default", seed: int = 0, overrides: Optional[dict] = None,
                     *, workers: int = 1) -> Path:
    """Generate SynthCC at ``root`` (LTCC layout plus ground-truth parsing), idempotently.

    Parameters
    ----------
    root : Path
        The dataset folder to create (its parent must be writable).
    preset : str
        ``tiny``, ``default`` or ``large`` (see ``PRESETS``).
    seed : int
        Generation seed; the same seed and parameters give byte-identical files.
    overrides : dict, optional
        ``SynthCCConfig`` fields to change, e.g. ``{"n_train_ids": 20, "image_height": 256,
        "image_width": 128}``.
    workers : int
        Processes used for rendering (the output does not depend on it).

    Returns
    -------
    Path
        ``root``.

    Raises
    ------
    ConfigError
        Unknown preset or override key (the message lists the valid ones), or bad values.
    DatasetError
        ``root`` exists and holds something other than a SynthCC dataset, or files the generator did
        not write that regenerating would delete (named in the message).
    """
    cfg = resolve_config(preset, overrides)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"data.synthcc.seed: expected a non-negative integer, got {seed!r}")
    root = Path(root)
    want = json.loads(json.dumps(requested_parameters(cfg, int(seed)), default=json_default))
    _clean_stale(root)
    have = _stored_parameters(root)
    if have == want:
        log.info("synthcc: %s already holds this dataset (seed %d); nothing to do", root, seed)
        return root
    if root.exists() and not root.is_dir():
        raise DatasetError(f"synthcc: {root} is a file, not a folder; move it elsewhere or set data.root to "
                           f"another folder, then rerun")
    if root.exists() and not (root / META).is_file():
        if any(root.iterdir()):
            shown = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) or \
                sorted(p.name for p in root.iterdir())
            raise _refuse_user_files(root, shown, f"exists and is not a SynthCC dataset (no {META})")
    else:
        foreign = _user_files(root)
        if foreign:   # replacing the folder would take them with it
            raise _refuse_user_files(root, foreign, "holds a SynthCC dataset to regenerate")
    root.parent.mkdir(parents=True, exist_ok=True)
    log.info("synthcc: generating preset %r (seed %d) into %s", preset, seed, root)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-{os.getpid()}-", dir=root.parent))
    try:
        plan = plan_dataset(cfg, int(seed))
        for folder in SPLIT_FOLDERS.values():
            (tmp / folder).mkdir()
            (tmp / "parsing" / folder).mkdir(parents=True)
        _render_all(plan, tmp, max(1, int(workers)))
        _write_info(plan, tmp)
        contact_sheet(plan, tmp, tmp / "contact_sheet.png")
        _write_sums(tmp)
        write_json_atomic(tmp / META, _metadata(plan, preset, overrides or {}))
        _swap_into_place(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _swap_into_place(tmp: Path, root: Path) -> None:
    """Rename ``tmp`` to ``root``; an existing ``root`` is renamed aside first and then deleted."""
    if not root.exists():
        os.rename(tmp, root)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-{os.getpid()}-", dir=root.parent))
    os.rmdir(old)
    os.rename(root, old)
    try:
        os.rename(tmp, root)
    except BaseException:
        with contextlib.suppress(OSError):
            os.rename(old, root)
        raise
    shutil.rmtree(old, ignore_errors=True)
