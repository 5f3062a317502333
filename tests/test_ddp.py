"""DDP training through torchrun (2 gloo ranks on the CPU) against one process with ``bn_groups = 2``.

The contract (``maskcl.training.comm``, ranks started by ``maskcl.training.launch``): W ranks with global batch B behave like DataParallel over W
GPUs, i.e. like one process normalising BatchNorm in W groups. First-epoch losses and every epoch's
pseudo-label counts must agree to float precision. Weights cannot agree element by element: Adam's
first steps are ~lr·sign(g), so weights whose gradient is below the float noise of the two summation
orders flip by up to 2·lr (the same happens between two one-process runs that differ only in how the
batch is split). So we compare the training *updates*: the DDP update must match the reference's to a
few percent, while a wrong layout (measured: one process without BN groups) is off by >100%.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import TRAIN_RUNNER, build_tiny_synthcc

from maskcl.errors import ConfigError, MaskCLError
from maskcl.training.settings import TrainSettings, check_settings
from maskcl.training.stage import train_stage

pytestmark = pytest.mark.slow

BASE = dict(arch="resnet18", pretrained="none", height=64, width=32, pad=2, epochs=2, iters=2, batch_size=16,
            num_instances=4, allknn=4, k1=10, k2=3, min_samples=2, eps=0.7, workers=0, device="cpu")
COUNTS = ["clusters", "outliers", "ejected", "classes", "singletons"]
LOSSES = re.compile(r"^(loss|proto_\w+|nbr_\w+|crossview|contrast|lp)$")



@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    work = build_tiny_synthcc(tmp_path_factory.mktemp("ddp"))
    (work / "runner.py").write_text(TRAIN_RUNNER)
    return work


def _args(work: Path, name: str, settings: dict, manifest: str = "manifest.csv") -> dict:
    (work / name).mkdir(exist_ok=True)
    return {"manifest": str(work / manifest), "masks": str(work / "masks.csv"), "settings": settings,
            "model": str(work / name / "model.pt"), "train_log": str(work / name / "train_log.csv"),
            "state": str(work / name / "state"), "log": str(work / name / "log.txt")}


def _train(work: Path, name: str, settings: dict, threads: int, manifest: str = "manifest.csv") -> None:
    """One run in this process (world_size > 1: this process is the launcher, torchrun runs the ranks)."""
    a = _args(work, name, settings, manifest)
    train_stage(a["manifest"], a["masks"], "silhouette", a["settings"], 0, a["model"], a["train_log"], a["state"],
                threads=threads, progress=False)


def _initial_weights(work: Path, settings: dict) -> dict:
    """The RGB backbone before training (the engine seeds, then builds the method)."""
    from maskcl.training.data import train_data_from_manifest
    from maskcl.training.methods import METHODS
    from maskcl.training.runtime import seed_everything

    data = train_data_from_manifest(pd.read_csv(work / "manifest.csv"), pd.read_csv(work / "masks.csv"))
    seed_everything(0)
    m = METHODS.build(settings["method"], TrainSettings.from_dict(settings), data, torch.device("cpu"))
    return {k: v.detach().clone() for k, v in m.rgb_backbone().state_dict().items()}


def _assert_equivalent(work: Path, ref: str, ddp: str, settings: dict, later: tuple = (2e-3, 5e-4)) -> None:
    a, b = pd.read_csv(work / ref / "train_log.csv"), pd.read_csv(work / ddp / "train_log.csv")
    assert len(a) == len(b) == settings["epochs"]
    counts = COUNTS + (["neighbours_k"] if settings["method"] == "maskcl" else [])
    pd.testing.assert_frame_equal(a[counts], b[counts])
    losses = [c for c in a.columns if LOSSES.match(c)]
    assert set(losses) == {c for c in b.columns if LOSSES.match(c)} and "loss" in losses
    # epoch 1: same data, same initial weights and memories -> equal up to float noise
    np.testing.assert_allclose(b.loc[0, losses].astype(float), a.loc[0, losses].astype(float), rtol=1e-4, atol=1e-5)
    # later epochs carry Adam's amplified noise (see the module docstring): measured <= 8e-4 relative; a
    # wrong layout is off by ~5%, gates drawn per rank instead of for the global batch by ~7e-3
    last = [c for c in losses if not pd.isna(a.loc[1, c])]
    np.testing.assert_allclose(b.loc[1, last].astype(float), a.loc[1, last].astype(float), rtol=later[0],
                               atol=later[1])

    init = _initial_weights(work, settings)
    wa = torch.load(work / ref / "model.pt", weights_only=True)["state_dict"]
    wb = torch.load(work / ddp / "model.pt", weights_only=True)["state_dict"]
    assert wa.keys() == wb.keys()
    keys = [k for k in wa if wa[k].is_floating_point() and "running" not in k]
    ua = torch.cat([(wa[k] - init[k]).flatten() for k in keys])
    ub = torch.cat([(wb[k] - init[k]).flatten() for k in keys])
    assert float(ua.norm()) > 0.5  # training moved the weights
    rel = float((ua - ub).norm() / ua.norm())
    off = float(((ua - ub).abs() > settings.get("lr", 3.5e-4) / 2).float().mean())
    assert rel < 0.2 and off < 0.03, (rel, off)  # measured ~0.06 / ~0.01; wrong layout ~1.2 / ~0.8


def _procs_with(tag: str) -> list:
    """Live processes whose environment carries ``tag`` (the launcher, torchrun and the ranks)."""
    out = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if tag.encode() in env.read_bytes():
                stat = (env.parent / "stat").read_text()
                if stat.rsplit(")", 1)[1].split()[0] != "Z":
                    out.append(int(env.parent.name))
        except OSError:
            continue
    return out


def test_clustercontrast_ddp_matches_one_process_with_bn_groups(tiny):
    s = dict(BASE, method="clustercontrast")
    _train(tiny, "cc_ref", dict(s, bn_groups=2), threads=1)
    _train(tiny, "cc_ddp", dict(s, world_size=2), threads=2)
    _assert_equivalent(tiny, "cc_ref", "cc_ddp", s)


def test_cacl_ddp_matches_one_process_with_bn_groups(tiny):
    # CACL's two branches, its two memories (initialised by sharded extraction, updated with the gathered global
    # batch) and its clustering on rank 0 give the one-process run with bn_groups = 2
    s = dict(BASE, method="cacl")
    _train(tiny, "cacl_ref", dict(s, bn_groups=2), threads=1)
    _train(tiny, "cacl_ddp", dict(s, world_size=2), threads=2)
    # its second epoch carries more of Adam's amplified noise than MaskCL's: measured 3e-3 relative on the gray
    # focal term and 7e-4 absolute on the cross-view term (about -0.01), with the weights' updates as close as the
    # other methods' (rel 0.07, 1.5 % off); a wrong layout (no BN groups) fails the first epoch's 1e-4 already
    _assert_equivalent(tiny, "cacl_ref", "cacl_ddp", s, later=(6e-3, 1.5e-3))


def test_spcl_ddp_matches_one_process_with_bn_groups(tiny):
    # the hybrid memory takes the gathered global batch in order and rank 0's labels; the loss is each rank's
    # batch mean, so DDP's averaged gradient is the global batch's
    s = dict(BASE, method="spcl")
    _train(tiny, "sp_ref", dict(s, bn_groups=2), threads=1)
    _train(tiny, "sp_ddp", dict(s, world_size=2), threads=2)
    # its second epoch's loss differs by 2.2e-3 relative on one 2-core VM and under 8e-4 on another (float kernels
    # differ between machines; Adam amplifies the noise); a wrong layout is off by ~5 %, still caught at 5e-3
    _assert_equivalent(tiny, "sp_ref", "sp_ddp", s, later=(5e-3, 1e-3))
    log = pd.read_csv(tiny / "sp_ddp" / "train_log.csv")
    ref = pd.read_csv(tiny / "sp_ref" / "train_log.csv")
    # the threshold of rank 0's labels, adopted by every rank, fixed at the first epoch
    pd.testing.assert_series_equal(log["indep_iou_threshold"], ref["indep_iou_threshold"])
    assert log["indep_fixed_at_epoch"].tolist() == [1, 1]


def test_ise_ddp_matches_one_process_with_bn_groups(tiny):
    # ISE's LP loss compares each rank's samples with the supports of the whole batch (gathered with their
    # gradient); weight 1 so that a wrong gather (per-rank supports, or no gradient from the other rank) shows
    s = dict({k: v for k, v in BASE.items() if k != "allknn"}, method="ise", ise_lp_weight=1.0)
    _train(tiny, "ise_ref", dict(s, bn_groups=2), threads=1)
    _train(tiny, "ise_ddp", dict(s, world_size=2), threads=2)
    _assert_equivalent(tiny, "ise_ref", "ise_ddp", s)
    assert (pd.read_csv(tiny / "ise_ddp" / "train_log.csv")["lp"] > 0).all()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and process groups")
def test_maskcl_ddp_killed_resumes_and_matches_one_process_with_bn_groups(tiny):
    s = dict(BASE, method="maskcl")
    _train(tiny, "m_ref", dict(s, bn_groups=2), threads=1)

    tag = f"MASKCL_DDP_TEST_{uuid.uuid4().hex}"
    env = {**os.environ, tag: "1"}
    args = json.dumps(_args(tiny, "m_ddp", dict(s, world_size=2)))
    victim = subprocess.Popen([sys.executable, str(tiny / "runner.py"), args], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log_csv = tiny / "m_ddp" / "state" / "train_log.csv"
    deadline = time.time() + 300
    while not (log_csv.exists() and len(pd.read_csv(log_csv)) >= 1):
        if victim.poll() is not None:
            pytest.fail("DDP training ended before it could be killed: " + victim.stderr.read().decode()[-2000:])
        assert time.time() < deadline, "no checkpoint after 300 s"
        time.sleep(0.05)
    os.killpg(victim.pid, signal.SIGKILL)  # the job's process group: launcher and torchrun
    victim.wait()
    # torchrun puts every rank in its own session; they must still die with it
    deadline = time.time() + 10
    while _procs_with(tag) and time.time() < deadline:
        time.sleep(0.2)
    assert not _procs_with(tag), "DDP ranks survived the killed job"
    assert not (tiny / "m_ddp" / "model.pt").exists()
    assert len(pd.read_csv(log_csv)) == 1

    again = subprocess.run([sys.executable, str(tiny / "runner.py"), args], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, timeout=300)
    assert again.returncode == 0, again.stderr.decode()[-3000:]
    text = (tiny / "m_ddp" / "log.txt").read_text()
    # rank 0's records are relayed into the job's log, once (rank 1 logs only warnings)
    assert text.count("resuming from epoch 2 of 2") == 1, text[-3000:]
    assert "from scratch" not in text and "DDP: 2 processes on the CPU" in text
    _assert_equivalent(tiny, "m_ref", "m_ddp", s)


def test_failing_rank_surfaces_as_one_error_line(tiny):
    manifest = pd.read_csv(tiny / "manifest.csv")
    last = manifest.index[manifest["split"] == "train"][-1]  # in rank 1's shard of the feature extraction
    bad = Path(manifest.loc[last, "path"])                   # damaged in place (a manifest names its own images)
    good = bad.read_bytes()
    bad.write_bytes(b"not an image")
    try:
        with pytest.raises(MaskCLError) as err:
            _train(tiny, "bad", dict(BASE, method="clustercontrast", world_size=2), threads=2)
    finally:
        bad.write_bytes(good)
    msg = str(err.value)
    assert "\n" not in msg and str(bad) in msg and "cannot read image" in msg
    assert not (tiny / "bad" / "model.pt").exists()


def test_gates_are_drawn_for_the_global_batch_and_sliced():
    """Each rank keeps its rows of the gates one process draws for the whole batch (same step seed),
    and every rank gets the same global per-rank factors of the official reduction."""
    from types import SimpleNamespace

    from maskcl.training.comm import DistComm, LocalComm
    from maskcl.training.methods import MaskCLMethod

    w = torch.rand(8, 3, generator=torch.Generator().manual_seed(1))

    def gates(comm):
        owner = SimpleNamespace(step_seed=123, _gate_draws=[1], comm=comm)
        return MaskCLMethod._gates(owner, comm.local_part(w) if isinstance(comm, DistComm) else w)

    whole, whole_rank_w = gates(LocalComm())
    parts = []
    for rank in range(2):
        comm = DistComm.__new__(DistComm)  # a rank's slicing, without a process group
        comm.rank, comm.world_size = rank, 2
        comm.gather = lambda t: [w]  # what all_gather returns: every rank's rows in rank order
        part, rank_w = gates(comm)
        parts.append(part)
        assert torch.equal(rank_w, whole_rank_w)  # mean over the global batch, not this rank's rows
    assert torch.equal(torch.cat(parts), whole)
    assert 0 < int(whole.sum()) < whole.numel()  # real draws, not all-zero or all-one
    assert comm.local_batch(list(range(8))) == [4, 5, 6, 7]


@pytest.mark.parametrize("change, key", [
    (dict(batch_size=18, world_size=4), "train.batch_size"),
    (dict(bn_groups=3, world_size=2), "train.bn_groups"),
    (dict(device="cuda:1", world_size=2), "train.device"),
    (dict(device="cpu", dist_backend="nccl", world_size=2), "train.dist_backend"),
])
def test_settings_a_layout_cannot_honour_are_one_line_errors(change, key):
    with pytest.raises(ConfigError, match=re.escape(key)) as err:
        check_settings(TrainSettings.from_dict(dict(BASE, method="maskcl", **change)))
    assert "\n" not in str(err.value)
    check_settings(TrainSettings.from_dict(dict(BASE, method="maskcl", bn_groups=4, world_size=2)))  # fine
