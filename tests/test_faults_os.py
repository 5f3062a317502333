"""I/O failures are reported as I/O, not as bugs: one line with the path, the cause and the fix, exit 1.

Read-only folders, a full disk and failures inside DataLoader worker processes go through
``maskcl.workflow.run_job`` as a workflow adapter does. As root, ``chmod`` blocks nothing, so a
read-only file system is simulated by raising ``OSError(EROFS)`` from the write.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import maskcl.io as mio
from maskcl.errors import DatasetError
from maskcl.models import export
from maskcl.workflow import describe_os_error, run_job, worker_message

from conftest import root_logger_restored

AS_ROOT = os.geteuid() == 0



def finals(folder: Path) -> list:
    """Every file below ``folder`` (temporary files included: none may be left)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def save_tiny_model(path: Path) -> None:
    export.save_model(path, method="baseline", arch="resnet50", dim=4, pooling="avg", last_stride=1,
                      input_size=(8, 4), settings={}, seed=0, epochs=1, train_images=1,
                      weights={"state_dict": {"w": torch.zeros(2)}})


# ------------------------------------------------------------------------------------------ describe_os_error
@pytest.mark.parametrize("code, fix", [
    (errno.EACCES, "check the permissions"),
    (errno.EROFS, "read-only file system"),
    (errno.ENOSPC, "free space on the disk"),
    (errno.ENOENT, "does not exist"),
    (errno.EMFILE, "ulimit -n"),
])
def test_each_errno_gets_its_path_cause_and_fix(code, fix):
    line = describe_os_error(OSError(code, os.strerror(code), "/data/results/x/manifest.csv"))
    assert line.startswith("/data/results/x/manifest.csv: ")
    assert os.strerror(code) in line and f"({errno.errorcode[code]})" in line and fix in line
    assert "\n" not in line


# ------------------------------------------------------------------------------------------ writes
def read_only(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make ``folder`` refuse new files: chmod, or (as root, whom chmod does not stop) EROFS from mkstemp."""
    if not AS_ROOT:
        folder.chmod(0o555)  # the caller restores it
        return
    real = mio.tempfile.mkstemp

    def mkstemp(*args: Any, dir: Any = None, **kwargs: Any):
        if dir is not None and Path(dir) == folder:
            name = os.path.join(str(dir), "." + kwargs.get("prefix", "").lstrip("."))
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), name)
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(mio.tempfile, "mkstemp", mkstemp)


def test_write_into_a_read_only_folder(tmp_path, monkeypatch, job):
    out = tmp_path / "results" / "ltcc"
    out.mkdir(parents=True)
    read_only(monkeypatch, out)
    try:
        line = job(lambda smk: mio.write_json_atomic(out / "dataset.json", {"a": 1}))
    finally:
        out.chmod(0o755)
    assert line.startswith(f"{out}") and str(out) in line.split(";", 1)[1]  # the path, and the folder to fix
    assert ("(EROFS)" in line and "read-only file system" in line) or ("(EACCES)" in line and "permissions" in line)
    assert finals(out) == []


def test_disk_full_while_saving_a_model(tmp_path, monkeypatch, job):
    model = tmp_path / "results" / "synthcc" / "runs" / "e" / "m" / "seed0" / "model.pt"

    def save(obj: Any, f: Any) -> None:  # writes a part of the file, then the disk is full
        Path(f).write_bytes(b"PK\x03\x04" + b"\0" * 1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))

    monkeypatch.setattr(export.torch, "save", save)
    line = job(lambda smk: save_tiny_model(model))
    assert "No space left on device (ENOSPC)" in line and f"df -h {model.parent}" in line
    assert line.startswith(f"{model.parent}{os.sep}.model.pt.")  # the temporary file it was writing
    assert finals(model.parent) == []  # no model.pt, and the partial temporary file is gone


def test_torch_writer_failure_is_named_as_a_write_failure(tmp_path, monkeypatch, job):
    model = tmp_path / "results" / "model.pt"

    def save(obj: Any, f: Any) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing file "
                           "data/3: file write failed")

    monkeypatch.setattr(export.torch, "save", save)
    line = job(lambda smk: save_tiny_model(model))
    assert "could not be written" in line and "free space" in line and str(model) in line
    assert finals(model.parent) == []


def test_a_real_bug_keeps_its_traceback(tmp_path, capsys):
    with root_logger_restored():
        for exc in (ValueError("bad index"), OSError("library says: bad data"), RuntimeError("shape mismatch")):
            def main(smk: Any, exc: Exception = exc) -> None:
                raise exc

            with pytest.raises(type(exc)):
                run_job(main, SimpleNamespace(log=[str(tmp_path / "job.log")]))
            assert "a bug, please report it" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ DataLoader workers
class Failing(Dataset):
    """Item 1 raises ``exc`` (inside the worker process)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> torch.Tensor:
        if i == 1:
            raise self.exc
        return torch.zeros(2)


def drain(dataset: Dataset) -> None:
    batches = iter(DataLoader(dataset, batch_size=1, num_workers=1))
    try:
        for _ in batches:
            pass
    finally:  # stop the worker now, not whenever the failed iterator is collected
        batches._shutdown_workers()


def test_dataset_error_in_a_worker_is_its_own_one_line(tmp_path, job):
    message = f"cannot read image {tmp_path}/train/001_1_c1_0.png: broken PNG; regenerate the dataset"
    line = job(lambda smk: drain(Failing(DatasetError(message))))
    assert line == message


def test_os_error_in_a_worker_names_path_cause_and_fix(tmp_path, job):
    path = str(tmp_path / "train" / "001_1_c1_0.png")
    line = job(lambda smk: drain(Failing(PermissionError(errno.EACCES, os.strerror(errno.EACCES), path))))
    assert line.startswith(f"{path}: Permission denied (EACCES); check the permissions")
    assert f"ls -ld {tmp_path / 'train'}" in line


def test_read_only_file_system_in_a_worker(tmp_path, job):
    path = str(tmp_path / "cache" / "feat.npy")
    line = job(lambda smk: drain(Failing(OSError(errno.EROFS, os.strerror(errno.EROFS), path))))
    assert line.startswith(f"{path}: Read-only file system (EROFS)") and "writable folder" in line


def test_killed_worker_is_named_with_the_fix(job):
    def main(smk: Any) -> None:
        raise RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed. ")

    line = job(main)
    assert line.startswith("DataLoader worker (pid 4242) is killed by signal: Killed") and "more memory" in line


def test_worker_message_ignores_other_errors():
    assert worker_message("plain message") is None
    wrapped = ("Caught DatasetError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
               '  File "x.py", line 1, in f\nmaskcl.errors.DatasetError: the original line\n')
    assert worker_message(wrapped) == "the original line"
    assert worker_message(wrapped.replace("maskcl.errors.DatasetError", "KeyError")) is None


def test_image_that_cannot_be_opened_for_permissions_is_io_not_a_damaged_dataset(tmp_path, monkeypatch, job):
    from maskcl.models import images

    image = tmp_path / "data" / "synthcc" / "train" / "001_1_c1_0.png"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"")

    def refuse(path: Any, *args: Any) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(images.Image, "open", refuse)
    line = job(lambda smk: images.load_rgb(str(image)))
    assert line.startswith(f"{image}: Permission denied (EACCES); check the permissions") and "regenerate" not in line
