"""Dataset loaders: fake trees from tests/data/dataset_layouts.txt and larger generated trees.

Every expected count below is either worked out by hand from the layout file (the comment next to
it says how) or computed from the generator's own bookkeeping, never from the loader.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pandas as pd
import pytest
from jsonschema import Draft202012Validator

from conftest import layout_paths
from maskcl.datasets import (DATASETS, MANIFEST_COLUMNS, dataset_splits, get_dataset, list_datasets, load_dataset,
                             split_statistics)
from maskcl.manifest import EXTRA_COLUMNS, read_manifest, write_manifest
from maskcl.errors import ConfigError, DatasetError

REAL = ("prcc", "ltcc", "vcclothes", "deepchange", "celebreid", "celebreid_light")
SECTION = {"prcc": "PRCC", "ltcc": "LTCC", "vcclothes": "VC-Clothes", "deepchange": "DeepChange",
           "celebreid": "Celeb-reID", "celebreid_light": "Celeb-reID-light"}
DC_FOLDERS = ("train-set", "val-set-query", "val-set-gallery", "test-set-query", "test-set-gallery")
LTCC_INFO = {"cloth-change_id_train.txt": "2\n", "cloth-unchange_id_train.txt": "5\n",
             "cloth-change_id_test.txt": "1\n", "cloth-unchange_id_test.txt": "144\n"}


# ------------------------------------------------------------------------------------------ builders
def touch(path: Path, data: bytes = b"") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_deepchange_lists(root: Path, tracklet=lambda name: int(name.split("_")[4])) -> None:
    """One ``<name>,<tracklet>`` line per image (tracklet = field 5 unless told otherwise)."""
    for folder in DC_FOLDERS:
        names = sorted(p.name for p in (root / folder).glob("*.jpg")) if (root / folder).is_dir() else []
        (root / f"{folder}-bbox.txt").write_text("".join(f"{n},{tracklet(n)}\n" for n in names))


def build_layout(base: Path, dataset: str, data: bytes = b"") -> Path:
    """The example tree of ``dataset`` under ``base`` (list and info files written as the comments say)."""
    for rel in layout_paths()[SECTION[dataset]]:
        if rel.endswith(".txt"):
            (base / rel).parent.mkdir(parents=True, exist_ok=True)
            continue
        touch(base / rel, data)
    if dataset == "ltcc":
        for fn, text in LTCC_INFO.items():
            (base / "LTCC_ReID" / "info" / fn).write_text(text)
    if dataset == "deepchange":
        write_deepchange_lists(base / "DeepChangeDataset")
    if dataset == "celebreid":
        (base / "Celeb-reID" / "readme.txt").write_text("x_y_z.jpg\n")
    return base


def stats_dict(frame: pd.DataFrame, name: str) -> Dict[str, Tuple[int, int, int, int]]:
    st = split_statistics(frame, get_dataset(name).splits)
    return {r.split: (r.images, r.ids, r.cameras, r.clothes) for r in st.itertuples()}


def row(frame: pd.DataFrame, relpath: str) -> pd.Series:
    hit = frame[frame["relpath"] == relpath]
    assert len(hit) == 1, relpath
    return hit.iloc[0]


def junk_and_good(q: pd.Series, gallery: pd.DataFrame, mode: str) -> Tuple[pd.Series, pd.Series]:
    """Reference implementation of the standard / CC / SC rules (datasets-and-protocols.md §2.1)."""
    same_pid = gallery["pid"] == q["pid"]
    same_cam = gallery["camid"] == q["camid"]
    same_clothes = gallery["clothes_id"] == q["clothes_id"]
    if mode == "standard":
        junk = same_pid & same_cam
    elif mode == "cc":
        junk = same_pid & (same_cam | same_clothes)
    else:
        junk = same_pid & (same_cam | ~same_clothes)
    return junk, same_pid & ~junk


# ------------------------------------------------------------------------------------------ registry
def test_registry_holds_the_six_real_datasets():
    names = set(list_datasets())
    assert set(REAL) <= names
    assert names - set(REAL) <= {"synthcc", "custom"}
    for name in REAL:
        assert get_dataset(name).name == name


def test_unknown_dataset_lists_known_names(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown dataset 'market'.*ltcc.*prcc"):
        load_dataset("market", tmp_path)


def test_schema_source_keys_match_registry():
    from maskcl.config import load_schema

    data = load_schema()["properties"]["data"]["properties"]
    assert set(data["sources"]["propertyNames"]["enum"]) == set(REAL)


def test_schema_dataset_names_match_registry():
    """Every place the schema names datasets agrees with the registry, so a new dataset that is
    registered but missing from an enum (or the reverse) fails here rather than in a user's run."""
    from maskcl.config import load_schema

    props = load_schema()["properties"]
    registered = set(DATASETS.names())
    downloaded = {n for n in registered if not DATASETS.get(n).generated and not DATASETS.get(n).user_folder}
    assert set(props["datasets"]["items"]["enum"]) == registered
    data = props["data"]["properties"]
    assert set(data["sources"]["propertyNames"]["enum"]) == downloaded
    for name in registered - downloaded:  # generated datasets and a user's folder: parameters from data.<name>
        assert name in data, f"schema: add data.{name} (the generator's parameters, or the folder's)"
    assert props["dataset_overrides"]["default"] == {}  # the official presets live on the dataset classes
    train = props["train"]["properties"]
    for name in registered:  # each preset is valid train settings (run_code.sh's allknn and iters)
        preset = DATASETS.get(name).train_preset
        assert set(preset) <= {"allknn", "iters"}, name
        for key, value in preset.items():
            assert not list(Draft202012Validator(train[key]).iter_errors(value)), (name, key, value)


