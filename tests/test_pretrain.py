"""The self-supervised warm-up (train.pretrained: ssl): its loss, its weights file, and the rule chain."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from maskcl.errors import ConfigError
from maskcl.models.backbone import build_backbone
from maskcl.training.pretrain import PretrainSettings, nt_xent_loss, pretrain_ssl
from maskcl.training.stage import pretrain_stage

ROOT = Path(__file__).resolve().parents[1]


def test_nt_xent_matches_the_formula_by_hand():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    t = 0.5
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1).tolist()
    n = 3
    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        sims = [sum(a * b for a, b in zip(z[i], z[j])) / t for j in range(2 * n)]
        denom = sum(math.exp(sims[j]) for j in range(2 * n) if j != i)
        total += -(sims[pos] - math.log(denom))
    assert float(nt_xent_loss(z1, z2, t)) == pytest.approx(total / (2 * n), rel=1e-5)
    # aligned views of well-separated images give a lower loss than unrelated views
    e = torch.eye(3, 4)
    assert float(nt_xent_loss(e, e, t)) < float(nt_xent_loss(e, e.roll(1, 0), t))


def _images(folder: Path, n: int) -> list:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 255, (64, 32, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


SMALL = dict(arch="resnet18", height=32, width=16, epochs=2, batch_size=8, workers=0, device="cpu")


def test_warm_up_writes_weights_the_backbone_loads_and_is_deterministic(tmp_path):
    paths = _images(tmp_path, 16)
    s = PretrainSettings.from_dict(SMALL)
    rows = pretrain_ssl(paths, s, seed=3, out_path=str(tmp_path / "a.pt"), threads=1, progress=False)
    assert [r["epoch"] for r in rows] == [1, 2] and all(math.isfinite(r["loss"]) for r in rows)
    pretrain_ssl(paths, s, seed=3, out_path=str(tmp_path / "b.pt"), threads=1, progress=False)
    a = torch.load(tmp_path / "a.pt", weights_only=True)
    b = torch.load(tmp_path / "b.pt", weights_only=True)
    assert a["format"] == "maskcl-ssl/1" and a["train_images"] == 16
    for k in a["backbone"]:
        assert torch.equal(a["backbone"][k], b["backbone"][k]), k  # same seed, same weights
    model = build_backbone("resnet18", pretrained=str(tmp_path / "a.pt"))
    loaded = model.trunk_state_dict()
    random = build_backbone("resnet18", pretrained="none").trunk_state_dict()
    conv = "conv1.weight"
    assert torch.equal(loaded[conv], a["backbone"][conv])
    assert not torch.equal(loaded[conv], random[conv])
    assert str(tmp_path / "a.pt") in model.init_source


def test_batch_larger_than_the_data_is_a_config_error(tmp_path):
    paths = _images(tmp_path, 4)
    with pytest.raises(ConfigError, match="pretrain.batch_size 8 exceeds the 4 training images"):
        pretrain_ssl(paths, PretrainSettings.from_dict(SMALL), seed=0, out_path=str(tmp_path / "w.pt"), progress=False)
    assert not (tmp_path / "w.pt").exists()


def test_stage_refuses_unknown_settings_with_the_key_named(tmp_path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,split\nx.png,train\n")
    with pytest.raises(ConfigError, match=r"config pretrain: unknown key\(s\) \['seed'\]"):
        pretrain_stage(str(manifest), {**SMALL, "seed": 0}, 0, str(tmp_path / "w.pt"), progress=False)


@pytest.mark.slow
def test_ssl_rule_chain_feeds_the_trainer(tmp_path):
    """pretrain → train with train.pretrained: ssl, through Snakemake (the parameters the rules pass)."""
    cfg = yaml.safe_load((ROOT / "tests/data/config_tiny.yaml").read_text())
    cfg["pretrain"] = {"epochs": 1, "batch_size": 16}
    cfg["experiments"] = {"cc_ssl": {"method": "clustercontrast", "train": {"pretrained": "ssl"}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    target = "results/synthcc/runs/cc_ssl/none/seed0/model.pt"
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(tmp_path / "config.yaml"), "--cores", "2", "--workflow-profile",
           str(ROOT / "profiles" / "default"), target]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    weights = tmp_path / "results/synthcc/pretrain/resnet18-64x32/backbone.pt"
    assert weights.is_file()
    assert "ssl epoch 1/1" in (tmp_path / "logs/pretrain/synthcc/resnet18-64x32.log").read_text()
    train_log = (tmp_path / "logs/train/synthcc/cc_ssl/none/seed0.log").read_text()
    assert "init: weights file results/synthcc/pretrain/resnet18-64x32/backbone.pt" in train_log
