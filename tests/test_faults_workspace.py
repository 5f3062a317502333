"""A moved or copied workspace works on its own files or stops with one line; advice that is safe.

A workspace is built as the download and parse rules build it (run in its folder, as jobs are): tiny
SynthCC under ``resources/datasets``, its manifest, ``dataset.json`` and ground-truth masks. It is then
copied or moved, and the original renamed away or watched: every file the copy opens must be its
own. An older workspace (absolute paths in its files) that was copied is refused with one line
naming the original, never read. Then the advice of class 6: ``data.root`` inside ``results/``, an
SCHP checkpoint path that is a folder, and a SynthCC folder holding a user's files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List, Optional

import pandas as pd
import pytest
import yaml

from conftest import ROOT
from maskcl.datasets import dataset_splits
from maskcl.download import prepare_dataset
from maskcl.errors import CheckpointError, ConfigError, DatasetError
from maskcl.manifest import read_dataset_info, read_manifest
from maskcl.masks import parse_dataset, read_mask_index, write_quality_report
from maskcl.masks.index import check_index_masks

SPLITS = dataset_splits("synthcc")
MANIFEST = "results/synthcc/manifest.csv"
INFO = "results/synthcc/dataset.json"
INDEX = "results/synthcc/masks/groundtruth/index.csv"
FORCE = "snakemake --cores all --forcerun"


@contextlib.contextmanager
def inside(folder: Path) -> Iterator[None]:
    """Run in ``folder``, as a workflow job runs in its working folder."""
    old = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(old)


def _download(data_root: str = "resources/datasets", name: str = "synthcc", source: Optional[str] = None):
    return prepare_dataset(name, source, None, data_root, "resources/downloads", False,
                           {"preset": "tiny", "seed": 0} if name == "synthcc" else None, f"results/{name}/manifest.csv",
                           f"results/{name}/stats.csv", f"results/{name}/dataset.json", progress=False)


def _build(ws: Path) -> Path:
    ws.mkdir(parents=True)
    with inside(ws):
        _download()
        parse_dataset(MANIFEST, Path(INDEX).parent, "groundtruth", index_path=INDEX, progress=False, splits=SPLITS)
    return ws


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("relocate") / "original")


@contextlib.contextmanager
def away(folder: Path) -> Iterator[None]:
    """``folder`` renamed out of the way (what a move leaves behind), then put back."""
    gone = folder.with_name(folder.name + ".gone")
    folder.rename(gone)
    try:
        yield
    finally:
        gone.rename(folder)


_OPENED: List[str] = []
_WATCH: List[bool] = []


def _audit(event: str, args: tuple) -> None:
    if _WATCH and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.path.abspath(os.fsdecode(args[0])))


sys.addaudithook(_audit)


@contextlib.contextmanager
def opened() -> Iterator[List[str]]:
    """Every file the block opens (Python's ``open`` audit event: PIL, pandas and ``open`` all raise it)."""
    _OPENED.clear()
    _WATCH.append(True)
    try:
        yield _OPENED
    finally:
        _WATCH.clear()


def _use(ws: Path) -> pd.DataFrame:
    """What the stages read, in ``ws``: manifest, dataset.json, mask index, every mask and image header,
    and the mask-quality table (which decodes every label map and ground truth)."""
    with inside(ws):
        manifest = read_manifest(MANIFEST, splits=SPLITS)
        index = read_mask_index(INDEX, ("relpath", "label", "silhouette", "parts"))
        info = read_dataset_info(INFO)
        check_index_masks(index, manifest["relpath"], manifest["path"], "silhouette", index_path=INDEX)
        table = write_quality_report(MANIFEST, {"groundtruth": INDEX}, "q.csv", "q.md", splits=SPLITS)
    assert table["silhouette_iou"].iloc[0] == pytest.approx(1.0)
    own = str(ws.resolve())
    for paths in (manifest["path"], index["label"], index["silhouette"], index["parts"], [info["root"]]):
        assert all(str(p).startswith(own + os.sep) for p in paths)
    return manifest


# ------------------------------------------------------------------------------ relocatable workspaces

def test_files_store_workspace_paths_relative_to_their_folder(original):
    stored = pd.read_csv(original / MANIFEST)
    assert stored["path"][0] == f"../../resources/datasets/synthcc/{stored['relpath'][0]}"
    assert json.loads((original / INFO).read_text())["root"] == "../../resources/datasets/synthcc"
    index = pd.read_csv(original / INDEX)
    assert index["silhouette"][0] == "silhouette/" + str(Path(index["relpath"][0]).with_suffix(".png"))


def test_a_copy_opens_none_of_the_originals_files(original, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    with opened() as files:
        manifest = _use(copy)
    assert len(files) > 2 * len(manifest)          # every image, mask and label map was opened ...
    mine = str(original.resolve()) + os.sep
    assert not [f for f in files if os.path.realpath(f).startswith(mine)]   # ... and none of the original's


def test_a_copy_works_with_the_original_gone(original, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    with away(original):
        _use(copy)


def test_a_moved_workspace_works_in_its_new_place(original, tmp_path):
    first = tmp_path / "first"
    shutil.copytree(original, first)
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    first.rename(moved)
    _use(moved)


def test_a_copy_without_its_dataset_folder_says_so(original, tmp_path, job):
    copy = tmp_path / "copy"
    shutil.copytree(original / "results", copy / "results")
    with inside(copy):
        line = job(lambda smk: parse_dataset(MANIFEST, Path(INDEX).parent, "groundtruth", index_path=INDEX,
                                             progress=False, splits=SPLITS))
    assert line == (f"{MANIFEST}: the dataset folder resources/datasets/synthcc it names (relative to its folder) is "
                    f"not there: the workspace was copied or moved without it, or it was deleted; copy that folder "
                    f"along from the original workspace, or rerun the download rule: {FORCE} {MANIFEST}")


@pytest.fixture
def legacy_pair(original, tmp_path):
    """An older workspace (absolute paths in its manifest, dataset.json and mask index), and a copy of it."""
    old = tmp_path / "old"
    shutil.copytree(original, old)
    with inside(old):
        manifest, index = read_manifest(MANIFEST, splits=SPLITS), read_mask_index(INDEX, ("relpath",))
        info = read_dataset_info(INFO)
    manifest.to_csv(old / MANIFEST, index=False)       # as the old writer did: absolute, resolved paths
    index.to_csv(old / INDEX, index=False)
    (old / INFO).write_text(json.dumps(info))
    _use(old)                                          # read in place, an older workspace still works
    copy = tmp_path / "copy"
    shutil.copytree(old, copy)
    return old, copy


def test_a_copied_older_workspace_is_refused_not_read(legacy_pair):
    old, copy = legacy_pair
    root = old.resolve() / "resources/datasets/synthcc"
    with inside(copy), opened() as files:
        with pytest.raises(DatasetError) as e:
            read_manifest(MANIFEST, splits=SPLITS)
        assert str(e.value) == (f"{MANIFEST}: the manifest names images in {root}, inside another workspace "
                                f"({old.resolve()}): this workspace was copied or moved from there and must not "
                                f"read its files; rebuild it here: {FORCE} {MANIFEST}")
        with pytest.raises(DatasetError) as e:
            read_mask_index(INDEX)
        assert str(e.value).startswith(f"{INDEX}: mask index line 2, column 'label': {old.resolve()}/")
        assert str(e.value).endswith(f"lies outside the index's folder results/synthcc/masks/groundtruth (this "
                                     f"workspace was moved or copied from {old.resolve()}) and must not be read; "
                                     f"rebuild the index here: {FORCE} {INDEX}")
    assert not [f for f in files if f.startswith(str(old) + os.sep) or f.startswith(str(old.resolve()) + os.sep)]


def test_a_moved_older_workspace_names_the_move(legacy_pair):
    old, copy = legacy_pair
    with away(old), inside(copy):
        with pytest.raises(DatasetError) as e:
            read_manifest(MANIFEST, splits=SPLITS)
        assert str(e.value) == (f"{MANIFEST}: the manifest names images in {old.resolve()}/resources/datasets/synthcc"
                                f", which is gone: this workspace was moved or copied from {old.resolve()} (the file "
                                f"was written before paths were stored relative); rebuild it here: {FORCE} {MANIFEST}")
        with pytest.raises(DatasetError, match="this workspace was moved or copied from"):
            read_dataset_info(INFO)


def test_a_dataset_outside_the_workspace_is_shared_by_copies(tmp_path):
    """data.root outside the workspace: stored absolute, read by every copy (it is no workspace's file)."""
    shared = tmp_path / "shared"
    ws = tmp_path / "ws"
    ws.mkdir()
    with inside(ws):
        _download(data_root=str(shared))
    assert pd.read_csv(ws / MANIFEST)["path"][0].startswith(str(shared.resolve()) + os.sep)
    copy = tmp_path / "copy"
    shutil.copytree(ws, copy)
    with away(ws), inside(copy):
        frame = read_manifest(MANIFEST, splits=SPLITS)
    assert frame["path"][0].startswith(str(shared.resolve()) + os.sep)
    shared.rename(tmp_path / "moved")
    with inside(copy), pytest.raises(DatasetError) as e:
        read_manifest(MANIFEST, splits=SPLITS)
    assert str(e.value) == (f"{MANIFEST}: the dataset folder {shared.resolve()}/synthcc named by the manifest does not "
                            f"exist (moved, renamed or deleted): restore it, or point data.root or data.sources at its "
                            f"new place, then rerun the download rule: {FORCE} {MANIFEST}")


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "1", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_the_dag_reruns_in_a_copy_on_its_own_files(tmp_path):
    """The real rules: masks and their quality built in one folder, the folder copied and the original
    renamed away; the forced parse and quality jobs of the copy reuse its own masks and images."""
    first = tmp_path / "first"
    first.mkdir()
    cfg = yaml.safe_load((ROOT / "tests/data/config_tiny.yaml").read_text())
    cfg["masks"] = {"sources": ["groundtruth"], "train_source": "groundtruth"}
    (first / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = _snakemake(first, "results/synthcc/masks/quality.csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)
    with away(first):
        proc = _snakemake(copy, "results/synthcc/masks/quality.csv", "--forcerun", INDEX)
        assert proc.returncode == 0, proc.stderr[-3000:]
        n = len(pd.read_csv(copy / MANIFEST))
        assert f"{n} images, {n} already done, 0 to process" in (copy / "logs/parse/synthcc/groundtruth.log").read_text()
        shutil.rmtree(copy / "resources")               # a copy without its dataset: one line, the fix
        proc = _snakemake(copy, "results/synthcc/masks/quality.csv", "--forcerun", INDEX)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR: ")]
    assert len(lines) == 1 and "the dataset folder resources/datasets/synthcc it names" in lines[0], lines
    assert "Traceback" not in (copy / "logs/parse/synthcc/groundtruth.log").read_text()


# ------------------------------------------------------------------------------ advice: data.root

@pytest.mark.parametrize("data_root", ["results", "results/datasets"])
def test_data_root_inside_results_is_refused_before_anything_is_written(tmp_path, job, data_root):
    ws = tmp_path / "ws"
    (ws / "results" / "synthcc").mkdir(parents=True)
    keep = ws / "results" / "synthcc" / "runs.txt"
    keep.write_text("every run")
    with inside(ws):
        line = job(lambda smk: _download(data_root=data_root))
    folder = (ws / data_root / "synthcc").resolve()
    assert line == (f"data.root: the dataset folder {folder} lies inside results/ of the working folder, where the "
                    f"workflow writes its outputs (the manifests, the masks and every run): set data.root to a folder "
                    f"outside results/, such as the default resources/datasets")
    assert "remove" not in line and keep.read_text() == "every run"
    assert sorted(p.name for p in (ws / "results" / "synthcc").iterdir()) == ["runs.txt"]


def test_an_archive_is_not_extracted_into_results(tmp_path):
    ws = tmp_path / "ws"
    (ws / "results").mkdir(parents=True)
    archive = tmp_path / "ltcc.zip"
    archive.write_bytes(b"PK\x05\x06" + bytes(18))
    with inside(ws), pytest.raises(ConfigError, match=r"^data.root: the dataset folder .* lies inside results/"):
        _download(data_root="results", name="ltcc", source=str(archive))
    assert not (ws / "results" / "ltcc").exists()


def test_a_dataset_folder_holding_the_workspace_is_refused(tmp_path):
    ws = tmp_path / "synthcc"                         # data.root/<dataset> would be the workspace itself
    ws.mkdir()
    with inside(ws), pytest.raises(ConfigError) as e:
        _download(data_root="..")
    assert str(e.value) == (f"data.root: the dataset folder {ws.resolve()} is the working folder {ws.resolve()} or "
                            f"holds it, so writing the dataset there would replace the workspace: set data.root to a "
                            f"folder of its own, such as the default resources/datasets")
    assert sorted(p.name for p in ws.iterdir()) == []


# ------------------------------------------------------------------------------ advice: SynthCC's folder

def test_regenerating_synthcc_names_a_users_files_instead_of_deleting_them(tmp_path):
    from maskcl.datasets.synthcc import generate_synthcc

    root = tmp_path / "synthcc"
    generate_synthcc(root, "tiny", seed=0)
    (root / "notes.txt").write_text("mine")
    extra = sorted((root / "train").iterdir())[0].with_name("zz_extra.png")
    shutil.copy(sorted((root / "train").iterdir())[0], extra)
    with pytest.raises(DatasetError) as e:
        generate_synthcc(root, "tiny", seed=1)
    assert str(e.value) == (f"synthcc: {root} holds a SynthCC dataset to regenerate, and holds 2 file(s) the generator "
                            f"did not write: notes.txt, train/zz_extra.png; regenerating would delete them: move them "
                            f"out of {root} (or set data.root to another folder), then rerun")
    assert (root / "notes.txt").read_text() == "mine" and extra.is_file()
    # the user's own file in a split folder makes the copy look damaged: the same refusal, not a silent rebuild
    with pytest.raises(DatasetError, match="train/zz_extra.png"):
        generate_synthcc(root, "tiny", seed=0)
    (root / "notes.txt").unlink()
    extra.unlink()
    generate_synthcc(root, "tiny", seed=1)              # nothing of the user's left: regenerated
    assert json.loads((root / "synthcc.json").read_text())["parameters"]["seed"] == 1


def test_a_folder_that_is_not_synthcc_is_named_not_removed(tmp_path):
    from maskcl.datasets.synthcc import generate_synthcc

    root = tmp_path / "synthcc"
    (root / "thesis").mkdir(parents=True)
    (root / "thesis" / "main.tex").write_text("precious")
    with pytest.raises(DatasetError) as e:
        generate_synthcc(root, "tiny")
    assert str(e.value) == (f"synthcc: {root} exists and is not a SynthCC dataset (no synthcc.json), and holds 1 "
                            f"file(s) the generator did not write: thesis/main.tex; regenerating would delete them: "
                            f"move them out of {root} (or set data.root to another folder), then rerun")


# ------------------------------------------------------------------------------ advice: SCHP checkpoint folder

def test_an_schp_checkpoint_folder_is_named_with_a_file_path_that_works(tmp_path):
    from maskcl.masks import build_mask_source
    from maskcl.masks.checkpoint import read_state_dict
    from maskcl.masks.fetch import CheckpointSource, fetch_checkpoint

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    want = (f"SCHP checkpoint {folder} is a folder, not a checkpoint file: set masks.schp.checkpoint to a file path, "
            f"such as {folder}/exp-schp-201908261155-lip.pth (the schp_checkpoint rule fetches the checkpoint there), "
            f"or to null (the default resources/checkpoints/<official file>)")
    with pytest.raises(CheckpointError) as e:
        build_mask_source("schp", checkpoint=str(folder), device="cpu")
    assert str(e.value) == want and "not found" not in want
    with pytest.raises(CheckpointError) as e:
        fetch_checkpoint(CheckpointSource.from_config({"variant": "lip", "source": str(tmp_path / "x.pth")}), folder)
    assert str(e.value) == want
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints"]   # nothing fetched beside it
    (folder / "exp-schp-201908261155-lip.pth").write_bytes(b"")
    with pytest.raises(CheckpointError) as e:
        read_state_dict(folder)
    assert str(e.value) == (f"SCHP checkpoint {folder} is a folder, not a checkpoint file: set masks.schp.checkpoint "
                            f"to the checkpoint file inside it, {folder}/exp-schp-201908261155-lip.pth")
