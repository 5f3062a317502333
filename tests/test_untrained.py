"""The untrained reference: the initial network exported without a step, evaluated like any run.

Its row is the denominator of every gain SynthCC reports (the supervised bound's headroom is measured
against it), so it must be exactly the weights a method starts from, not a re-draw or a stub.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import build_tiny_synthcc

from maskcl.errors import ReportingError
from maskcl.evaluation import evaluate_checkpoint
from maskcl.models.backbone import build_backbone
from maskcl.reporting.curves import read_train_log
from maskcl.training.runtime import seed_everything
from maskcl.training.stage import train_stage

SETTINGS = dict(method="untrained", arch="resnet18", pretrained="none", height=64, width=32, epochs=3, iters=2,
                batch_size=16, num_instances=4, workers=0, device="cpu", pooling="gem")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_synthcc(tmp_path_factory.mktemp("untrained"))


def _run(work: Path, name: str, seed: int) -> Path:
    out = work / name
    train_stage(str(work / "manifest.csv"), None, "silhouette", SETTINGS, seed, str(out / "model.pt"),
                str(out / "train_log.csv"), str(out / "state"), threads=1, progress=False)
    return out


def test_untrained_exports_exactly_the_initial_weights_and_no_epoch(tiny):
    out = _run(tiny, "seed3", 3)
    model = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert model["method"] == "untrained" and model["epochs"] == 0 and model["pooling"] == "gem"
    seed_everything(3)  # what the engine does before it builds a method
    fresh = build_backbone("resnet18", pretrained="none", last_stride=1, pooling="gem").state_dict()
    assert model["state_dict"].keys() == fresh.keys()
    assert all(torch.equal(model["state_dict"][k], fresh[k]) for k in fresh)
    other = torch.load(_run(tiny, "seed4", 4) / "model.pt", map_location="cpu", weights_only=True)
    conv1 = next(k for k in fresh if k.endswith("conv1.weight"))
    assert not torch.equal(other["state_dict"][conv1], model["state_dict"][conv1])  # each seed its own draw
    # the log is a header without rows: whole for the reference, an error for a method that trains
    assert (out / "train_log.csv").read_text() == "epoch\n"
    assert read_train_log(out / "train_log.csv", allow_empty=True).empty
    with pytest.raises(ReportingError, match="no epoch rows"):
        read_train_log(out / "train_log.csv")
    assert not (out / "state" / "checkpoint.pt").exists()


def test_untrained_model_is_evaluated_like_any_run(tiny):
    out = _run(tiny, "eval", 0)
    res = evaluate_checkpoint("synthcc", tiny / "manifest.csv", out / "model.pt", out / "metrics.json",
                              out / "ranks.npz", settings={"batch_size": 64, "workers": 0}, device="cpu", threads=1)
    assert set(res) >= {"cc", "general"}
    assert all(0.0 <= r["mAP"] <= 1.0 for r in res.values())