#: Facts every dataset class states itself (declared without a value on ``ReIDDataset``).
FACTS = {"display_name": str, "protocols": tuple, "headline_protocol": str, "comparison_protocols": tuple,
         "train_preset": dict, "ground_truth_parsing": bool, "generated": bool}


@pytest.mark.parametrize("name", sorted(DATASETS.names()))
def test_every_dataset_declares_every_fact(name):
    from maskcl.datasets import Protocol, ReIDDataset

    cls = DATASETS.get(name)
    for fact, kind in FACTS.items():
        assert fact in ReIDDataset.__annotations__ and not hasattr(ReIDDataset, fact)
        # On the class itself: SynthCC subclasses LTCC and must not inherit LTCC's answers.
        assert fact in vars(cls), f"{cls.__name__} does not declare {fact}"
        assert isinstance(getattr(cls, fact), kind), f"{cls.__name__}.{fact} is not a {kind.__name__}"
    assert cls.display_name
    names = [p.name for p in cls.protocols]
    assert names and len(names) == len(set(names))
    assert cls.headline_protocol in names
    assert cls.comparison_protocols[0] == cls.headline_protocol  # the headline first, then its companion
    assert set(cls.comparison_protocols) <= set(names) and len(set(cls.comparison_protocols)) == len(
        cls.comparison_protocols)
    for p in cls.protocols:
        assert isinstance(p, Protocol) and p.description and p.short
        assert {p.query_split, p.gallery_split} <= set(cls.splits)
    assert cls.ground_truth_parsing == ("parsing" in cls.extra_columns)
    # the manifest's one reader knows the kind of every extra column (integers and flags are checked)
    assert set(cls.extra_columns) <= set(EXTRA_COLUMNS), f"add {cls.__name__}'s extras to maskcl.manifest"


def test_only_synthcc_is_generated_and_has_ground_truth():
    assert [n for n in DATASETS.names() if DATASETS.get(n).generated] == ["synthcc"]
    assert [n for n in DATASETS.names() if DATASETS.get(n).ground_truth_parsing] == ["synthcc"]


def test_protocol_and_label_tables_are_views_of_the_classes():
    from maskcl.datasets import report_order
    from maskcl.evaluation.protocols import HEADLINE, PROTOCOLS
    from maskcl.reporting.labels import DATASET_NAMES, PROTOCOL_SHORT

    order = ["ltcc", "synthcc", "prcc", "vcclothes", "celebreid", "celebreid_light", "deepchange", "custom"]
    assert list(report_order()) == order and list(PROTOCOLS) == order and list(HEADLINE) == order
    for name in order:
        cls = DATASETS.get(name)
        assert PROTOCOLS[name] is cls.protocols and HEADLINE[name] == cls.headline_protocol
        assert DATASET_NAMES[name] == cls.display_name
        assert all(PROTOCOL_SHORT[(name, p.name)] == p.short for p in cls.protocols)
    assert DATASET_NAMES["vcclothes"] == "VC-Clothes"


@pytest.mark.parametrize("name,totals", [
    ("prcc", 33698), ("ltcc", 17119), ("vcclothes", 19060), ("deepchange", 178407),
    ("celebreid", 34186), ("celebreid_light", 10842)])
def test_official_counts_add_up_to_published_totals(name, totals):
    official = DATASETS.get(name).official
    assert sum(s.images for s in official.values()) == totals
    assert list(official) == list(DATASETS.get(name).splits)


