"""The test run leaves the checkout as it found it (tests/conftest.py compares two snapshots; issue #27)."""

from __future__ import annotations

import os

from conftest import checkout_changes, checkout_snapshot


def test_snapshot_sees_created_changed_and_deleted_files_but_not_caches(tmp_path):
    (tmp_path / "results" / "synthcc").mkdir(parents=True)
    (tmp_path / "kept.txt").write_text("a")
    (tmp_path / "edited.txt").write_text("a")
    (tmp_path / "gone.txt").write_text("a")
    before = checkout_snapshot(tmp_path)
    assert set(before) == {"kept.txt", "edited.txt", "gone.txt"}
    (tmp_path / "results" / "synthcc" / "manifest.csv").write_text("path\n")   # what a stray DAG run writes
    (tmp_path / ".snakemake").mkdir()
    (tmp_path / ".snakemake" / "lock").write_text("")
    (tmp_path / "edited.txt").write_text("ab")
    st = (tmp_path / "kept.txt").stat()
    os.utime(tmp_path / "kept.txt", ns=(st.st_atime_ns, st.st_mtime_ns))        # untouched content and time
    (tmp_path / "gone.txt").unlink()
    for cache in ("__pycache__", ".pytest_cache", ".venv", ".git", "maskcl.egg-info"):
        (tmp_path / cache).mkdir()
        (tmp_path / cache / "x").write_text("cache")
    assert checkout_changes(before, checkout_snapshot(tmp_path)) == [
        f"created: {os.path.join('.snakemake', 'lock')}",
        f"created: {os.path.join('results', 'synthcc', 'manifest.csv')}",
        "changed: edited.txt", "deleted: gone.txt"]
    assert checkout_changes(before, before) == []
