"""The official MaskCL training step, behaviour by behaviour (docs/training.md, "Where we differ").

A numeric comparison of one step against the official SiCL code found six places where an earlier port
differed. Each test here derives its expected values by hand from the official semantics on a case small
enough to check on paper, and checks that the default settings compute them; the paper-described
alternatives stay one key away and are checked too.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import build_tiny_synthcc

from maskcl.config import load_schema
from maskcl.models.maskcl_net import MaskCLNet, ProjectionHead
from maskcl.models.backbone import build_backbone
from maskcl.training import losses
from maskcl.training.comm import LocalComm
from maskcl.training.engine import _autocast
from maskcl.training.methods import MaskCLMethod
from maskcl.training.neighbours import centroid_neighbours, curriculum_k
from maskcl.training.sampler import pk_indices
from maskcl.training.settings import TrainSettings

OFFICIAL = TrainSettings.defaults()


def test_defaults_are_the_official_step():
    s = OFFICIAL
    assert (s.neighbour_weights, s.neighbour_reduction, s.softmax_eps, s.sampler_replacement, s.memory_init,
            s.amp) == ("official", "official", 1e-6, "official", "official", "off")
    props = load_schema()["properties"]["train"]["properties"]
    for key in ("neighbour_weights", "neighbour_reduction", "softmax_eps", "sampler_replacement", "memory_init",
                "amp"):
        assert props[key]["default"] == getattr(s, key), key


# ------------------------------------------------------------------ 1. neighbour weights and order
# Three centroids of different norms: A0 = (2, 0), A1 = (1, 1.2), A2 = (0, 3).
# ‖A‖² = 4, 2.44, 9, so S = Σ‖A_k‖² = 15.44; Gram: A0·A1 = 2, A0·A2 = 0, A1·A2 = 3.6.
CENTROIDS = torch.tensor([[2.0, 0.0], [1.0, 1.2], [0.0, 3.0]])
S = 15.44


def test_official_neighbour_weights_are_dot_products_over_the_sum_of_squared_norms():
    idx, w = centroid_neighbours(CENTROIDS, 2)
    # row 0: [4, 2, 0]/S → order 0, 1, 2 → positions 1..2 = classes 1, 2
    # row 1: [2, 2.44, 3.6]/S → order 2, 1, 0: class 2 (larger norm) beats the class itself, so the
    #        dropped position 0 is class 2 and the neighbour list holds class 1 itself, then class 0
    # row 2: [0, 3.6, 9]/S → order 2, 1, 0 → classes 1, 0
    assert idx.tolist() == [[1, 2], [1, 0], [1, 0]]
    expected = torch.tensor([[2 / S, 0.0], [2.44 / S, 2 / S], [3.6 / S, 0.0]])
    assert torch.allclose(w, expected, atol=1e-7)


def test_cosine_neighbour_weights_are_the_papers():
    idx, w = centroid_neighbours(CENTROIDS, 2, weights="cosine")
    n = CENTROIDS.norm(dim=1)
    cos = lambda i, j: float(CENTROIDS[i] @ CENTROIDS[j] / (n[i] * n[j]))  # noqa: E731
    # row 1: cos(1, 2) = 3.6 / (1.562·3) = 0.768 > cos(1, 0) = 2 / (1.562·2) = 0.640; never itself
    assert idx.tolist() == [[1, 2], [2, 0], [1, 0]]
    assert w[1].tolist() == pytest.approx([cos(1, 2), cos(1, 0)], abs=1e-6)
    assert w[0].tolist() == pytest.approx([cos(0, 1), 0.0], abs=1e-6)


def test_official_neighbours_chunked_equal_the_dense_sorted_rows():
    torch.manual_seed(0)
    c = torch.randn(40, 6) * torch.rand(40, 1) * 3  # centroids of different norms
    gram = c @ c.t() / (c.norm(dim=1) ** 2).sum()
    order = torch.sort(gram, dim=1, descending=True, stable=True)
    idx, w = centroid_neighbours(c, 4, chunk=7)
    assert torch.equal(idx, order.indices[:, 1:5])
    assert torch.allclose(w, order.values[:, 1:5], atol=1e-7)


def test_gate_probability_is_the_neighbour_weight():
    """Bernoulli gates fire with the weight itself (clamped to [0, 1]: the official call fails below 0)."""
    n = 20000
    w = torch.tensor([[0.0, 1.0, 2 / S, 0.5, -0.1]]).repeat(n, 1)
    fake = SimpleNamespace(step_seed=123, _gate_draws=[], comm=LocalComm())
    gates, rank_w = MaskCLMethod._gates(fake, w)
    freq = gates.mean(dim=0)
    assert freq[0] == 0 and freq[1] == 1 and freq[4] == 0
    for col, p in ((2, 2 / S), (3, 0.5)):
        assert abs(float(freq[col]) - p) < 4 * math.sqrt(p * (1 - p) / n)
    # the official reduction's factor per rank: the batch mean of weight × gate
    assert torch.allclose(rank_w, (w * gates).mean(dim=0))


# ------------------------------------------------------------------ 2. neighbour-loss reduction
LOGITS = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]))
NBRS = torch.tensor([[1, 2], [0, 2]])
W = torch.tensor([[0.9, 0.5], [0.4, 1.0]])
GATES = torch.tensor([[1.0, 0.0], [1.0, 1.0]])


def test_official_neighbour_reduction_scales_the_batch_mean_nll_and_divides_by_k_plus_1():
    # rank 1: mean NLL (−log .25 − log .1)/2, times mean(w·d) = (0.9 + 0.4)/2
    # rank 2: mean NLL (−log .25 − log .8)/2, times mean(w·d) = (0 + 1.0)/2; the sum over k + 1 = 3
    r1 = (-math.log(0.25) - math.log(0.1)) / 2 * 0.65
    r2 = (-math.log(0.25) - math.log(0.8)) / 2 * 0.5
    got = losses.neighbour_loss(LOGITS, NBRS, W, GATES).item()
    assert got == pytest.approx((r1 + r2) / 3, rel=1e-6)
    # the factor may come from the global batch (DDP): a rank then scales its slice by it
    part = losses.neighbour_loss(LOGITS[:1], NBRS[:1], W[:1], GATES[:1],
                                 rank_weights=losses.neighbour_rank_weights(W, GATES)).item()
    assert part == pytest.approx((-math.log(0.25) * 0.65 - math.log(0.25) * 0.5) / 3, rel=1e-6)


def test_per_sample_reduction_is_one_key_away():
    s0 = 0.9 * -math.log(0.25) / 2
    s1 = (0.4 * -math.log(0.1) + 1.0 * -math.log(0.8)) / 2
    got = losses.neighbour_loss(LOGITS, NBRS, W, GATES, reduction="per_sample").item()
    assert got == pytest.approx((s0 + s1) / 2, rel=1e-6)


# ------------------------------------------------------------------ 3. ε in the memory softmax
def _official_p(logits, eps=1e-6):
    """p = exp(s) / (Σ exp(s) + ε) in float64, as written in the official ``masked_softmax``."""
    e = [math.exp(v) for v in logits]
    return [v / (sum(e) + eps) for v in e]


def test_focal_loss_saturates_below_epsilon():
    row = [0.0, -16.0]  # p_1 = e^-16 / (1 + e^-16) ≈ 1.1e-7, below ε = 1e-6
    p = _official_p(row)
    expected = -((1 - p[1]) ** 4) * math.log(p[1] + 1e-6)  # ≈ 13.71, not 16
    got = losses.prototype_focal_loss(torch.tensor([row], dtype=torch.float64), torch.tensor([1]), 4.0, eps=1e-6)
    assert got.item() == pytest.approx(expected, rel=1e-9)
    assert 13.6 < got.item() < 13.8
    exact = losses.prototype_focal_loss(torch.tensor([row], dtype=torch.float64), torch.tensor([1]), 4.0, eps=0.0)
    assert exact.item() == pytest.approx(-((1 - p[1]) ** 4) * math.log(math.exp(-16) / (1 + math.exp(-16))),
                                         rel=1e-6)


def test_epsilon_in_the_softmax_denominator_and_the_log():
    row = [2.0, 0.5, -1.0]
    p = _official_p(row)
    target = 0
    expected = -((1 - p[0]) ** 4) * math.log(p[0] + 1e-6)
    t = torch.tensor([row], dtype=torch.float64)
    assert losses.prototype_focal_loss(t, torch.tensor([target]), 4.0, eps=1e-6).item() == pytest.approx(
        expected, rel=1e-12)
    # the neighbour NLL takes the same log(p + ε)
    nll = losses.neighbour_loss(t, torch.tensor([[2]]), torch.tensor([[1.0]]), torch.tensor([[1.0]]), eps=1e-6)
    assert nll.item() == pytest.approx(-math.log(p[2] + 1e-6) * 1.0 / 2, rel=1e-12)
    # and it stays finite where exp(s) overflows float32 (|s| up to 1/τ = 20 and beyond)
    big = torch.tensor([[200.0, 0.0]])
    assert torch.isfinite(losses.prototype_focal_loss(big, torch.tensor([1]), 4.0, eps=1e-6))


# ------------------------------------------------------------------ 4. the projection head's frozen bias
def test_projection_head_bias_stays_zero_after_an_adam_step():
    torch.manual_seed(0)
    head = ProjectionHead(4)
    opt = torch.optim.Adam(head.parameters(), lr=0.1, weight_decay=5e-4)  # every parameter, as a careless caller
    before = head.bn.weight.detach().clone()
    (head(torch.randn(8, 4)) * torch.randn(8, 4)).sum().backward()
    opt.step()
    assert head.bn.bias.grad is None and torch.equal(head.bn.bias, torch.zeros(4))
    assert not torch.equal(head.bn.weight, before)  # the step did happen


def test_maskcl_net_trains_no_batchnorm_bias_outside_the_trunks():
    net = MaskCLNet(build_backbone("resnet18"), build_backbone("resnet18"))
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen == {"rgb.neck.bias", "mask.neck.bias", "proj_rgb.bn.bias", "fusion.bn.bias"}


# ------------------------------------------------------------------ 5. the sampler's replacement threshold
def _groups(out, labels):
    groups, cur = [], []
    for i in out:
        if cur and labels[i] != labels[cur[0]]:
            groups.append(cur)
            cur = []
        cur.append(i)
    groups.append(cur)
    return groups


def test_a_pool_of_exactly_k_minus_1_is_drawn_with_replacement():
    """K = 4, one label on cameras 0..3: every anchor has exactly K − 1 = 3 other-camera candidates.

    Officially (replacement unless ≥ K candidates) the 3 draws repeat one unless they are a permutation:
    P(no repeat) = 3!/3³ = 2/9; ``minimal`` never repeats.
    """
    labels = np.zeros(4, dtype=int)
    cams = np.arange(4)
    rng = np.random.default_rng(0)
    passes = [pk_indices(labels, cams, 4, rng) for _ in range(900)]
    repeated = np.mean([len(set(p[1:])) < 3 for p in passes])
    assert abs(repeated - 7 / 9) < 4 * math.sqrt(7 / 9 * 2 / 9 / 900)
    for p in passes:
        assert p[0] not in p[1:]
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = pk_indices(labels, cams, 4, rng, replacement="minimal")
        assert sorted(p[1:]) == sorted(set(range(4)) - {p[0]})


def test_a_pool_of_k_is_drawn_without_replacement_either_way():
    labels = np.zeros(5, dtype=int)
    cams = np.array([0, 1, 2, 3, 4])  # 4 = K other-camera candidates
    for replacement in ("official", "minimal"):
        rng = np.random.default_rng(1)
        for _ in range(100):
            p = pk_indices(labels, cams, 4, rng, replacement=replacement)
            assert len(set(p[1:])) == 3


def test_the_official_curriculum_is_computed_in_floating_point():
    assert curriculum_k(2, 49, 98) == 0           # int((2/98)·49) = int(0.99999…) — the official value
    assert [curriculum_k(3, e, 12) for e in range(12)] == [0] * 4 + [1] * 4 + [2] * 4
    assert [curriculum_k(10, e, 60) for e in (0, 5, 6, 30, 59)] == [0, 0, 1, 5, 9]


# ------------------------------------------------------------------ 6. float32 by default
def test_default_precision_is_float32_for_every_method():
    cuda = torch.device("cuda")
    assert isinstance(_autocast(cuda, OFFICIAL.amp), nullcontext)
    assert isinstance(_autocast(torch.device("cpu"), "bf16"), nullcontext)  # never on the CPU
    bf16 = _autocast(cuda, "bf16")
    assert isinstance(bf16, torch.autocast) and bf16.fast_dtype == torch.bfloat16


# ------------------------------------------------------------------ the step, wired
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from maskcl.training.data import train_data_from_manifest

    work = build_tiny_synthcc(tmp_path_factory.mktemp("official_step"))
    return train_data_from_manifest(pd.read_csv(work / "manifest.csv"), pd.read_csv(work / "masks.csv"))


def _method(data, **over):
    s = TrainSettings.from_dict(dict(arch="resnet18", pretrained="none", height=32, width=16, batch_size=8,
                                     num_instances=4, allknn=3, epochs=3, k1=10, k2=3, min_samples=2, eps=0.7,
                                     workers=0, device="cpu", **over))
    torch.manual_seed(0)
    return MaskCLMethod(s, data, torch.device("cpu"), batch_size_eval=32)


def _record_grayscale(m, seen):
    """Wrap ``m._extract`` to record the ``grayscale`` flag of every extraction."""
    original = m._extract

    def extract(net, paths, grayscale=False, **kw):
        seen.append(grayscale)
        return original(net, paths, grayscale=grayscale, **kw)

    m._extract = extract


def test_memory_init_official_copies_rgb_into_the_fusion_memory(tiny_data):
    seen: list = []
    m = _method(tiny_data)
    _record_grayscale(m, seen)
    m.start()
    assert seen == [False, False]  # RGB, then the masks through the test transform: no grayscale
    assert torch.equal(m.module["mem_fused"].features, m.module["mem_rgb"].features)
    seen.clear()
    c = _method(tiny_data, memory_init="consistent")
    _record_grayscale(c, seen)
    c.start()
    assert seen == [False, True]
    assert not torch.allclose(c.module["mem_fused"].features, c.module["mem_rgb"].features)


def _one_batch(m, data):
    from torch.utils.data import DataLoader

    from maskcl.training.sampler import CameraAwarePKSampler

    batch_idx = next(iter(CameraAwarePKSampler(m.labels, data.camids, 8, 4, 1, seed=0).seeded_batches(0)))
    return next(iter(DataLoader(m.dataset(), batch_sampler=[batch_idx])))


def _official_terms(m, batch, gates):
    """The RGB stream's focal and neighbour terms by the official formulas (float64) on the method's state."""
    y = m._labels_dev[batch[2]]
    logits = m.module["mem_rgb"].class_logits(m._last[1]["rgb"].detach()).double()
    p = torch.exp(logits) / (torch.exp(logits).sum(1, keepdim=True) + 1e-6)  # masked_softmax, ε = 1e-6
    py = p.gather(1, y[:, None])
    focal = float(-((1 - py) ** 4 * torch.log(py + 1e-6)).mean())
    wb = m.nbr_sim[y].double()
    nll = -torch.log(p.gather(1, m.nbr_idx[y]) + 1e-6)  # F.nll_loss(log(p + ε)): a batch mean per rank
    k = wb.shape[1]
    nbr = sum(float(nll[:, r].mean() * (wb[:, r] * gates[:, r]).mean()) for r in range(k)) / (k + 1)
    return focal, nbr


def test_the_step_uses_official_weights_reduction_and_epsilon(tiny_data):
    """One MaskCL step with k = 2: its focal and neighbour terms equal the official formulas on its state."""
    m = _method(tiny_data)
    m.start()
    m.prepare_epoch(2)  # k = int(3/3 · 2) = 2
    assert m.k_epoch == 2
    cents = m.module["mem_fused"].centroids()
    idx, w = centroid_neighbours(cents, 2, weights="official")
    assert torch.equal(m.nbr_idx, idx) and torch.equal(m.nbr_sim, w)
    assert float(m.nbr_sim.max()) < 1.5 / cents.shape[0]  # ≈ cos / C: far below the cosines
    batch = _one_batch(m, tiny_data)
    m.module.train()
    m.step_seed = 7
    _, terms = m.step(batch)
    y = m._labels_dev[batch[2]]
    gates = torch.bernoulli(m.nbr_sim[y].clamp(0, 1), generator=torch.Generator().manual_seed(7)).double()
    focal, nbr = _official_terms(m, batch, gates)  # the RGB stream draws first: seed + 0
    assert terms["proto_rgb"].item() == pytest.approx(focal, rel=1e-5)
    assert terms["nbr_rgb"].item() == pytest.approx(nbr, rel=1e-5, abs=1e-12)
    # the gates rarely fire at weights ≈ 1/C: with every gate open the reduction is checked on a non-zero value
    m._gates = lambda wb: (torch.ones_like(wb), losses.neighbour_rank_weights(wb, torch.ones_like(wb)))
    _, terms = m.step(batch)
    focal, nbr = _official_terms(m, batch, torch.ones(len(y), 2, dtype=torch.float64))
    assert nbr > 0
    assert terms["nbr_rgb"].item() == pytest.approx(nbr, rel=1e-5)