# ------------------------------------------------------------------------------------------ layout trees
# (images, ids, cameras, clothes) per split, counted by hand from tests/data/dataset_layouts.txt.
LAYOUT_STATS = {
    "prcc": {  # train: 092 (A,A,B,C) 110 (A,B,C) 121 (A,B,C); clothes = {AB, C} per id
        "train": (10, 3, 3, 6), "val": (5, 2, 3, 4),  # val: 110 (A,B,C), 121 (A,C)
        "query_sc": (2, 2, 1, 2), "query_cc": (3, 2, 1, 2), "gallery": (4, 2, 1, 2)},
    "ltcc": {  # train cams 1,4,8,12,10,2,7,9; outfits 002:{1,2,3} 005:{1}
        "train": (8, 2, 8, 4), "query": (4, 2, 3, 3), "gallery": (7, 2, 5, 3)},
    "vcclothes": {  # train clothes 0002:{1,2} 0004:{1,2,3}; gallery 0005:{1,2} 0007:{1,2}
        "train": (9, 2, 4, 5), "query": (5, 2, 4, 3), "gallery": (8, 2, 4, 4)},
    "deepchange": {  # clothes = (pid, day): train 0001:{D0012,D0087} 0002:{D0012,D0140}
        "train": (5, 2, 4, 4), "val_query": (1, 1, 1, 1), "val_gallery": (3, 2, 3, 3),
        "query": (2, 2, 2, 2), "gallery": (5, 3, 5, 5)},
    "celebreid": {"train": (7, 3, 1, 7), "query": (3, 3, 1, 3), "gallery": (6, 3, 1, 6)},
    "celebreid_light": {"train": (7, 3, 1, 7), "query": (3, 3, 1, 3), "gallery": (6, 3, 1, 6)},
}


@pytest.mark.parametrize("name", REAL)
def test_layout_tree_statistics(tmp_path, name):
    build_layout(tmp_path, name)
    frame = load_dataset(name, tmp_path)
    assert stats_dict(frame, name) == LAYOUT_STATS[name]
    extras = get_dataset(name).extra_columns
    assert list(frame.columns) == list(MANIFEST_COLUMNS) + list(extras)
    assert frame["relpath"].is_unique
    # sorted by split (loader order) then relpath; paths absolute under the resolved root
    order = {s: i for i, s in enumerate(get_dataset(name).splits)}
    keys = list(zip(frame["split"].map(order), frame["relpath"]))
    assert keys == sorted(keys)
    root = Path(frame.attrs["root"])
    assert all(Path(p) == root / r for p, r in zip(frame["path"], frame["relpath"]))
    assert all(Path(p).is_file() for p in frame["path"])
    # every layout path (except list/info/readme files) is one manifest row
    expected = {rel for rel in layout_paths()[SECTION[name]] if not rel.endswith(".txt")}
    assert {str((root / r).relative_to(tmp_path)) for r in frame["relpath"]} == expected
    # deterministic
    pd.testing.assert_frame_equal(frame, load_dataset(name, tmp_path))
    # what the download stage writes, every stage reads back unchanged, and its checks accept it
    out = tmp_path / "results" / name / "manifest.csv"
    write_manifest(frame, out)
    back = read_manifest(out, splits=dataset_splits(name))
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    assert all(back[c].dtype == "int64" for c in ("pid", "camid", "clothes_id"))


def test_prcc_rows_cameras_and_clothes(tmp_path):
    build_layout(tmp_path, "prcc")
    f = load_dataset("prcc", tmp_path / "prcc")
    a, b, c = (row(f, f"rgb/train/092/{n}") for n in ("A_cropped_rgb010.jpg", "B_cropped_rgb004.jpg",
                                                     "C_cropped_rgb020.jpg"))
    assert (a.pid, a.camid, b.camid, c.camid) == (92, 0, 1, 2)
    assert a.clothes_id == b.clothes_id != c.clothes_id
    assert row(f, "rgb/train/092/A_cropped_rgb011.jpg").clothes_id == a.clothes_id
    ga = row(f, "rgb/test/A/001/cropped_rgb001.jpg")
    qb = row(f, "rgb/test/B/001/cropped_rgb004.jpg")
    qc = row(f, "rgb/test/C/001/cropped_rgb010.jpg")
    assert (ga.split, qb.split, qc.split) == ("gallery", "query_sc", "query_cc")
    assert (ga.pid, ga.camid, qb.camid, qc.camid) == (1, 0, 1, 2)
    assert ga.clothes_id == qb.clothes_id != qc.clothes_id
    # val is its own clothes group: same person, same camera, but not the train clothes id
    va = row(f, "rgb/val/110/A_cropped_rgb001.jpg")
    ta = row(f, "rgb/train/110/A_cropped_rgb003.jpg")
    assert va.pid == ta.pid == 110 and va.clothes_id != ta.clothes_id
    # each test protocol has a valid query: SC (B vs A) and CC (C vs A), standard rule
    gallery = f[f["split"] == "gallery"]
    for split in ("query_sc", "query_cc"):
        valid = [junk_and_good(q, gallery, "standard")[1].any() for _, q in f[f["split"] == split].iterrows()]
        assert all(valid)


