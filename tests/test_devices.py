"""maskcl.devices: per-job GPU selection and the flock-based claims, tested without a GPU.

The number of visible devices is injected (``device_count=``); other jobs are real processes that
hold real locks, so the tests exercise the same kernel locking that concurrent Snakemake jobs do.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List, Optional

import pytest
import torch

from maskcl.devices import (GpuBusyError, claim_gpu, default_lock_dir, release_claims, select_device,
                            visible_gpu_ids)
from maskcl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

# A stand-in for another job: claims a GPU through the library, prints "<index> <physical id>" (or
# "busy"), then holds the claim until its stdin is closed (or it is killed).
HOLDER = """
import sys
from maskcl.devices import GpuBusyError, claim_gpu
ids, lock_dir, timeout = sys.argv[1].split(","), sys.argv[2], sys.argv[3]
try:
    claim = claim_gpu(ids, lock_dir=lock_dir, wait_timeout=None if timeout == "none" else float(timeout),
                      poll_interval=0.05)
except GpuBusyError as e:
    print("busy", e, flush=True)
    sys.exit(3)
print(claim.index, claim.physical_id, flush=True)
sys.stdin.read()
"""


class Holder:
    def __init__(self, ids: List[str], lock_dir: Path, timeout: Optional[float] = None) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, ",".join(ids), str(lock_dir),
                                      "none" if timeout is None else str(timeout)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def line(self, timeout: float = 20.0) -> Optional[str]:
        """The holder's report, or None if it has said nothing after ``timeout`` seconds."""
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline().strip() if ready else None

    def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=20)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=20)


@pytest.fixture
def holders() -> Iterator[list]:
    made: list = []
    yield made
    for h in made:
        h.kill()


@pytest.fixture(autouse=True)
def _release_own_claims() -> Iterator[None]:
    yield
    release_claims()


def env(**kw: str) -> dict:
    """A clean environment: no CUDA mask, no scheduler, unless given."""
    return dict(kw)


# ------------------------------------------------------------------------------ specs without a GPU
def test_cpu_spec_is_cpu_and_touches_no_locks(tmp_path):
    assert select_device("cpu", device_count=4, environ=env(), lock_dir=tmp_path / "locks") == torch.device("cpu")
    assert not (tmp_path / "locks").exists()


def test_auto_without_gpu_is_cpu(tmp_path):
    for mask in (None, "", "-1"):  # unset, or every GPU hidden on purpose
        e = env() if mask is None else env(CUDA_VISIBLE_DEVICES=mask)
        assert select_device("auto", device_count=0, environ=e, lock_dir=tmp_path) == torch.device("cpu")


def test_granted_gpu_that_torch_cannot_see_is_an_error_not_a_cpu_run(tmp_path):
    # SLURM granted GPU 3, but this torch (a CPU-only build) sees none: days of CPU training otherwise.
    e = env(CUDA_VISIBLE_DEVICES="3", SLURM_JOB_ID="77")
    with pytest.raises(ConfigError, match=r"^train\.device is auto: .*CUDA_VISIBLE_DEVICES='3'.*sees none.*set "
                                          r"train\.device to cpu"):
        select_device("auto", key="train.device", device_count=0, environ=e, lock_dir=tmp_path)


@pytest.mark.parametrize("spec", ["cuda", "cuda:0"])
def test_cuda_without_gpu_names_the_key(spec, tmp_path):
    with pytest.raises(ConfigError, match=rf"^evaluate\.device is {spec}: no CUDA device is visible"):
        select_device(spec, key="evaluate.device", device_count=0, environ=env(), lock_dir=tmp_path)


def test_bad_spec_and_out_of_range_index(tmp_path):
    with pytest.raises(ConfigError, match=r"masks\.schp\.device is 'gpu'; use auto, cpu, cuda or cuda:N"):
        select_device("gpu", key="masks.schp.device", device_count=2, environ=env(), lock_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"train\.device is cuda:2 but only 2 CUDA device\(s\) are visible"):
        select_device("cuda:2", key="train.device", device_count=2, environ=env(), lock_dir=tmp_path)


# ------------------------------------------------------------------------------ one visible GPU
def test_single_gpu_granted_by_scheduler_is_used_without_locks(tmp_path, caplog):
    e = env(CUDA_VISIBLE_DEVICES="5", SLURM_JOB_ID="123")
    with caplog.at_level(logging.INFO, logger="maskcl.devices"):
        dev = select_device("auto", key="train.device", device_count=1, environ=e, lock_dir=tmp_path / "l")
    assert dev == torch.device("cuda:0")
    assert not (tmp_path / "l").exists()  # the scheduler owns the assignment
    assert "train.device: cuda:0" in caplog.text and "physical 5" in caplog.text


def test_scheduler_job_seeing_gpus_it_was_not_granted_warns(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="maskcl.devices"):
        select_device("auto", device_count=1, environ=env(SLURM_JOB_ID="9"), lock_dir=tmp_path)
    assert "no CUDA_VISIBLE_DEVICES" in caplog.text


# ------------------------------------------------------------------------------ several visible GPUs
def test_visible_ids_follow_the_mask():
    assert visible_gpu_ids(3, env()) == ["0", "1", "2"]
    assert visible_gpu_ids(2, env(CUDA_VISIBLE_DEVICES="2,3")) == ["2", "3"]
    assert visible_gpu_ids(1, env(CUDA_VISIBLE_DEVICES="GPU-aa,GPU-bb")) == ["GPU-aa"]


