"""Atomic writes: nothing partial under the final name, and the final file's mode as a plain open gives it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from maskcl.io import atomic_path, write_text_atomic


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_file_has_the_mode_of_a_plain_open(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        write_text_atomic(tmp_path / "table.md", "x\n")
        (tmp_path / "plain.md").write_text("x\n")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "table.md").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.md").stat().st_mode) == 0o666 & ~umask
    assert os.umask(old) == old  # the umask is left as it was


def test_a_failed_block_leaves_neither_the_file_nor_a_temporary(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "model.pt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert (tmp_path / "model.pt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