def test_ltcc_rows_outfits_and_cloth_changing(tmp_path):
    build_layout(tmp_path, "ltcc")
    f = load_dataset("ltcc", tmp_path)
    r = row(f, "train/002_2_c12_010240.png")
    assert (r.split, r.pid, r.camid, r.outfit) == ("train", 2, 11, 2)
    assert row(f, "train/002_2_c8_010211.png").clothes_id == r.clothes_id
    assert row(f, "train/002_1_c1_000512.png").clothes_id != r.clothes_id
    # outfit 1 of person 2 and outfit 1 of person 5 are different clothes
    assert row(f, "train/002_1_c1_000512.png").clothes_id != row(f, "train/005_1_c2_003301.png").clothes_id
    q, g = row(f, "query/001_1_c11_015843.png"), row(f, "test/001_1_c4_015857.png")
    assert q.clothes_id == g.clothes_id and q.split == "query" and g.split == "gallery"
    cc = f.groupby(["split", "pid"])["cloth_changing"].first().to_dict()
    assert cc == {("train", 2): True, ("train", 5): False, ("query", 1): True, ("query", 144): False,
                  ("gallery", 1): True, ("gallery", 144): False}
    assert f.attrs["cloth_changing_source"] == "train=info,test=info"
    gallery = f[f["split"] == "gallery"]
    for mode in ("standard", "cc"):
        assert any(junk_and_good(q, gallery, mode)[1].any() for _, q in f[f["split"] == "query"].iterrows())


def test_ltcc_cloth_changing_derived_without_info(tmp_path):
    build_layout(tmp_path, "ltcc")
    for fn in LTCC_INFO:
        (tmp_path / "LTCC_ReID" / "info" / fn).unlink()
    f = load_dataset("ltcc", tmp_path)
    assert f.attrs["cloth_changing_source"] == "train=derived,test=derived"
    assert f.groupby("pid")["cloth_changing"].first().to_dict() == {1: True, 2: True, 5: False, 144: False}


def test_vcclothes_rows_and_nested_root(tmp_path):
    build_layout(tmp_path / "VC-Clothes", "vcclothes")  # -> VC-Clothes/VC-Clothes/...
    f = load_dataset("vcclothes", tmp_path)
    assert f.attrs["root"] == str((tmp_path / "VC-Clothes" / "VC-Clothes").resolve())
    r = row(f, "gallery/0005-04-02-03.jpg")
    assert (r.pid, r.camid, r.outfit) == (5, 3, 2)
    assert r.clothes_id == row(f, "query/0005-04-02-01.jpg").clothes_id
    assert r.clothes_id != row(f, "query/0005-03-01-01.jpg").clothes_id
    # clothes 1 of 0005 (test) and of 0002 (train) differ; clothes 1 of 0005 and 0007 differ
    ids = {row(f, p).clothes_id for p in ("train/0002-01-01-01.jpg", "query/0005-01-01-01.jpg",
                                          "query/0007-03-01-01.jpg")}
    assert len(ids) == 3


@pytest.mark.parametrize("dirname", ["DeepChangeDataset", "DeepChange"])
def test_deepchange_rows_tracklets_and_root_names(tmp_path, dirname):
    build_layout(tmp_path, "deepchange")
    if dirname != "DeepChangeDataset":
        (tmp_path / "DeepChangeDataset").rename(tmp_path / dirname)
    f = load_dataset("deepchange", tmp_path)
    assert Path(f.attrs["root"]).name == dirname
    q = row(f, "test-set-query/P0701_C13_D0300_H15_00202_00001.jpg")
    g = row(f, "test-set-gallery/P0701_C13_D0300_H15_00202_00005.jpg")
    assert (q.split, q.pid, q.camid, q.tracklet) == ("query", 701, 12, 202)
    assert g.tracklet == 202 and g.clothes_id == q.clothes_id  # same person, same day
    assert row(f, "test-set-gallery/P0701_C01_D0310_H10_00205_00001.jpg").clothes_id != q.clothes_id
    vq = row(f, "val-set-query/P0460_C02_D0030_H08_00101_00001.jpg")
    assert vq.split == "val_query" and vq.clothes_id == row(
        f, "val-set-gallery/P0460_C02_D0030_H08_00102_00001.jpg").clothes_id
    assert row(f, "train-set/P0002_C17_D0140_H16_00004_00002.jpg").camid == 16


