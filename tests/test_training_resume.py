"""Kill a training run with SIGKILL, rerun it, and get exactly the uninterrupted result."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import TRAIN_RUNNER, assert_trained_alike, build_tiny_synthcc

pytestmark = pytest.mark.slow

SETTINGS = dict(method="maskcl", arch="resnet18", pretrained="none", height=64, width=32, pad=4, epochs=4, iters=4,
                batch_size=16, num_instances=4, allknn=2, k1=10, k2=3, min_samples=2, eps=0.7, workers=0,
                device="cpu")



@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    work = build_tiny_synthcc(tmp_path_factory.mktemp("resume"))
    (work / "runner.py").write_text(TRAIN_RUNNER)
    return work


def _args(work: Path, name: str) -> dict:
    return {"manifest": str(work / "manifest.csv"), "masks": str(work / "masks.csv"), "settings": SETTINGS,
            "model": str(work / name / "model.pt"), "train_log": str(work / name / "train_log.csv"),
            "state": str(work / name / "state"), "log": str(work / name / "log.txt")}


def _start(work: Path, name: str) -> subprocess.Popen:
    (work / name).mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, str(work / "runner.py"), json.dumps(_args(work, name))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _evaluate(work: Path, name: str) -> dict:
    from maskcl.evaluation import evaluate_checkpoint

    res = evaluate_checkpoint("synthcc", work / "manifest.csv", work / name / "model.pt",
                              work / name / "metrics.json", work / name / "ranks.npz",
                              settings={"batch_size": 64, "workers": 0}, device="cpu", threads=1)
    return {k: (r["mAP"], r["rank1"]) for k, r in res.items()}


def test_killed_training_resumes_and_matches_uninterrupted_run(tiny):
    work = tiny
    ref = _start(work, "uninterrupted")
    _, err = ref.communicate(timeout=600)
    assert ref.returncode == 0, err.decode()[-2000:]
    assert not (work / "uninterrupted" / "state").exists()  # spent once model.pt is written

    victim = _start(work, "killed")
    log_csv = work / "killed" / "state" / "train_log.csv"
    deadline = time.time() + 600
    while time.time() < deadline:
        if log_csv.exists() and len(pd.read_csv(log_csv)) >= 2:
            break
        if victim.poll() is not None:
            pytest.fail("training finished before it could be killed")
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert not (work / "killed" / "model.pt").exists()
    assert (work / "killed" / "state" / "checkpoint.pt").is_file()

    again = _start(work, "killed")
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err.decode()[-2000:]
    text = (work / "killed" / "log.txt").read_text()
    m = re.search(r"resuming from epoch (\d+) of 4", text)
    assert m and int(m.group(1)) >= 3, text[-2000:]
    assert "starting maskcl from scratch" not in text
    assert not (work / "killed" / "state").exists()

    assert_trained_alike(work / "uninterrupted", work / "killed")
    assert _evaluate(work, "uninterrupted") == _evaluate(work, "killed")
