"""SynthCC generator and loader: determinism, layout, counts, labels, idempotence, protocol validity."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
from PIL import Image

from maskcl.datasets import get_dataset, load_dataset, split_statistics
from maskcl.datasets.ltcc import LTCC
from maskcl.datasets.synthcc import (LABEL, PRESETS, SynthCC, expected_counts, generate_synthcc, plan_dataset,
                                     render_spec, resolve_config)
from maskcl.datasets.synthcc import generate as gen_mod
from maskcl.datasets.synthcc.figure import build_figure
from maskcl.datasets.synthcc.render import FrameParams, make_canvas, render_frame
from maskcl.datasets.synthcc.cameras import render_scene
from maskcl.errors import ConfigError, DatasetError
from maskcl.io import read_json

SMALL = {"n_train_ids": 2, "n_test_ids": 2, "test_change_share": 0.5, "frames_per_camera_train": 2,
         "frames_per_camera_test": 2}
DRAWN = set(LABEL.values())


def _digest(root: Path) -> Dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthcc(tmp_path_factory.mktemp("synthcc") / "synthcc", "tiny", seed=0)


@pytest.fixture(scope="module")
def tiny_frame(tiny: Path):
    return load_dataset("synthcc", tiny)


# --------------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_bytes_for_any_worker_count(tmp_path: Path) -> None:
    a = generate_synthcc(tmp_path / "a", "tiny", seed=3, overrides=SMALL, workers=1)
    b = generate_synthcc(tmp_path / "b", "tiny", seed=3, overrides=SMALL, workers=2)
    da, db = _digest(a), _digest(b)
    assert len(da) > 50
    assert da == db


def test_different_seed_gives_different_images(tmp_path: Path) -> None:
    a = generate_synthcc(tmp_path / "a", "tiny", seed=3, overrides=SMALL)
    b = generate_synthcc(tmp_path / "b", "tiny", seed=4, overrides=SMALL)
    ha = {v for k, v in _digest(a).items() if k.startswith(("train/", "query/", "test/"))}
    hb = {v for k, v in _digest(b).items() if k.startswith(("train/", "query/", "test/"))}
    assert ha and hb and not (ha & hb)
    assert read_json(a / "synthcc.json")["identities"] != read_json(b / "synthcc.json")["identities"]


def test_identity_traits_do_not_depend_on_how_many_identities_exist() -> None:
    small = plan_dataset(resolve_config("tiny"), 0)
    big = plan_dataset(resolve_config("tiny", {"n_train_ids": 20}), 0)
    for pid in small.identities:
        assert small.identities[pid] == big.identities[pid]


# --------------------------------------------------------------------------- layout and counts
def test_counts_per_split_equal_the_config(tiny: Path) -> None:
    want = expected_counts(PRESETS["tiny"])
    for split, folder in (("train", "train"), ("query", "query"), ("gallery", "test")):
        images = sorted(p.name for p in (tiny / folder).iterdir())
        labels = sorted(p.name for p in (tiny / "parsing" / folder).iterdir())
        assert len(images) == want[split]["images"]
        assert images == labels
    assert (tiny / "contact_sheet.png").is_file()


def test_file_names_follow_ltcc_naming(tiny: Path) -> None:
    regex = re.compile(LTCC.pattern)
    strict = re.compile(r"^(\d{3})_(\d+)_c(\d+)_(\d{6})\.png$")
    n_cams = PRESETS["tiny"].n_cameras
    for folder in ("train", "query", "test"):
        for p in (tiny / folder).iterdir():
            assert regex.match(p.name), p.name
            m = strict.match(p.name)
            assert m, p.name
            assert 1 <= int(m.group(3)) <= n_cams
    # The LTCC loader reads the tree as it is (same rows as the SynthCC loader, minus the parsing column).
    ltcc = LTCC().parse(tiny)
    assert len(ltcc) == sum(expected_counts(PRESETS["tiny"])[s]["images"] for s in ("train", "query", "gallery"))


def test_loader_counts_are_exact(tiny: Path, tiny_frame) -> None:
    want = expected_counts(PRESETS["tiny"])
    stats = split_statistics(tiny_frame, ["train", "query", "gallery"]).set_index("split")
    for split in ("train", "query", "gallery"):
        for key in ("images", "ids", "clothes"):
            assert int(stats.loc[split, key]) == want[split][key], (split, key)
    ds = get_dataset("synthcc")
    assert isinstance(ds, SynthCC)
    ds.load(tiny)
    assert ds.official_differences(split_statistics(tiny_frame, ["train", "query", "gallery"])) == []
    assert set(tiny_frame.columns) >= {"parsing", "outfit", "cloth_changing"}
    for rel, prel in zip(tiny_frame["relpath"][:20], tiny_frame["parsing"][:20]):
        assert prel == "parsing/" + rel and (tiny / prel).is_file()
    assert "derived" not in tiny_frame.attrs["cloth_changing_source"]  # read from info/, not guessed


def test_loader_rejects_a_truncated_copy(tiny: Path, tmp_path: Path) -> None:
    copy = tmp_path / "synthcc"
    shutil.copytree(tiny, copy)
    victim = sorted((copy / "test").iterdir())[0]
    (copy / "parsing" / "test" / victim.name).unlink()
    with pytest.raises(DatasetError, match="ground-truth label map"):
        load_dataset("synthcc", copy)
    victim.unlink()
    with pytest.raises(DatasetError, match="'gallery' holds"):
        load_dataset("synthcc", copy)


def test_train_and_test_identities_are_disjoint_and_info_lists_match(tiny: Path, tiny_frame) -> None:
    train = set(tiny_frame.loc[tiny_frame.split == "train", "pid"])
    test = set(tiny_frame.loc[tiny_frame.split != "train", "pid"])
    assert train and test and not (train & test)
    split = tiny_frame.split
    assert set(tiny_frame.loc[split == "query", "pid"]) == set(tiny_frame.loc[split == "gallery", "pid"])

    def ids(name: str) -> set:
        return {int(x) for x in (tiny / "info" / name).read_text().split()}

    cc_test, uc_test = ids("cloth-change_id_test.txt"), ids("cloth-unchange_id_test.txt")
    assert cc_test | uc_test == test and not (cc_test & uc_test)
    assert cc_test and uc_test  # tiny has both kinds of test identities
    assert ids("cloth-change_id_train.txt") | ids("cloth-unchange_id_train.txt") == train
    outfits = tiny_frame.groupby("pid")["outfit"].nunique()
    assert all(outfits[p] >= 2 for p in cc_test) and all(outfits[p] == 1 for p in uc_test)


def test_one_query_per_identity_outfit_camera(tiny_frame) -> None:
    q = tiny_frame[tiny_frame.split == "query"]
    g = tiny_frame[tiny_frame.split == "gallery"]
    per = q.groupby(["pid", "outfit", "camid"]).size()
    assert (per == PRESETS["tiny"].queries_per_tracklet).all()
    assert set(per.index) == set(g.groupby(["pid", "outfit", "camid"]).size().index)


def test_every_clothes_changing_query_has_a_valid_gallery_match(tiny_frame) -> None:
    q = tiny_frame[tiny_frame.split == "query"]
    g = tiny_frame[tiny_frame.split == "gallery"]
    n_cc = 0
    for _, row in q.iterrows():
        same = g[g.pid == row.pid]
        assert ((same.camid != row.camid)).any(), "no cross-camera match"
        if row.cloth_changing:
            n_cc += 1
            assert ((same.camid != row.camid) & (same.clothes_id != row.clothes_id)).any(), row.relpath
    assert n_cc > 0


# --------------------------------------------------------------------------- labels and rendering
def test_parsing_maps_are_lip_palette_pngs_aligned_with_the_renderer_mask(tiny: Path) -> None:
    cfg = resolve_config("tiny")
    plan = plan_dataset(cfg, 0)
    specs = plan.images()[::9]
    mismatched, total = 0, 0
    for spec in specs:
        lab_img = Image.open(tiny / "parsing" / spec.relpath)
        assert lab_img.mode == "P" and lab_img.size == (cfg.image_width, cfg.image_height)
        lab = np.asarray(lab_img)
        assert set(np.unique(lab).tolist()) <= DRAWN
        r = render_spec(plan, spec)
        # The files are exactly what the renderer produced ...
        assert np.array_equal(np.asarray(Image.open(tiny / spec.relpath)), r.rgb)
        assert np.array_equal(lab, r.labels)
        # ... and the majority labels agree with the renderer's own coverage mask.
        assert (r.coverage[lab > 0] > 0.5).all()
        assert (lab[r.coverage == 1.0] > 0).all() and (lab[r.coverage == 0.0] == 0).all()
        mismatched += int(((lab > 0) != (r.coverage > 0.5)).sum())
        total += lab.size
        assert 0.1 < (lab > 0).mean() < 0.8
    assert mismatched / total < 0.01


def test_label_regions_sit_on_their_pixels(tiny: Path) -> None:
    """Solid upper garments are uniform in colour under their label and much less so under a shifted label."""
    plan = plan_dataset(resolve_config("tiny"), 0)
    aligned, shifted = [], []
    for spec in plan.images():
        if plan.outfits[spec.pid][spec.outfit - 1].pattern != "solid":
            continue
        img = np.asarray(Image.open(tiny / spec.relpath), np.float32)
        lab = np.asarray(Image.open(tiny / "parsing" / spec.relpath))
        upper = np.isin(lab, (LABEL["upper"], LABEL["coat"]))
        if upper.sum() < 40:
            continue

        def spread(mask: np.ndarray) -> float:
            px = img[mask]
            return float(np.linalg.norm(px - np.median(px, axis=0), axis=1).mean())

        aligned.append(spread(upper))
        shifted.append(np.mean([spread(np.roll(upper, d, axis=a)) for d in (-3, 3) for a in (0, 1)]))
    assert len(aligned) >= 20
    assert np.mean(aligned) < 0.75 * np.mean(shifted)
    assert np.mean(np.array(aligned) < np.array(shifted)) > 0.9


def test_identity_fixed_across_outfits_while_garments_differ() -> None:
    cfg = resolve_config("tiny")
    plan = plan_dataset(cfg, 0)
    meta_pids = set(plan.changing_ids)
    assert meta_pids
    for pid in meta_pids:
        outfits = plan.outfits[pid]
        assert len(outfits) == cfg.outfits_per_id
        assert len({o.upper_colour for o in outfits}) == len(outfits)
        figs = [build_figure(plan.identities[pid], o, 0.0, 0.3) for o in outfits if not o.hat]
        heads = [[s.points for s in f.shapes if s.label in (LABEL["hair"], LABEL["face"])][-4:] for f in figs]
        for h in heads[1:]:  # same hair and face geometry whatever the person wears
            assert all(np.allclose(a, b) for a, b in zip(h, heads[0]))
        colours = [{m.rgb for m in f.materials[2:5]} for f in figs]
        assert all(c != colours[0] for c in colours[1:])


def _render_fig(cfg, plan, pid: int, yaw: float, phase: float = 0.0):
    cam = plan.cameras[1]
    canvas = make_canvas(render_scene(cfg, 0, cam))
    fp = FrameParams(yaw=yaw, phase=phase, foot_x=canvas.width / 2, foot_y=canvas.height * 0.85, margin_top=0.03,
                     margin_bottom=0.03, aspect=1.0, shift=0.0, gain=1.0)
    o = plan.outfits[pid][0]
    return render_frame(build_figure(plan.identities[pid], o, yaw, phase), cam, canvas, fp, cfg,
                        np.random.default_rng(0))


def test_views_left_right_back_and_side_width() -> None:
    cfg = resolve_config("tiny", {"image_height": 128, "image_width": 64, "hairstyles": ["crop"], "p_hat": 0.0})
    plan = plan_dataset(cfg, 0)
    pid = plan.train_ids[0]
    t, o = plan.identities[pid], plan.outfits[pid][0]

    def mean_x(fig, label):
        pts = np.concatenate([s.points for s in fig.shapes if s.label == label])
        return pts[:, 0].mean()

    front, back = build_figure(t, o, 0.0, 0.0), build_figure(t, o, 180.0, 0.0)
    # LIP left/right are the person's: the left arm appears on the image right when facing the camera.
    assert mean_x(front, LABEL["left_arm"]) > 0 > mean_x(front, LABEL["right_arm"])
    assert mean_x(back, LABEL["left_arm"]) < 0 < mean_x(back, LABEL["right_arm"])
    assert mean_x(front, LABEL["left_shoe"]) > 0 > mean_x(front, LABEL["right_shoe"])
    # The back view shows hair where the front view shows the face.
    f_lab, b_lab = _render_fig(cfg, plan, pid, 0.0).labels, _render_fig(cfg, plan, pid, 180.0).labels
    head = slice(0, cfg.image_height // 6)
    assert (b_lab[head] == LABEL["face"]).sum() < 0.4 * (f_lab[head] == LABEL["face"]).sum()
    assert (b_lab[head] == LABEL["hair"]).sum() > (f_lab[head] == LABEL["hair"]).sum()
    # The side view of the torso is narrower than the front view.
    upper = {LABEL["upper"], LABEL["coat"]}

    def torso_width(fig):
        pts = [s.points for s in fig.shapes if s.label in upper]
        return max(np.ptp(p[:, 0]) for p in pts)

    assert torso_width(build_figure(t, o, 90.0, 0.0)) < 0.85 * torso_width(front)


def test_large_output_size_renders() -> None:
    cfg = resolve_config("tiny", {"image_height": 256, "image_width": 128})
    plan = plan_dataset(cfg, 0)
    r = render_spec(plan, plan.images()[0])
    assert r.rgb.shape == (256, 128, 3) and r.labels.shape == (256, 128)
    assert r.rgb.std() > 5


# --------------------------------------------------------------------------- idempotence and atomicity
def test_idempotent_and_atomic_replacement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "synthcc"
    generate_synthcc(root, "tiny", seed=1, overrides=SMALL)
    meta = root / "synthcc.json"
    before = _digest(root)
    stamp = meta.stat().st_mtime_ns
    calls = []
    monkeypatch.setattr(gen_mod, "_render_all", lambda *a, **k: calls.append(1))
    assert generate_synthcc(root, "tiny", seed=1, overrides=SMALL) == root
    assert calls == [] and meta.stat().st_mtime_ns == stamp
    monkeypatch.undo()

    # A failure while generating new parameters leaves the old dataset untouched and no temp folder.
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(gen_mod, "contact_sheet", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_synthcc(root, "tiny", seed=2, overrides=SMALL)
    assert _digest(root) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthcc"]
    monkeypatch.undo()

    # Different parameters replace the folder as a whole.
    generate_synthcc(root, "tiny", seed=1, overrides=dict(SMALL, n_test_ids=4))
    assert read_json(meta)["parameters"]["config"]["n_test_ids"] == 4
    assert len(list((root / "test").iterdir())) == expected_counts(
        resolve_config("tiny", dict(SMALL, n_test_ids=4)))["gallery"]["images"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthcc"]

    # A damaged copy (a file removed) is regenerated rather than reused.
    victim = sorted((root / "train").iterdir())[0]
    victim.unlink()
    generate_synthcc(root, "tiny", seed=1, overrides=dict(SMALL, n_test_ids=4))
    assert victim.is_file()


def test_refuses_to_replace_a_folder_that_is_not_synthcc(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "thesis.tex").write_text("precious")
    with pytest.raises(DatasetError, match="not a SynthCC dataset"):
        generate_synthcc(root, "tiny", overrides=SMALL)
    assert (root / "thesis.tex").read_text() == "precious"


def test_stale_temp_folders_of_dead_runs_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / ".synthcc.tmp-999999999-abc"
    dead.mkdir()
    alive = tmp_path / f".synthcc.tmp-{os.getpid()}-abc"
    alive.mkdir()
    generate_synthcc(tmp_path / "synthcc", "tiny", overrides=SMALL)
    assert not dead.exists() and alive.exists()


# --------------------------------------------------------------------------- config errors
@pytest.mark.parametrize("overrides, words", [
    ({"n_train_idz": 3}, ["'n_train_idz'", "n_train_ids", "valid parameters"]),
    ({"n_train_ids": "many"}, ["n_train_ids", "integer"]),
    ({"height_m": [1.9, 1.5]}, ["height_m", "low <= high"]),
    ({"cameras_per_outfit": 1}, ["cameras_per_outfit"]),
    ({"hairstyles": ["mohawk"]}, ["hairstyles", "afro"]),
])
def test_bad_overrides_give_one_line_errors(tmp_path: Path, overrides: dict, words: list) -> None:
    with pytest.raises(ConfigError) as err:
        generate_synthcc(tmp_path / "synthcc", "tiny", overrides=overrides)
    msg = str(err.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg
    assert not (tmp_path / "synthcc").exists()


def test_unknown_preset_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="tiny, default, large"):
        resolve_config("huge")