def test_deepchange_tracklet_comes_from_the_list_file(tmp_path):
    build_layout(tmp_path, "deepchange")
    write_deepchange_lists(tmp_path / "DeepChangeDataset", tracklet=lambda n: 5000 + int(n.split("_")[4]))
    f = load_dataset("deepchange", tmp_path)
    assert row(f, "test-set-query/P0700_C04_D0055_H09_00201_00001.jpg").tracklet == 5201


@pytest.mark.parametrize("name", ["celebreid", "celebreid_light"])
def test_celeb_nothing_excluded(tmp_path, name):
    build_layout(tmp_path, name)
    f = load_dataset(name, tmp_path)
    assert set(f.loc[f["split"] == "train", "camid"]) == {0}
    assert set(f.loc[f["split"] == "query", "camid"]) == {0}
    assert set(f.loc[f["split"] == "gallery", "camid"]) == {1}
    assert f["clothes_id"].is_unique
    gallery = f[f["split"] == "gallery"]
    for _, q in f[f["split"] == "query"].iterrows():
        for mode in ("standard", "cc"):
            junk, good = junk_and_good(q, gallery, mode)
            assert not junk.any()
            assert good.sum() == (gallery["pid"] == q["pid"]).sum() > 0
        # SC is undefined on Celeb (documented): it would exclude every true match
        assert not junk_and_good(q, gallery, "sc")[1].any()
    r = row(f, "gallery/" + ("12_15_0.jpg" if name == "celebreid" else "55_12_0.jpg"))
    assert r.image_index in (15, 12) and r.camid == 1


def test_celeb_variants_are_not_confused(tmp_path):
    build_layout(tmp_path, "celebreid_light")
    with pytest.raises(DatasetError, match="Celeb-reID-light belongs to another dataset"):
        load_dataset("celebreid", tmp_path)
    with pytest.raises(DatasetError, match="Celeb-reID-light belongs to another dataset"):
        load_dataset("celebreid", tmp_path / "Celeb-reID-light")
    build_layout(tmp_path, "celebreid")  # both present: each loader picks its own folder
    assert Path(load_dataset("celebreid", tmp_path).attrs["root"]).name == "Celeb-reID"
    assert Path(load_dataset("celebreid_light", tmp_path).attrs["root"]).name == "Celeb-reID-light"


# ------------------------------------------------------------------------------------------ generated trees
class Expect:
    """Per-split bookkeeping of a generated tree: images, ids, cameras, clothes keys."""

    def __init__(self) -> None:
        self.images: Dict[str, int] = defaultdict(int)
        self.ids: Dict[str, Set] = defaultdict(set)
        self.cams: Dict[str, Set] = defaultdict(set)
        self.clothes: Dict[str, Set] = defaultdict(set)

    def add(self, split: str, pid: int, cam: object, clothes: object) -> None:
        self.images[split] += 1
        self.ids[split].add(pid)
        self.cams[split].add(cam)
        self.clothes[split].add(clothes)

    def stats(self) -> Dict[str, Tuple[int, int, int, int]]:
        return {s: (self.images[s], len(self.ids[s]), len(self.cams[s]), len(self.clothes[s])) for s in self.images}


def gen_prcc(root: Path, rng: random.Random) -> Expect:
    exp = Expect()
    train_ids = list(range(1, 13))
    for split, ids in (("train", train_ids), ("val", train_ids[::2])):
        for pid in ids:
            for cam in "ABC":
                if rng.random() < 0.15:  # some people miss a camera
                    continue
                for k in range(rng.randint(1, 4)):
                    touch(root / f"prcc/rgb/{split}/{pid:03d}/{cam}_cropped_rgb{k:03d}.jpg")
                    exp.add(split, pid, cam, (pid, "C" if cam == "C" else "AB"))
    for pid in range(1, 9):  # test numbers overlap the train numbers
        for cam, split in (("A", "gallery"), ("B", "query_sc"), ("C", "query_cc")):
            for k in range(rng.randint(1, 3)):
                touch(root / f"prcc/rgb/test/{cam}/{pid:03d}/cropped_rgb{k:03d}.jpg")
                exp.add(split, pid, cam, (pid, "C" if cam == "C" else "AB"))
    return exp


