"""Shared test fixtures: the project root and fake dataset trees built from example paths."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYOUTS = Path(__file__).parent / "data" / "dataset_layouts.txt"

#: Folders of the checkout a test run may write (interpreter and tool caches) or that are not the project's.
_SCRATCH = {".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", ".mypy_cache", ".ruff_cache"}


def checkout_snapshot(root: Path) -> Dict[str, Tuple[int, int]]:
    """Every file of the checkout at ``root`` (relative path -> (size, mtime_ns)), caches left out."""
    out: Dict[str, Tuple[int, int]] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _SCRATCH and not d.endswith(".egg-info")]
        for name in files:
            path = Path(folder) / name
            with contextlib.suppress(OSError):
                st = path.lstat()
                out[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def checkout_changes(before: Dict[str, Tuple[int, int]], after: Dict[str, Tuple[int, int]]) -> List[str]:
    """Files created, changed or deleted between two snapshots, each as ``created|changed|deleted: path``."""
    out = [f"created: {p}" for p in sorted(after.keys() - before.keys())]
    out += [f"changed: {p}" for p in sorted(before.keys() & after.keys()) if before[p] != after[p]]
    out += [f"deleted: {p}" for p in sorted(before.keys() - after.keys())]
    return out


_BEFORE: Optional[Dict[str, Tuple[int, int]]] = None


def pytest_sessionstart(session: pytest.Session) -> None:
    global _BEFORE
    _BEFORE = checkout_snapshot(ROOT)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A test run leaves the checkout as it found it: tests work in temporary folders (issue #27)."""
    if _BEFORE is None or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    changes = checkout_changes(_BEFORE, checkout_snapshot(ROOT))
    if changes:
        shown = "\n  ".join(changes[:20]) + (f"\n  ... and {len(changes) - 20} more" if len(changes) > 20 else "")
        print(f"\nthe test run wrote into the checkout {ROOT} (a test must work in a temporary folder):\n  {shown}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def layout_paths() -> Dict[str, List[str]]:
    """Example relative paths per dataset section of tests/data/dataset_layouts.txt."""
    sections: Dict[str, List[str]] = {}
    current = None
    for line in LAYOUTS.read_text().splitlines():
        line = line.strip()
        if line.startswith("## "):
            current = line[3:].split("(")[0].strip()
            sections[current] = []
        elif line and not line.startswith("#") and current:
            sections[current].append(line)
    return sections


def fake_cc_manifest(root: Path, draw: Callable[[Path, int, int, int], None], *, train_ids: Sequence[int],
                     train_views: Sequence[Tuple[int, int]], test_ids: Sequence[int], changing: Callable[[int], bool],
                     gallery_views: Sequence[Tuple[int, int]]) -> "Any":
    """A small clothes-changing manifest, SynthCC's columns, over images ``draw(path, pid, outfit, k)`` writes.

    Each train id has ``train_views`` (camera, outfit); each test id two queries (camera 0 in outfit
    0, camera 1 in outfit 1 when it ``changing``) and ``gallery_views`` (its outfit 0 when it never
    changes). File names carry split, id, camera, outfit and view: ``query/001_c1_o1_01.png``.
    """
    import pandas as pd

    rows = [("train", pid, cam, outfit, k) for pid in train_ids for k, (cam, outfit) in enumerate(train_views)]
    for pid in test_ids:
        change = changing(pid)
        rows += [("query", pid, 0, 0, 0), ("query", pid, 1, 1 if change else 0, 1)]
        rows += [("gallery", pid, cam, outfit if change else 0, 10 + k) for k, (cam, outfit) in enumerate(gallery_views)]
    recs = []
    for split, pid, cam, outfit, k in rows:
        rel = f"{split}/{pid:03d}_c{cam}_o{outfit}_{k:02d}.png"
        draw(root / rel, pid, outfit, k)
        recs.append({"path": str(root / rel), "relpath": rel, "split": split, "pid": pid, "camid": cam,
                     "clothes_id": pid * 10 + outfit, "outfit": outfit,
                     "cloth_changing": changing(pid) or split == "train"})
    return pd.DataFrame(recs).sort_values(["split", "relpath"]).reset_index(drop=True)


def assert_trained_alike(a: Path, b: Path) -> None:
    """The run folders ``a`` and ``b`` hold the same model.pt weights, bit for bit, and the same train_log.csv
    but for its timing columns: what an interrupted and resumed run must give against an uninterrupted one."""
    import pandas as pd
    import torch

    wa = torch.load(a / "model.pt", weights_only=True)["state_dict"]
    wb = torch.load(b / "model.pt", weights_only=True)["state_dict"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    timing = ["cluster_s", "data_s", "step_s", "epoch_s"]
    pd.testing.assert_frame_equal(pd.read_csv(a / "train_log.csv").drop(columns=timing),
                                  pd.read_csv(b / "train_log.csv").drop(columns=timing))


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


def build_tiny_synthcc(work: Path) -> Path:
    """Tiny SynthCC in ``work`` with ``manifest.csv`` and ``masks.csv`` (ground-truth silhouettes)."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    from maskcl.datasets import load_dataset
    from maskcl.datasets.synthcc import generate_synthcc

    root = generate_synthcc(work / "synthcc", preset="tiny", seed=0)
    df = load_dataset("synthcc", root)
    df.to_csv(work / "manifest.csv", index=False)
    sil = []
    for rel, par in zip(df["relpath"], df["parsing"]):
        out = work / "sil" / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        lab = np.array(Image.open(Path(root) / par))
        Image.fromarray(((lab > 0) * 255).astype(np.uint8)).save(out)
        sil.append(str(out))
    pd.DataFrame({"relpath": df["relpath"], "silhouette": sil, "parts": sil}).to_csv(work / "masks.csv", index=False)
    return work


#: A script that trains one run from JSON arguments (tests launch it as a subprocess to kill it).
TRAIN_RUNNER = """
import json, sys
from maskcl.workflow import setup_logging
from maskcl.training.stage import train_stage
a = json.loads(sys.argv[1])
setup_logging(a["log"])
train_stage(a["manifest"], a["masks"], "silhouette", a["settings"], 0, a["model"], a["train_log"], a["state"],
            threads=a.get("threads", 1), progress=False)
"""


def require(available: bool, what: str) -> None:
    """Skip a test whose optional tool is missing, except in CI (``CI`` set), where it must be there.

    ``.ci/run`` installs every optional part we ship (the mediapipe extra, a minimal TeX), so a
    missing one there is a broken CI setup, not a reason to skip.
    """
    import os

    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing in CI; .ci/run must install it")
    pytest.skip(f"{what} is not installed")


@contextlib.contextmanager
def serve_folder(root: Path) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving the files of ``root`` (with Content-Length); yields its URL."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@contextlib.contextmanager
def root_logger_restored() -> Iterator[None]:
    """``run_job`` replaces the root logger's handlers (pytest's capture among them): put them back after."""
    import logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        yield
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
            h.close()
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])


@pytest.fixture
def job(tmp_path, capsys):
    """Run ``main`` as a workflow adapter does; return its one error line (exit status 1, no traceback)."""
    from types import SimpleNamespace

    from maskcl.workflow import run_job

    def call(main) -> str:
        with root_logger_restored(), pytest.raises(SystemExit) as e:
            run_job(main, SimpleNamespace(log=[str(tmp_path / "job.log")]))
        assert e.value.code == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err and "a bug" not in err
        lines = [line for line in err.splitlines() if line.startswith("ERROR: ")]
        assert len(lines) == 1, err
        line = lines[0][len("ERROR: "):]
        assert "\n" not in line and line.strip()
        return line

    yield call