def test_concurrent_jobs_get_distinct_gpus_then_wait(tmp_path, holders):
    ids = ["0", "1", "2"]
    jobs = [Holder(ids, tmp_path) for _ in range(3)]
    holders.extend(jobs)
    got = [j.line() for j in jobs]
    assert sorted(got) == ["0 0", "1 1", "2 2"]
    for pid in ids:  # each lock file names its holder for the messages of waiting jobs
        assert (tmp_path / f"gpu-{pid}.lock").read_text().startswith("pid ")
    busy = Holder(ids, tmp_path, timeout=0.3)
    holders.append(busy)
    report = busy.line()
    assert report.startswith("busy all 3 visible GPUs stayed claimed") and "--resources gpu=3" in report
    assert busy.proc.wait(timeout=20) == 3
    # A job that waits gets the GPU the moment its holder exits.
    waiter = Holder(ids, tmp_path)
    holders.append(waiter)
    assert waiter.line(timeout=0.5) is None
    jobs[got.index("1 1")].release()
    assert waiter.line() == "1 1"


def test_a_killed_job_frees_its_gpu(tmp_path, holders):
    first = Holder(["0"], tmp_path)
    holders.append(first)
    assert first.line() == "0 0"
    first.kill()  # SIGKILL: no cleanup code runs; the kernel drops the flock
    second = Holder(["0"], tmp_path, timeout=5)
    holders.append(second)
    assert second.line() == "0 0"


def test_select_device_skips_gpus_other_jobs_hold(tmp_path, holders):
    # Another job (another process) holds physical GPU 2; this job sees GPUs 2,3 as cuda:0, cuda:1.
    other = Holder(["2"], tmp_path)
    holders.append(other)
    assert other.line() == "0 2"
    e = env(CUDA_VISIBLE_DEVICES="2,3")
    dev = select_device("auto", device_count=2, environ=e, lock_dir=tmp_path)
    assert dev == torch.device("cuda:1")
    # Asking again in the same process keeps the same GPU instead of claiming a second one.
    assert select_device("cuda", device_count=2, environ=e, lock_dir=tmp_path) == dev
    # Releasing makes it available to others.
    release_claims()
    late = Holder(["3"], tmp_path, timeout=5)
    holders.append(late)
    assert late.line() == "0 3"


def test_explicit_index_is_locked_so_auto_jobs_avoid_it(tmp_path, holders):
    dev = select_device("cuda:0", device_count=2, environ=env(), lock_dir=tmp_path)
    assert dev == torch.device("cuda:0")
    other = Holder(["0", "1"], tmp_path, timeout=5)
    holders.append(other)
    assert other.line() == "1 1"


def test_explicit_index_held_elsewhere_is_shared_with_a_warning(tmp_path, holders, caplog):
    other = Holder(["0", "1"], tmp_path)
    holders.append(other)
    assert other.line() == "0 0"
    with caplog.at_level(logging.WARNING, logger="maskcl.devices"):
        assert select_device("cuda:0", device_count=2, environ=env(), lock_dir=tmp_path) == torch.device("cuda:0")
    assert "GPU 0 is also claimed by pid" in caplog.text


def test_claim_in_process_times_out(tmp_path, holders):
    other = Holder(["0"], tmp_path)
    holders.append(other)
    assert other.line() == "0 0"
    with pytest.raises(GpuBusyError, match="all 1 visible GPUs stayed claimed"):
        claim_gpu(["0"], lock_dir=tmp_path, wait_timeout=0.1, poll_interval=0.02)


# ------------------------------------------------------------------------------ lock folder
def test_lock_dir_defaults_and_scheduler_namespaces(tmp_path):
    assert default_lock_dir(env(MASKCL_GPU_LOCK_DIR=str(tmp_path))) == tmp_path
    assert default_lock_dir(env(MASKCL_GPU_LOCK_DIR=str(tmp_path), SLURM_JOB_ID="4242")) == tmp_path / "slurm-4242"
    assert default_lock_dir(env()).name == f"maskcl-gpu-locks-{os.getuid()}"


def test_unwritable_lock_dir_is_one_clear_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=r"cannot create the GPU lock folder .*MASKCL_GPU_LOCK_DIR"):
        select_device("auto", device_count=2, environ=env(), lock_dir=blocker / "locks")


# ------------------------------------------------------------------------------ wiring of the stages
def test_stages_select_their_device_through_the_helper(monkeypatch, tmp_path):
    import maskcl.devices
    from maskcl.evaluation.stage import evaluate_checkpoint
    from maskcl.masks.schp import resolve_device as schp_device
    from maskcl.training.engine import resolve_device as train_device

    seen = []

    class Stop(Exception):
        pass

    def fake(spec, *, key, **kw):
        seen.append((str(spec), key))
        raise Stop

    monkeypatch.setattr(maskcl.devices, "select_device", fake)
    monkeypatch.setattr("maskcl.masks.schp.select_device", fake)
    manifest = tmp_path / "m.csv"   # the stage checks its manifest before it claims a device
    manifest.write_text("path,relpath,split,pid,camid,clothes_id\nimages/a.png,a.png,query,0,0,0\n")
    (tmp_path / "images").mkdir()   # a whole manifest, so the device choice is what the stage reaches
    for call in (lambda: train_device("auto"), lambda: schp_device("cuda"),
                 lambda: evaluate_checkpoint("synthcc", manifest, tmp_path / "model.pt",
                                             tmp_path / "metrics.json", tmp_path / "ranks.npz",
                                             settings={}, device="cuda:1")):
        with pytest.raises(Stop):
            call()
    assert seen == [("auto", "train.device"), ("cuda", "masks.schp.device"), ("cuda:1", "evaluate.device")]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_real_gpu_becomes_the_current_device(tmp_path):
    dev = select_device("auto", lock_dir=tmp_path)
    assert dev.type == "cuda" and dev.index < torch.cuda.device_count()
    assert torch.cuda.current_device() == dev.index