def gen_ltcc(root: Path, rng: random.Random) -> Expect:
    exp = Expect()
    for split, folder, ids in (("train", "train", range(0, 30)), ("test", None, range(30, 52))):
        for pid in ids:
            for outfit in range(1, rng.randint(1, 4) + 1):
                for cam in rng.sample(range(1, 13), rng.randint(1, 4)):
                    for k in range(rng.randint(1, 3)):
                        s = split if split == "train" else ("query" if k == 0 and cam % 3 == 0 else "gallery")
                        fold = folder or ("query" if s == "query" else "test")
                        touch(root / f"LTCC_ReID/{fold}/{pid:03d}_{outfit}_c{cam}_{k:06d}.png")
                        exp.add(s, pid, cam, (split, pid, outfit))
    return exp


def gen_vcclothes(root: Path, rng: random.Random) -> Expect:
    exp = Expect()
    for split, ids in (("train", range(1, 25)), ("test", range(25, 45))):
        for pid in ids:
            for cam in range(1, 5):
                clothes = 2 if cam == 4 else 1
                for k in range(rng.randint(1, 3)):
                    s = split if split == "train" else ("query" if k == 0 and rng.random() < 0.4 else "gallery")
                    touch(root / f"VC-Clothes/{s}/{pid:04d}-{cam:02d}-{clothes:02d}-{k:02d}.jpg")
                    exp.add(s, pid, cam, (split, pid, clothes))
    return exp


def gen_deepchange(root: Path, rng: random.Random) -> Expect:
    exp = Expect()
    base = root / "DeepChange"
    groups = (("train", "train-set", None, range(1, 21)), ("val", "val-set-query", "val-set-gallery", range(100, 110)),
              ("test", "test-set-query", "test-set-gallery", range(200, 215)))
    tracklet = 0
    lists: Dict[str, List[str]] = defaultdict(list)
    for group, qfold, gfold, ids in groups:
        for pid in ids:
            for day in rng.sample(range(1, 300), rng.randint(1, 3)):
                for cam in rng.sample(range(1, 18), rng.randint(1, 3)):
                    tracklet += 1
                    for k in range(rng.randint(1, 3)):
                        fold = qfold if gfold is None or k == 0 and rng.random() < 0.5 else gfold
                        name = f"P{pid:04d}_C{cam:02d}_D{day:04d}_H{rng.randint(8, 18):02d}_{tracklet:05d}_{k:05d}.jpg"
                        touch(base / fold / name)
                        lists[fold].append(f"{name},{tracklet + 10000}")
                        split = {"train-set": "train", "val-set-query": "val_query", "val-set-gallery": "val_gallery",
                                 "test-set-query": "query", "test-set-gallery": "gallery"}[fold]
                        exp.add(split, pid, cam, (group, pid, day))
    for fold in DC_FOLDERS:
        (base / f"{fold}-bbox.txt").write_text("\n".join(reversed(lists[fold])) + "\n")
    return exp


def gen_celeb(root: Path, rng: random.Random, folder: str = "Celeb-reID") -> Expect:
    exp = Expect()
    for split, ids in (("train", range(1, 40)), ("test", range(1, 25))):  # pid numbers reused across splits
        for pid in ids:
            n = rng.randint(2, 6)
            for y in range(1, n + 1):
                s = split if split == "train" else ("query" if y == 1 else "gallery")
                name = f"{pid}_{y}_{rng.randint(0, 1)}.jpg"
                touch(root / folder / s / name)
                exp.add(s, pid, 0 if s != "gallery" else 1, (s, name))
    return exp


GENERATORS = {"prcc": gen_prcc, "ltcc": gen_ltcc, "vcclothes": gen_vcclothes, "deepchange": gen_deepchange,
              "celebreid": gen_celeb,
              "celebreid_light": lambda root, rng: gen_celeb(root, rng, "Celeb-reID-light")}


@pytest.mark.parametrize("name", REAL)
def test_generated_tree_statistics(tmp_path, name):
    exp = GENERATORS[name](tmp_path, random.Random(7))
    frame = load_dataset(name, tmp_path)
    got = stats_dict(frame, name)
    assert got == exp.stats()
    assert sum(v[0] for v in got.values()) == len(frame) > 100


