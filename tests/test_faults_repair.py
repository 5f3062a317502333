"""Repair advice that repairs: the command a damaged file's error names really rebuilds it.

A damaged SynthCC image names ``snakemake --cores all --forcerun results/synthcc/manifest.csv``;
that job (``prepare_dataset``) regenerates the dataset because the image no longer matches
``SHA256SUMS``. A truncated ``model.pt`` names the forced train target. Each failure goes through
``maskcl.workflow.run_job``: exit 1, one line naming the file and the command, no output written.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from maskcl.datasets.synthcc import generate as gen_mod
from maskcl.datasets.synthcc import generate_synthcc
from maskcl.download import prepare_dataset
from maskcl.download.extract import EXTRACT_MARKER
from maskcl.models.export import MODEL_FORMAT, load_model
from maskcl.models.images import ImageSet, load_rgb, load_rgb_eval
from maskcl.repair import dataset_repair_hint, force_command, model_repair_hint

REGENERATE = "snakemake --cores all --forcerun results/synthcc/manifest.csv"
MODEL = "results/synthcc/runs/exp/groundtruth-silhouette/seed0/model.pt"



def download_job(work: Path) -> None:
    """What the download rule runs for SynthCC (the job the repair command forces)."""
    prepare_dataset("synthcc", None, None, work / "data", work / "cache", True, {"preset": "tiny", "seed": 0},
                    work / "results/synthcc/manifest.csv", work / "results/synthcc/stats.csv",
                    work / "results/synthcc/dataset.json", progress=False)


def drain_images(paths: list, out: Path) -> None:
    """Read every image in a DataLoader worker, then write ``out`` (as a stage writes its output last)."""
    batches = iter(DataLoader(ImageSet(paths, lambda im: torch.from_numpy(np.asarray(im).copy())), batch_size=1,
                              num_workers=1))
    try:
        for _ in batches:
            pass
    finally:
        batches._shutdown_workers()
    out.write_text("done\n")


def test_force_command_names_the_target():
    assert force_command(MODEL) == f"snakemake --cores all --forcerun {MODEL}"


# ------------------------------------------------------------------------------------------ SynthCC
def test_damaged_synthcc_image_names_the_command_that_regenerates_it(tmp_path, monkeypatch, job, caplog):
    monkeypatch.chdir(tmp_path)
    download_job(tmp_path)
    root = tmp_path / "data" / "synthcc"
    image = sorted((root / "train").iterdir())[3]
    good = image.read_bytes()
    image.write_bytes(b"\x89PNG garbage, not an image" * 10)

    out = tmp_path / "results" / "features.npy"
    line = job(lambda smk: drain_images(sorted(str(p) for p in (root / "train").iterdir()), out))
    assert line.startswith(f"cannot read image {image}: ") and line.endswith(REGENERATE)
    assert not out.exists()

    with caplog.at_level(logging.WARNING):
        download_job(tmp_path)  # what the forced target runs
    assert f"{image} is damaged" in caplog.text and "regenerating" in caplog.text
    assert image.read_bytes() == good
    drain_images([str(image)], out)  # readable again
    assert out.read_text() == "done\n"


def test_edited_but_decodable_image_is_regenerated_not_reused(tmp_path, caplog):
    root = generate_synthcc(tmp_path / "synthcc", "tiny", seed=0)
    image = sorted((root / "query").iterdir())[0]
    good = image.read_bytes()
    pixels = np.asarray(Image.open(image)).copy()
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels).save(image)
    with caplog.at_level(logging.WARNING):
        generate_synthcc(tmp_path / "synthcc", "tiny", seed=0)
    assert "sha256 differs" in caplog.text
    assert image.read_bytes() == good


def test_dataset_without_sums_is_checked_by_decoding(tmp_path, caplog):
    root = generate_synthcc(tmp_path / "synthcc", "tiny", seed=0)
    (root / gen_mod.SUMS).unlink()  # as written before SHA256SUMS existed
    image = sorted((root / "parsing" / "train").iterdir())[0]
    good = image.read_bytes()
    image.write_bytes(good[: len(good) // 2])
    with caplog.at_level(logging.WARNING):
        generate_synthcc(tmp_path / "synthcc", "tiny", seed=0)
    assert f"{image} is unreadable" in caplog.text
    assert image.read_bytes() == good and (root / gen_mod.SUMS).is_file()


def test_sums_cover_every_file_but_the_metadata(tmp_path):
    root = generate_synthcc(tmp_path / "synthcc", "tiny", seed=0)
    listed = {line.split("  ", 1)[1] for line in (root / gen_mod.SUMS).read_text().splitlines()}
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert listed == files - {gen_mod.META, gen_mod.SUMS}


def test_extracted_dataset_hint_deletes_and_reextracts(tmp_path, monkeypatch, job):
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "data" / "ltcc"
    (target / "LTCC_ReID" / "query").mkdir(parents=True)
    (target / EXTRACT_MARKER).write_text(json.dumps({"archive": "ltcc.zip"}))
    image = target / "LTCC_ReID" / "query" / "001_1_c1_015.png"
    image.write_bytes(b"not a png")
    line = job(lambda smk: load_rgb_eval(str(image)))
    assert line.startswith(f"{image}: cannot read image")
    assert line.endswith(f"delete {target} and run snakemake --cores all --forcerun results/ltcc/manifest.csv")


def test_image_of_a_folder_used_in_place_asks_for_a_good_copy(tmp_path, job):
    image = tmp_path / "mine" / "a.png"
    image.parent.mkdir()
    image.write_bytes(b"")
    line = job(lambda smk: load_rgb(str(image)))
    assert str(image) in line and "good copy from the original dataset" in line and "forcerun" not in line
    assert dataset_repair_hint(image) in line


# ------------------------------------------------------------------------------------------ model.pt
def truncated_model(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": MODEL_FORMAT, "arch": "resnet50", "state_dict": {"w": torch.zeros(1000)}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("absolute", [False, True])
def test_truncated_model_names_the_forced_train_target(absolute, tmp_path, monkeypatch, job):
    monkeypatch.chdir(tmp_path)
    truncated_model(tmp_path / MODEL)
    path = str(tmp_path / MODEL) if absolute else MODEL
    out = tmp_path / "results" / "synthcc" / "eval.json"
    line = job(lambda smk: (load_model(path), out.write_text("{}")))
    assert line.startswith(f"{path}: not a readable model file, truncated or damaged")
    assert line.endswith(f"rebuild it by retraining this run: snakemake --cores all --forcerun {MODEL}")
    assert not out.exists()


def test_missing_or_foreign_model_gets_the_same_hint(tmp_path, monkeypatch, job):
    monkeypatch.chdir(tmp_path)
    line = job(lambda smk: load_model(MODEL))
    assert line == f"{MODEL}: model file not found; {model_repair_hint(MODEL)}"
    (tmp_path / MODEL).parent.mkdir(parents=True)
    torch.save({"format": "something-else"}, tmp_path / MODEL)
    line = job(lambda smk: load_model(MODEL))
    assert "not a maskcl-model/1 file" in line and line.endswith(f"--forcerun {MODEL}")


def test_model_outside_the_workflow_gets_plain_advice(tmp_path, monkeypatch, job):
    monkeypatch.chdir(tmp_path)
    elsewhere = tmp_path / "downloads" / "model.pt"
    truncated_model(elsewhere)
    line = job(lambda smk: load_model(elsewhere))
    assert str(elsewhere) in line and "forcerun" not in line and "retrain the run that writes it" in line


def test_model_read_permission_error_is_io_not_damage(tmp_path, monkeypatch, job):
    monkeypatch.chdir(tmp_path)
    truncated_model(tmp_path / MODEL)

    def load(path: Any, **kwargs: Any) -> None:
        raise PermissionError(13, os.strerror(13), str(path))

    monkeypatch.setattr(torch, "load", load)
    line = job(lambda smk: load_model(MODEL))
    assert line.startswith(f"{MODEL}: Permission denied (EACCES); check the permissions")
