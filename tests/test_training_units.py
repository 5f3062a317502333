"""Unit tests of the training building blocks: memories, losses, sampler, curriculum, BN groups."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from maskcl.errors import ConfigError
from maskcl.models.bn_groups import convert_bn_groups
from maskcl.models.memory import ClusterMemory, InstanceMemory
from maskcl.training import losses
from maskcl.training.neighbours import centroid_neighbours, curriculum_k
from maskcl.training.sampler import CameraAwarePKSampler, pk_indices
from maskcl.training.settings import TrainSettings


# ---------------------------------------------------------------- memories
def test_instance_memory_momentum_update_and_renormalisation():
    mem = InstanceMemory(3, 2, temp=0.05, momentum=0.2)
    mem.init_features(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    mem.update(torch.tensor([0]), torch.tensor([[0.0, 1.0]]))
    expected = F.normalize(torch.tensor([0.2, 0.8]), dim=0)
    assert torch.allclose(mem.features[0], expected, atol=1e-6)
    # untouched rows stay as initialised (normalised)
    assert torch.allclose(mem.features[2], F.normalize(torch.tensor([1.0, 1.0]), dim=0))


def test_instance_memory_repeated_index_updates_sequentially():
    mem = InstanceMemory(2, 2, momentum=0.5)
    mem.init_features(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    f = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    mem.update(torch.tensor([0, 0]), f)
    step1 = F.normalize(0.5 * torch.tensor([1.0, 0.0]) + 0.5 * f[0], dim=0)
    step2 = F.normalize(0.5 * step1 + 0.5 * f[1], dim=0)
    assert torch.allclose(mem.features[0], step2, atol=1e-6)


def test_instance_memory_class_logits_are_class_means_over_temperature():
    mem = InstanceMemory(4, 2, temp=0.5)
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.6, 0.8]])
    mem.init_features(feats)
    mem.set_labels(torch.tensor([0, 0, 1, 1]))
    q = torch.tensor([[1.0, 0.0]])
    logits = mem.class_logits(q)
    # class 0 = mean(<q,[1,0]>, <q,[0,1]>) = 0.5 ; class 1 = mean(1, 0.6) = 0.8 ; / τ
    assert torch.allclose(logits, torch.tensor([[0.5 / 0.5, 0.8 / 0.5]]))


def test_instance_memory_refuses_gapped_or_negative_labels():
    mem = InstanceMemory(3, 2)
    with pytest.raises(ValueError):
        mem.set_labels(torch.tensor([0, 2, 2]))
    with pytest.raises(ValueError):
        mem.set_labels(torch.tensor([0, -1, 1]))


def test_cluster_memory_update_in_batch_order():
    mem = ClusterMemory(2, temp=0.05, momentum=0.2)
    mem.init_centroids(torch.tensor([[2.0, 0.0], [0.0, 3.0]]))
    assert torch.allclose(mem.features.norm(dim=1), torch.ones(2))
    f = F.normalize(torch.tensor([[1.0, 1.0], [1.0, -1.0]]), dim=1)
    mem.update(torch.tensor([1, 1]), f)
    c = torch.tensor([0.0, 1.0])
    for row in f:
        c = F.normalize(0.2 * c + 0.8 * row, dim=0)
    assert torch.allclose(mem.features[1], c, atol=1e-6)
    assert torch.allclose(mem.features[0], torch.tensor([1.0, 0.0]))


# ---------------------------------------------------------------- losses
def test_prototype_focal_loss_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    targets = torch.tensor([0, 1])
    p0 = math.exp(2) / (math.exp(2) + 1)
    expected = (-(1 - p0) ** 4 * math.log(p0) - (0.5) ** 4 * math.log(0.5)) / 2
    assert losses.prototype_focal_loss(logits, targets, gamma=4).item() == pytest.approx(expected, rel=1e-6)
    # gamma 0 is plain cross-entropy
    assert losses.prototype_focal_loss(logits, targets, gamma=0).item() == pytest.approx(
        F.cross_entropy(logits, targets).item(), rel=1e-6)


def test_neighbour_loss_is_reduced_per_sample():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]))
    nbrs = torch.tensor([[1, 2], [0, 2]])
    w = torch.tensor([[0.9, 0.5], [0.4, 1.0]])
    gates = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # sample 0: only its first neighbour counts: 0.9·(−log .25); sample 1: 0.4·(−log .1)+1.0·(−log .8)
    s0 = 0.9 * -math.log(0.25) / 2
    s1 = (0.4 * -math.log(0.1) + 1.0 * -math.log(0.8)) / 2
    got = losses.neighbour_loss(logits, nbrs, w, gates, reduction="per_sample").item()
    assert got == pytest.approx((s0 + s1) / 2, rel=1e-6)
    # the official batch-mean reduction gives a different number here (tests/test_official_step.py)
    official = losses.neighbour_loss(logits, nbrs, w, gates, reduction="official").item()
    assert abs(got - official) > 1e-3
    for reduction in losses.NEIGHBOUR_REDUCTIONS:
        assert losses.neighbour_loss(logits, nbrs[:, :0], w[:, :0], reduction=reduction).item() == 0.0


def test_cross_view_loss_only_trains_the_rgb_side():
    g = torch.tensor([[1.0, 0.0]], requires_grad=True)
    fm = torch.tensor([[0.0, 1.0]], requires_grad=True)
    cent = torch.tensor([[1.0, 1.0]], requires_grad=True)
    loss = losses.cross_view_loss(g, fm, cent)
    assert loss.item() == pytest.approx(-(0.0 + 1 / math.sqrt(2)), rel=1e-6)
    loss.backward()
    assert g.grad is not None and fm.grad is None and cent.grad is None


# ---------------------------------------------------------------- sampler and curriculum
def test_pk_sampler_prefers_other_cameras():
    # label 0: anchor candidates over cameras 0,0,1,2 ; label 1 a singleton ; -1 outlier
    labels = np.array([0, 0, 0, 0, 1, -1])
    cams = np.array([0, 0, 1, 2, 0, 0])
    rng = np.random.default_rng(0)
    for _ in range(50):
        out = pk_indices(labels, cams, num_instances=4, rng=rng)
        assert 5 not in out                       # outliers are never sampled
        assert out.count(4) == 1                  # a singleton contributes only its anchor
        pos = [i for i, j in enumerate(out) if j != 4]
        group = [out[i] for i in pos]
        anchor, rest = group[0], group[1:]
        assert len(rest) == 3
        other = [j for j in range(4) if cams[j] != cams[anchor]]
        assert all(j in other for j in rest)      # the K−1 companions come from other cameras


def test_pk_sampler_falls_back_to_same_camera_members():
    labels = np.array([0, 0, 0])
    cams = np.array([5, 5, 5])
    out = pk_indices(labels, cams, 4, np.random.default_rng(1))
    assert len(out) == 4 and set(out) <= {0, 1, 2}
    assert out[0] not in out[1:]                 # companions exclude the anchor


def test_pk_sampler_is_a_function_of_seed_and_epoch():
    labels = np.repeat(np.arange(10), 4)
    cams = np.tile(np.arange(4), 10)
    s = CameraAwarePKSampler(labels, cams, batch_size=8, num_instances=4, iters=7, seed=3)
    a, b = list(s.batches(2)), list(s.batches(2))
    assert a == b and len(a) == 7 and all(len(x) == 8 for x in a)
    assert list(s.batches(3)) != a


def test_curriculum_schedule():
    assert [curriculum_k(10, e, 60) for e in (0, 5, 6, 30, 59)] == [0, 0, 1, 5, 9]
    assert curriculum_k(0, 50, 60) == 0


def test_centroid_neighbours_match_brute_force_and_exclude_self():
    torch.manual_seed(0)
    c = torch.randn(50, 8)
    idx, sim = centroid_neighbours(c, 3, weights="cosine", chunk=7)
    z = F.normalize(c, dim=1)
    full = z @ z.t()
    full.fill_diagonal_(-2)
    ref_sim, ref_idx = full.topk(3, dim=1)
    assert torch.equal(idx, ref_idx)
    assert torch.allclose(sim, ref_sim, atol=1e-6)
    assert not (idx == torch.arange(50).unsqueeze(1)).any()


# ---------------------------------------------------------------- BN groups and settings
def test_bn_groups_normalise_each_chunk_and_keep_state_dict_keys():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(36, 5), nn.BatchNorm1d(5))
    keys = list(m.state_dict())
    convert_bn_groups(m, 2)
    assert list(m.state_dict()) == keys
    x = torch.randn(8, 3, 5, 5)
    m.train()
    y = m(x)
    h = m[0](x)
    first, second = h[:4], h[4:]
    ref = torch.cat([F.batch_norm(first, None, None, m[1].weight, m[1].bias, True),
                     F.batch_norm(second, None, None, m[1].weight, m[1].bias, True)])
    assert torch.allclose(m[1](h), ref, atol=1e-6)
    # running statistics come from the first chunk only (DataParallel's replica 0)
    grouped = nn.Sequential(nn.BatchNorm2d(4))
    convert_bn_groups(grouped, 2)
    plain = nn.BatchNorm2d(4)
    grouped.train(), plain.train()
    grouped(h.detach())
    plain(first.detach())
    assert torch.allclose(grouped[0].running_mean, plain.running_mean, atol=1e-6)
    assert torch.allclose(grouped[0].running_var, plain.running_var, atol=1e-6)
    assert y.shape == (8, 5)


def test_train_settings_refuse_unknown_keys():
    with pytest.raises(ConfigError, match="unknown key"):
        TrainSettings.from_dict({"epochs": 3, "epohcs": 4})
    s = TrainSettings.from_dict({"epochs": 3})
    assert s.epochs == 3 and s.digest(seed=1) != s.digest(seed=2)


def test_pk_sampler_fills_batches_when_a_pass_is_shorter_than_a_batch():
    # one cluster of 4 plus outliers: a pass yields 4 indices, a batch needs 16
    labels = np.array([0, 0, 0, 0] + [-1] * 20)
    cams = np.arange(24) % 3
    s = CameraAwarePKSampler(labels, cams, batch_size=16, num_instances=4, iters=3, seed=0)
    out = list(s.batches(0))
    assert len(out) == 3 and all(len(b) == 16 and set(b) <= {0, 1, 2, 3} for b in out)


def test_train_stage_checks_once_and_the_ddp_parent_reads_no_data(monkeypatch, tmp_path):
    """Settings are parsed/checked once per job; W > 1 goes to the launcher without reading the data,
    W = 1 never goes through it."""
    from maskcl.training import settings as settings_mod
    from maskcl.training import stage

    checks, launched, ran = [], [], []
    monkeypatch.setattr(stage, "check_settings", lambda s: checks.append(s.world_size))
    monkeypatch.setattr(stage, "launch", lambda job, s, **kw: launched.append((job, s.world_size)))
    monkeypatch.setattr(stage, "train_data_from_manifest", lambda *a, **k: pytest.fail("parent read the data"))
    monkeypatch.setattr(stage, "run_train_job", lambda *a, **k: ran.append(a[3].world_size))
    base = dict(method="clustercontrast", device="cpu", batch_size=16)
    missing = str(tmp_path / "no-manifest.csv")  # never opened by the parent
    stage.train_stage(missing, None, "silhouette", dict(base, world_size=2), 0, out_model="m.pt", out_log="l.csv",
                      state_dir=str(tmp_path / "state"))
    assert checks == [2] and ran == []
    (job, w), = launched
    assert w == 2 and job["settings"] == dict(base, world_size=2) and job["manifest_path"] == missing
    stage.train_stage(missing, None, "silhouette", dict(base, world_size=1), 0, out_model="m.pt", out_log="l.csv",
                      state_dir=str(tmp_path / "state"))
    assert checks == [2, 1] and ran == [1] and len(launched) == 1
    with pytest.raises(ConfigError, match="train.batch_size"):  # the real check, in the parent
        monkeypatch.setattr(stage, "check_settings", settings_mod.check_settings)
        stage.train_stage(missing, None, "silhouette", dict(base, world_size=3), 0, out_model="m.pt",
                          out_log="l.csv", state_dir=str(tmp_path / "state"))
    assert len(launched) == 1