def test_generated_prcc_clothes_rule_holds_for_every_person(tmp_path):
    gen_prcc(tmp_path, random.Random(3))
    f = load_dataset("prcc", tmp_path)
    f["group"] = f["split"].map({"train": "train", "val": "val"}).fillna("test")
    for (group, pid), sub in f.groupby(["group", "pid"]):
        by_cam = sub.groupby("camid")["clothes_id"].unique().to_dict()
        assert all(len(v) == 1 for v in by_cam.values())
        if 0 in by_cam and 1 in by_cam:
            assert by_cam[0][0] == by_cam[1][0]
        if 2 in by_cam:
            assert all(by_cam[2][0] != v[0] for c, v in by_cam.items() if c != 2)
    # overlapping numbers in train and test never share clothes
    train = set(f.loc[f["group"] == "train", "clothes_id"])
    assert train.isdisjoint(set(f.loc[f["group"] == "test", "clothes_id"]))


# ------------------------------------------------------------------------------------------ bad inputs
def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match=r"does not exist; set data\.sources\.ltcc\.source"):
        load_dataset("ltcc", tmp_path / "nowhere")


def test_wrong_layout_lists_expected_and_found(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "gallery").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetError) as e:
        load_dataset("ltcc", tmp_path)
    msg = str(e.value)
    assert "expected query, test, train" in msg and "found gallery/, train/; files: notes.txt" in msg
    assert "\n" not in msg


def test_wrong_layout_deepchange_names_the_list_files(tmp_path):
    for fold in DC_FOLDERS:
        (tmp_path / "DeepChange" / fold).mkdir(parents=True)
    with pytest.raises(DatasetError, match="test-set-gallery-bbox.txt"):
        load_dataset("deepchange", tmp_path)


def test_several_roots_are_refused(tmp_path):
    build_layout(tmp_path / "copy1", "vcclothes")
    build_layout(tmp_path / "copy2", "vcclothes")
    (tmp_path / "copy1" / "VC-Clothes").rename(tmp_path / "copy1" / "a")
    (tmp_path / "copy2" / "VC-Clothes").rename(tmp_path / "copy2" / "b")
    for c in ("copy1/a", "copy2/b"):
        (tmp_path / c).rename(tmp_path / Path(c).name)
    with pytest.raises(DatasetError, match="holds several vcclothes roots"):
        load_dataset("vcclothes", tmp_path)


@pytest.mark.parametrize("name,folder", [("ltcc", "LTCC_ReID/query"), ("prcc", "prcc/rgb/test/C"),
                                         ("celebreid", "Celeb-reID/gallery")])
def test_empty_split(tmp_path, name, folder):
    build_layout(tmp_path, name)
    for p in sorted((tmp_path / folder).rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    with pytest.raises(DatasetError, match=r"split '\w+' is empty \(no images found in .*" + folder.split("/")[-1]):
        load_dataset(name, tmp_path)


@pytest.mark.parametrize("name,folder,bad", [
    ("ltcc", "LTCC_ReID/train", ["{}_c1.png", "a{}_1_c1_000001.png"]),
    ("vcclothes", "VC-Clothes/query", ["{}-1-1.jpg"]),
    ("celebreid", "Celeb-reID/train", ["x{}_1_0.jpg"]),
    ("deepchange", "DeepChangeDataset/train-set", ["Q{}_C01_D1_H1_1_1.jpg"]),
    ("prcc", "prcc/rgb/train/092", ["D_cropped_rgb{}.jpg"]),
])
def test_unparseable_names_show_the_first_few(tmp_path, name, folder, bad):
    build_layout(tmp_path, name)
    names = sorted(bad[i % len(bad)].format(i) for i in range(7))
    for n in names:
        touch(tmp_path / folder / n)
    if name == "deepchange":
        write_deepchange_lists(tmp_path / "DeepChangeDataset", tracklet=lambda n: 1)
    with pytest.raises(DatasetError) as e:
        load_dataset(name, tmp_path)
    msg = str(e.value)
    assert "7 file name(s)" in msg and "(and 2 more)" in msg
    shown = sorted(names)[:5] if name != "prcc" else [f"092/{n}" for n in sorted(names)[:5]]
    assert ", ".join(shown) in msg


@pytest.mark.parametrize("name,rel,what", [
    ("ltcc", "LTCC_ReID/test/001_1_c13_000001.png", "camera 13 outside 1..12"),
    ("vcclothes", "VC-Clothes/gallery/0005-05-01-09.jpg", "camera 5 outside 1..4"),
    ("deepchange", "DeepChangeDataset/test-set-gallery/P0700_C18_D0055_H09_00203_00009.jpg",
     "camera 18 outside 1..17"),
    ("celebreid", "Celeb-reID/query/633_1_0.jpg", "person id 633 outside 1..632"),
])
def test_invariant_violations_name_the_file(tmp_path, name, rel, what):
    build_layout(tmp_path, name)
    touch(tmp_path / rel)
    if name == "deepchange":
        write_deepchange_lists(tmp_path / "DeepChangeDataset")
    with pytest.raises(DatasetError, match=what) as e:
        load_dataset(name, tmp_path)
    assert Path(rel).name in str(e.value)


def test_prcc_val_ids_must_be_training_ids(tmp_path):
    build_layout(tmp_path, "prcc")
    touch(tmp_path / "prcc/rgb/val/777/A_cropped_rgb001.jpg")
    with pytest.raises(DatasetError, match=r"val/777 have no training folder"):
        load_dataset("prcc", tmp_path)


def test_prcc_refuses_flattened_and_contradicting_trees(tmp_path):
    build_layout(tmp_path, "prcc")
    touch(tmp_path / "prcc/rgb/test/A/001/B_cropped_rgb099.jpg")
    with pytest.raises(DatasetError, match="camera prefix B contradicts its folder test/A"):
        load_dataset("prcc", tmp_path)
    (tmp_path / "prcc/rgb/test/A/001/B_cropped_rgb099.jpg").unlink()
    touch(tmp_path / "prcc/rgb/train/121_A_cropped_rgb052.jpg")
    with pytest.raises(DatasetError, match="holds image files directly .*121_A_cropped_rgb052.jpg"):
        load_dataset("prcc", tmp_path)
    (tmp_path / "prcc/rgb/train/121_A_cropped_rgb052.jpg").unlink()
    (tmp_path / "prcc/rgb/train/p200").mkdir()
    with pytest.raises(DatasetError, match="not person ids .*p200"):
        load_dataset("prcc", tmp_path)


def test_deepchange_list_mismatches_name_both_files(tmp_path):
    build_layout(tmp_path, "deepchange")
    root = tmp_path / "DeepChangeDataset"
    extra = "P0702_C07_D0090_H17_00207_00001.jpg"
    touch(root / "test-set-gallery" / extra)
    with pytest.raises(DatasetError) as e:
        load_dataset("deepchange", tmp_path)
    assert f"test-set-gallery/{extra} is not listed in" in str(e.value)
    assert "test-set-gallery-bbox.txt" in str(e.value)
    (root / "test-set-gallery" / extra).unlink()
    with open(root / "val-set-query-bbox.txt", "a") as f:
        f.write("P0460_C02_D0030_H08_00999_00001.jpg,999\n")
    with pytest.raises(DatasetError) as e:
        load_dataset("deepchange", tmp_path)
    assert "val-set-query-bbox.txt lists P0460_C02_D0030_H08_00999_00001.jpg" in str(e.value)
    assert "val-set-query has no such image" in str(e.value)


@pytest.mark.parametrize("line,match", [("just-a-name.jpg", "expected '<image name>,<tracklet id>'"),
                                        ("P0001_C06_D0012_H09_00001_00003.jpg,7", "listed twice")])
def test_deepchange_bad_list_lines(tmp_path, line, match):
    build_layout(tmp_path, "deepchange")
    with open(tmp_path / "DeepChangeDataset" / "train-set-bbox.txt", "a") as f:
        f.write(line + "\n")
    with pytest.raises(DatasetError, match=match):
        load_dataset("deepchange", tmp_path)


def test_ltcc_bad_info_files(tmp_path):
    build_layout(tmp_path, "ltcc")
    (tmp_path / "LTCC_ReID/info/cloth-change_id_test.txt").write_text("1\n144\n")
    with pytest.raises(DatasetError, match=r"\[144\] are listed in both cloth-change_id_test.txt"):
        load_dataset("ltcc", tmp_path)
    (tmp_path / "LTCC_ReID/info/cloth-change_id_test.txt").write_text("1\nabc\n")
    with pytest.raises(DatasetError, match=r"cloth-change_id_test.txt:2: expected one integer"):
        load_dataset("ltcc", tmp_path)


def test_official_differences_are_reported(tmp_path):
    build_layout(tmp_path, "ltcc")
    loader = get_dataset("ltcc")
    diffs = loader.official_differences(split_statistics(load_dataset("ltcc", tmp_path), loader.splits))
    assert "train.images = 8, official 9576" in diffs and "gallery.ids = 2, official 75" in diffs
    assert len(diffs) == 6
