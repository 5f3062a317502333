"""ISE's parts (``maskcl.training.methods.ise``) against the official formulas (zhangxinyu-xyz/ISE-ReID at 3e55527).

Every expected value is worked out by hand from the official code's formulas on 2-D cases:

    centroids (memory)  c0 = (1, 0), c1 = (0, 1), c2 = (−1, 0)
    features            f0 = (0.6, 0.8) y 0   cos to c: ( 0.6,  0.8, −0.6) → nearest other c1 (closer than its own)
                        f1 = (0.8, −0.6) y 0           ( 0.8, −0.6, −0.8) → c1
                        f2 = (−0.6, 0.8) y 1           (−0.6,  0.8,  0.6) → c2
                        f3 = (−0.8, −0.6) y 2          (−0.8, −0.6,  0.8) → c1

With λ = 0.4 a support moves by 0.5 · λ = 0.2 of (c_other − c_own), then is normalised:
    s0 = n(0.6 − 0.2, 0.8 + 0.2) = (2, 5)/√29    s1 = n(0.8 − 0.2, −0.6 + 0.2) = (3, −2)/√13
    s2 = n(−0.6 − 0.2, 0.8 − 0.2) = (−0.8, 0.6)  s3 = n(−0.8 + 0.2, −0.6 + 0.2) = (−3, −2)/√13
"""

from __future__ import annotations

import math

import pytest
import torch

from conftest import assert_trained_alike

from maskcl.models.memory import ClusterMemory
from maskcl.training.methods import ise

E = math.e
R29, R13 = math.sqrt(29.0), math.sqrt(13.0)

CENTROIDS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
FEATS = torch.tensor([[0.6, 0.8], [0.8, -0.6], [-0.6, 0.8], [-0.8, -0.6]])
LABELS = torch.tensor([0, 0, 1, 2])
SUPPORTS_04 = torch.tensor([[2 / R29, 5 / R29], [3 / R13, -2 / R13], [-0.8, 0.6], [-3 / R13, -2 / R13]])


def _memory(temp: float = 0.05, momentum: float = 0.2) -> ClusterMemory:
    mem = ClusterMemory(2, temp=temp, momentum=momentum)
    mem.init_centroids(CENTROIDS)
    return mem


def _ce(cos, y: int, tau: float) -> float:
    """Cross-entropy of one row of cosines over the memory: log Σ_k exp(cos_k/τ) − cos_y/τ."""
    return math.log(sum(math.exp(c / tau) for c in cos)) - cos[y] / tau


# ------------------------------------------------------------------ λ schedule (trainers_support.py 30)
def test_lambda_is_half_base_times_log_of_the_progress_through_the_whole_schedule():
    # t = (epoch · iters + i) / (iters · epochs); λ = 0.5 · base · ln((e − 1) t + 1)
    assert ise.support_lambda(0, 0, 400, 70) == 0.0
    # epoch 35 of 70, i = 0: t = 1/2 → 0.5 · ln((e + 1)/2) = 0.5 · ln 1.859141 = 0.310057
    assert ise.support_lambda(35, 0, 400, 70) == pytest.approx(0.5 * math.log((E + 1) / 2), abs=1e-12)
    assert ise.support_lambda(35, 0, 400, 70) == pytest.approx(0.310057, abs=1e-6)
    # the iteration counts across epochs: epoch 1, i 200 of 400, 2 epochs → t = 600/800 = 3/4
    assert ise.support_lambda(1, 200, 400, 2) == pytest.approx(0.5 * math.log(1 + 0.75 * (E - 1)), abs=1e-12)
    assert ise.support_lambda(1, 0, 10, 2) == ise.support_lambda(0, 10, 10, 2)
    # base scales linearly: base 2 at t = 1/2 → ln((e + 1)/2)
    assert ise.support_lambda(35, 0, 400, 70, base=2.0) == pytest.approx(math.log((E + 1) / 2), abs=1e-12)
    # the last official iteration (epoch 69, i 399) stays just under 0.5 · base
    last = ise.support_lambda(69, 399, 400, 70)
    assert 0.49998 < last < 0.5


def test_lambda_refuses_an_empty_schedule():
    with pytest.raises(ValueError, match="iters >= 1"):
        ise.support_lambda(0, 0, 0, 70)


# ------------------------------------------------------------------ supports (trainers_support.py 99-125)
def test_nearest_other_centroid_skips_the_own_label_not_the_first_position():
    # f0 (label 0) is closer to c1 (0.8) than to its own c0 (0.6): its nearest other is c1, then c2 (−0.6)
    idx = ise.nearest_other_centroids(FEATS, LABELS, CENTROIDS, topk=2)
    assert idx.tolist() == [[1, 2], [1, 2], [2, 0], [1, 0]]


def test_support_features_by_hand():
    supports, support_labels = ise.support_features(FEATS, LABELS, CENTROIDS, lam=0.4)
    assert torch.allclose(supports, SUPPORTS_04, atol=1e-6)
    assert support_labels.tolist() == [0, 0, 1, 2]  # a support keeps its sample's label


def test_support_at_lambda_zero_is_the_feature():
    supports, _ = ise.support_features(FEATS, LABELS, CENTROIDS, lam=0.0)
    assert torch.allclose(supports, FEATS, atol=1e-7)


def test_topk_supports_are_consecutive_per_sample():
    supports, support_labels = ise.support_features(FEATS, LABELS, CENTROIDS, lam=0.4, topk=2)
    # f0's second support moves to c2: n(0.6 + 0.2 · (−1 − 1), 0.8) = n(0.2, 0.8) = (1, 4)/√17
    assert torch.allclose(supports[0], SUPPORTS_04[0], atol=1e-6)
    assert torch.allclose(supports[1], torch.tensor([1.0, 4.0]) / math.sqrt(17.0), atol=1e-6)
    assert support_labels.tolist() == [0, 0, 0, 0, 1, 1, 2, 2]


def test_supports_carry_the_gradient_of_the_feature_and_not_of_the_centroids():
    feats = FEATS.clone().requires_grad_(True)
    cents = CENTROIDS.clone().requires_grad_(True)
    supports, _ = ise.support_features(feats, LABELS, cents, lam=0.4)
    supports[0, 0].backward()
    # s0 = v/|v|, v = f0 + (−0.2, 0.2) = (0.4, 1.0), |v|² = 1.16: ∂s_x/∂v = (1 − s_x², −s_x s_y)/|v|
    # = (1/1.16, −0.4/1.16)/√1.16
    expected = torch.tensor([1.0, -0.4]) * 1.16 ** -1.5
    assert torch.allclose(feats.grad[0], expected, atol=1e-6)
    assert torch.count_nonzero(feats.grad[1:]) == 0
    assert cents.grad is None


def test_too_few_clusters_for_topk_is_a_clear_error():
    with pytest.raises(ValueError, match="number of clusters - 1 = 2"):
        ise.nearest_other_centroids(FEATS, LABELS, CENTROIDS, topk=3)


# ------------------------------------------------------------------ memory loss (trainers_support.py 47-51, cm.py 89-100)
SAMPLE_COS = [(0.6, 0.8, -0.6), (0.8, -0.6, -0.8), (-0.6, 0.8, 0.6), (-0.8, -0.6, 0.8)]
SUPPORT_COS = [(2 / R29, 5 / R29, -2 / R29), (3 / R13, -2 / R13, -3 / R13), (-0.8, 0.6, 0.8),
               (-3 / R13, -2 / R13, 3 / R13)]


def test_memory_loss_is_one_cross_entropy_mean_over_samples_and_supports():
    tau = 0.5
    mem = _memory(temp=tau)
    y = [0, 0, 1, 2]
    rows = [_ce(c, k, tau) for c, k in zip(SAMPLE_COS, y)] + [_ce(c, k, tau) for c, k in zip(SUPPORT_COS, y)]
    loss = ise.support_memory_loss(mem, FEATS, LABELS, SUPPORTS_04, LABELS)
    assert loss.item() == pytest.approx(sum(rows) / 8, abs=1e-5)
    # without supports it is ClusterContrast's loss over the 4 samples
    plain = ise.support_memory_loss(mem, FEATS, LABELS)
    assert plain.item() == pytest.approx(sum(rows[:4]) / 4, abs=1e-5)


def test_memory_loss_weighs_a_support_like_a_sample():
    # one sample f0 and two supports: the mean over 3 rows, not the mean of the samples' and the supports' means
    tau = 0.5
    mem = _memory(temp=tau)
    loss = ise.support_memory_loss(mem, FEATS[:1], LABELS[:1], SUPPORTS_04[:2], torch.tensor([0, 0]))
    a, b, c = _ce(SAMPLE_COS[0], 0, tau), _ce(SUPPORT_COS[0], 0, tau), _ce(SUPPORT_COS[1], 0, tau)
    assert loss.item() == pytest.approx((a + b + c) / 3, abs=1e-5)
    assert abs((a + b + c) / 3 - (a + (b + c) / 2) / 2) > 1e-3  # the two readings differ on this case


# ------------------------------------------------------------------ label-preserving loss (lp_loss.py 14-45)
# f = (1, 0), (0, 1), (−1, 0), (0, −1) with labels 0, 0, 1, 1 (K = 2, aligned blocks);
# s = (0.6, 0.8), (0.8, 0.6), (−0.6, −0.8), (−0.8, 0.6) with the same labels. τ = 0.6, so cos 0.6 → e^1.
LP_F = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
LP_S = torch.tensor([[0.6, 0.8], [0.8, 0.6], [-0.6, -0.8], [-0.8, 0.6]])
LP_Y = torch.tensor([0, 0, 1, 1])


def _lp(p: float, n: float, eps: float = 1e-6) -> float:
    return -math.log(p / (p + n + eps) + eps)


def test_label_preserving_loss_by_hand():
    per = ise.label_preserving_loss(LP_F, LP_Y, LP_S, LP_Y, temp=0.6, group_size=2, reduction="none")
    # row 0: cos (0.6, 0.8 | −0.6, −0.8): hardest positive 0.6 → e^1, hardest negative −0.6 → e^−1
    # row 1: cos (0.8, 0.6 | −0.8, 0.6): e^1 against e^1
    # row 2: cos (−0.6, −0.8 | 0.6, 0.8): positive min 0.6 → e^1; negative max −0.6 → e^−1
    # row 3: cos (−0.8, −0.6 | 0.8, −0.6): positive min −0.6 → e^−1 (its own support); negative max −0.6 → e^−1
    expected = [_lp(E, 1 / E), _lp(E, E), _lp(E, 1 / E), _lp(1 / E, 1 / E)]
    assert per.tolist() == pytest.approx(expected, abs=1e-5)
    mean = ise.label_preserving_loss(LP_F, LP_Y, LP_S, LP_Y, temp=0.6, group_size=2)
    assert mean.item() == pytest.approx(sum(expected) / 4, abs=1e-5)


def test_label_preserving_epsilon_is_in_the_denominator_and_inside_the_log():
    # a large ε makes both places visible: row 0 = −log(e / (e + e^−1 + ε) + ε)
    per = ise.label_preserving_loss(LP_F, LP_Y, LP_S, LP_Y, temp=0.6, group_size=2, eps=0.5, reduction="none")
    assert per[0].item() == pytest.approx(_lp(E, 1 / E, eps=0.5), abs=1e-5)
    assert per[3].item() == pytest.approx(_lp(1 / E, 1 / E, eps=0.5), abs=1e-5)


# Six candidates as basis vectors so that an anchor's row *is* its logits (τ = 1).
def _rows(labels, anchors):
    feats = torch.zeros(len(labels), len(labels))
    for i, row in anchors.items():
        feats[i] = torch.tensor(row)
    return feats, torch.eye(len(labels)), torch.tensor(labels)


def test_official_negatives_are_chunks_of_topk_times_k_or_all_when_they_do_not_divide():
    # labels 0, 0, 0, 1, 1, 2 with K = 2 (a cluster of three breaks the P × K blocks)
    # anchor 3 (label 1): negatives at columns 0, 1, 2, 5 → 4 = 2 chunks (0, 1), (2, 5): e^.2 + e^.5;
    #                     positives 0.9, 0.7 → e^.7
    # anchor 0 (label 0): negatives at columns 3, 4, 5 → 3, not a multiple of 2: all of them, e^.2 + e^.5 + e^.1
    feats, sup, y = _rows([0, 0, 0, 1, 1, 2], {3: [0.1, 0.2, 0.5, 0.9, 0.7, 0.3], 0: [0.4, 0.6, 0.8, 0.2, 0.5, 0.1]})
    per = ise.label_preserving_loss(feats, y, sup, y, temp=1.0, group_size=2, reduction="none")
    ex = math.exp
    assert per[3].item() == pytest.approx(_lp(ex(0.7), ex(0.2) + ex(0.5)), abs=1e-5)
    assert per[0].item() == pytest.approx(_lp(ex(0.4), ex(0.2) + ex(0.5) + ex(0.1)), abs=1e-5)
    # per_label: the hardest support of each other label
    # anchor 3: max(e^.1, e^.2, e^.5) + e^.3; anchor 0: max(e^.2, e^.5) + e^.1
    per = ise.label_preserving_loss(feats, y, sup, y, temp=1.0, negatives="per_label", reduction="none")
    assert per[3].item() == pytest.approx(_lp(ex(0.7), ex(0.5) + ex(0.3)), abs=1e-5)
    assert per[0].item() == pytest.approx(_lp(ex(0.4), ex(0.5) + ex(0.1)), abs=1e-5)


def test_official_and_per_label_negatives_agree_on_aligned_blocks():
    # labels 0, 0, 1, 1, 2, 2: anchor 0's chunks (2, 3), (4, 5) are the labels 1 and 2 → e^.5 + e^.3
    feats, sup, y = _rows([0, 0, 1, 1, 2, 2], {0: [0.9, 0.7, 0.1, 0.5, 0.3, 0.2]})
    official = ise.label_preserving_loss(feats, y, sup, y, temp=1.0, group_size=2, reduction="none")
    per_label = ise.label_preserving_loss(feats, y, sup, y, temp=1.0, negatives="per_label", reduction="none")
    assert official[0].item() == pytest.approx(_lp(math.exp(0.7), math.exp(0.5) + math.exp(0.3)), abs=1e-5)
    assert torch.allclose(official, per_label, atol=1e-6)


def test_label_preserving_loss_refuses_an_unknown_negative_rule_and_a_missing_chunk():
    with pytest.raises(ValueError, match="official, per_label"):
        ise.label_preserving_loss(LP_F, LP_Y, LP_S, LP_Y, negatives="all")
    with pytest.raises(ValueError, match="group_size"):
        ise.label_preserving_loss(LP_F, LP_Y, LP_S, LP_Y)


# ------------------------------------------------------------------ memory update (cm.py 20-31, 48-69)
def _n(x: float, y: float) -> torch.Tensor:
    return torch.tensor([x, y]) / math.hypot(x, y)


def test_hard_update_uses_each_clusters_least_similar_input_supports_included():
    mem = _memory(momentum=0.2)
    ise.update_memory(mem, LABELS, FEATS, LABELS, SUPPORTS_04, sample_type="hard")
    # cluster 0: sims f0 0.6, f1 0.8, s0 2/√29 = 0.371, s1 3/√13 = 0.832 → s0: n(0.2 + 0.8 · 2/√29, 0.8 · 5/√29)
    assert torch.allclose(mem.features[0], _n(0.2 + 0.8 * 2 / R29, 0.8 * 5 / R29), atol=1e-6)
    # cluster 1: f2 0.8, s2 0.6 → s2: n(0.8 · (−0.8), 0.2 + 0.8 · 0.6) = n(−0.64, 0.68)
    assert torch.allclose(mem.features[1], _n(-0.64, 0.68), atol=1e-6)
    # cluster 2: f3 0.8, s3 3/√13 = 0.832 → the sample f3: n(−0.2 − 0.64, −0.48) = n(−0.84, −0.48)
    assert torch.allclose(mem.features[2], _n(-0.84, -0.48), atol=1e-6)


def test_hard_update_without_supports():
    mem = _memory(momentum=0.2)
    ise.update_memory(mem, LABELS, FEATS, LABELS, SUPPORTS_04, sample_type="hard", supports_update=False)
    # cluster 0: f0 (0.6) → n(0.68, 0.64); cluster 1: f2 alone → n(−0.48, 0.84); cluster 2 as before
    assert torch.allclose(mem.features[0], _n(0.68, 0.64), atol=1e-6)
    assert torch.allclose(mem.features[1], _n(-0.48, 0.84), atol=1e-6)
    assert torch.allclose(mem.features[2], _n(-0.84, -0.48), atol=1e-6)


def test_hard_update_ties_go_to_the_first_input_and_absent_clusters_stay():
    mem = _memory(momentum=0.2)
    # two inputs of cluster 0 with the same similarity 0.6: the first, (0.6, 0.8), is used
    ise.hard_update(mem, torch.tensor([0, 0]), torch.tensor([[0.6, 0.8], [0.6, -0.8]]))
    assert torch.allclose(mem.features[0], _n(0.68, 0.64), atol=1e-6)
    assert torch.equal(mem.features[1:], CENTROIDS[1:])


def test_ori_update_takes_every_input_in_order_samples_then_supports():
    mem = _memory(momentum=0.2)
    ise.update_memory(mem, LABELS, FEATS, LABELS, SUPPORTS_04, sample_type="ori")
    # cluster 1: f2 then s2: n(−0.48, 0.84) = (−0.496139, 0.868243), then n(0.2 · that + 0.8 · (−0.8, 0.6))
    assert torch.allclose(mem.features[1], torch.tensor([-0.749139, 0.662413]), atol=1e-5)
    # cluster 2: f3 then s3: (−0.868243, −0.496139), then n(0.2 · that + 0.8 · (−3, −2)/√13)
    assert torch.allclose(mem.features[2], torch.tensor([-0.839607, -0.543194]), atol=1e-5)


def test_update_refuses_an_unknown_sample_type():
    with pytest.raises(ValueError, match="hard, ori"):
        ise.update_memory(_memory(), LABELS, FEATS, sample_type="mean")


# ------------------------------------------------------------------ the step (trainers_support.py 40-55)
def test_ise_step_weights_the_terms_and_leaves_the_memory_to_the_update():
    tau = 0.5
    mem = _memory(temp=tau)
    feats = FEATS.clone().requires_grad_(True)
    out = ise.ise_step(mem, feats, LABELS, 0.4, num_instances=1, lp_weight=0.1)
    y = [0, 0, 1, 2]
    contrast = (sum(_ce(c, k, tau) for c, k in zip(SAMPLE_COS, y))
                + sum(_ce(c, k, tau) for c, k in zip(SUPPORT_COS, y))) / 8
    assert out.terms["contrast"].item() == pytest.approx(contrast, abs=1e-5)
    # LP with K = 1 (one sample per label here): row 0's positives are s0, s1 (label 0)
    lp = ise.label_preserving_loss(FEATS, LABELS, SUPPORTS_04, LABELS, temp=0.6, group_size=1)
    assert out.terms["lp"].item() == pytest.approx(lp.item(), abs=1e-6)
    assert out.total.item() == pytest.approx(contrast + 0.1 * lp.item(), abs=1e-5)
    assert torch.allclose(out.supports, SUPPORTS_04, atol=1e-6)
    assert torch.equal(mem.features, CENTROIDS)  # the step computes; update_memory moves the centroids
    out.total.backward()
    assert feats.grad is not None and torch.count_nonzero(feats.grad) > 0
    # use_support off: the memory loss over the samples alone, the LP term unchanged
    off = ise.ise_step(mem, FEATS, LABELS, 0.4, num_instances=1, use_support=False)
    assert off.terms["contrast"].item() == pytest.approx(
        sum(_ce(c, k, tau) for c, k in zip(SAMPLE_COS, y)) / 4, abs=1e-5)
    assert off.terms["lp"].item() == pytest.approx(lp.item(), abs=1e-6)


def test_ise_step_with_two_supports_per_sample_is_one_mean_over_twelve_rows():
    tau = 0.5
    mem = _memory(temp=tau)
    out = ise.ise_step(mem, FEATS, LABELS, 0.4, num_instances=1, topk=2)
    assert out.supports.shape == (8, 2)
    cos = out.supports @ CENTROIDS.t()  # the supports themselves are checked by hand above
    ys = [0, 0, 0, 0, 1, 1, 2, 2]
    samples = sum(_ce(c, k, tau) for c, k in zip(SAMPLE_COS, [0, 0, 1, 2]))
    supports = sum(_ce(c.tolist(), k, tau) for c, k in zip(cos, ys))
    assert out.terms["contrast"].item() == pytest.approx((samples + supports) / 12, abs=1e-5)
    assert abs((samples + supports) / 12 - (samples / 4 + supports / 8) / 2) > 1e-3


def test_lp_anchors_of_one_slice_against_the_whole_batchs_supports():
    # under DDP a rank holds rows 2, 3 but its anchors must meet every support of the global batch
    full = ise.label_preserving_loss(LP_F, LP_Y, LP_S, LP_Y, temp=0.6, group_size=2, reduction="none")
    part = ise.label_preserving_loss(LP_F[2:], LP_Y[2:], LP_S, LP_Y, temp=0.6, group_size=2, reduction="none")
    assert part.tolist() == pytest.approx([_lp(E, 1 / E), _lp(1 / E, 1 / E)], abs=1e-5)
    assert torch.allclose(part, full[2:])


# ------------------------------------------------------------------ the gather that keeps the gradient (comm)
def _gather_rank(rank: int, world: int, port: int, out: str) -> None:
    """One gloo rank: gather_with_grad's values and gradients, and ISE's LP loss on a slice of the batch."""
    import os

    from maskcl.training.comm import DistComm

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    comm = DistComm(torch.device("cpu"), "gloo")
    try:
        x = (torch.arange(6.0).reshape(3, 2) + 10 * rank).requires_grad_(True)
        g = comm.gather_with_grad(x)
        w = torch.arange(12.0).reshape(6, 2) * (rank + 1)  # each rank's loss weighs the rows differently
        (g * w).sum().backward()
        # ISE's LP loss: this rank's anchors against every rank's supports (the module's own gather)
        f = torch.nn.functional.normalize(LP_BATCH_F[rank * 2:(rank + 1) * 2].clone(), dim=1).requires_grad_(True)
        y = LP_BATCH_Y[rank * 2:(rank + 1) * 2]
        sup, ys = ise.support_features(f, y, CENTROIDS, 0.4)
        cand, cand_y = comm.gather_with_grad(sup), comm.gather(ys)[0]
        lp = ise.label_preserving_loss(f, y, cand, cand_y, temp=0.6, negatives="per_label")
        lp.backward()
        torch.save({"g": g.detach(), "xgrad": x.grad, "lp": lp.detach(), "fgrad": f.grad}, f"{out}/rank{rank}.pt")
    finally:
        comm.close()


LP_BATCH_F = torch.tensor([[0.6, 0.8], [0.9, 0.1], [-0.6, 0.8], [-0.8, -0.6]])
LP_BATCH_Y = torch.tensor([0, 0, 1, 2])


def test_gather_with_grad_is_the_identity_in_one_process():
    from maskcl.training.comm import LocalComm

    x = torch.ones(2, 3, requires_grad=True)
    g = LocalComm().gather_with_grad(x)
    (g * 2).sum().backward()
    assert g is x and torch.equal(x.grad, torch.full((2, 3), 2.0))


@pytest.mark.slow
def test_gather_with_grad_sums_every_ranks_gradient_and_lp_matches_one_process(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_gather_rank, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    r = [torch.load(tmp_path / f"rank{i}.pt") for i in range(2)]
    x_all = torch.cat([torch.arange(6.0).reshape(3, 2) + 10 * i for i in range(2)])
    assert torch.equal(r[0]["g"], x_all) and torch.equal(r[1]["g"], x_all)  # rank order, both ranks alike
    # d/dx_q of Σ_r Σ (G ∘ w_r) = Σ_r w_r[rows of q] = (1 + 2) · w[rows of q]: every rank's loss reaches x_q
    w = torch.arange(12.0).reshape(6, 2)
    assert torch.equal(r[0]["xgrad"], 3 * w[:3]) and torch.equal(r[1]["xgrad"], 3 * w[3:])
    # the LP loss: mean over ranks = one process's; each rank's feature gradient = W × the one-process one
    # (DDP averages parameter gradients over the W ranks); without the backward's sum it misses the other
    # rank's anchors' pull on this rank's supports
    f = torch.nn.functional.normalize(LP_BATCH_F.clone(), dim=1).requires_grad_(True)
    sup, ys = ise.support_features(f, LP_BATCH_Y, CENTROIDS, 0.4)
    lp = ise.label_preserving_loss(f, LP_BATCH_Y, sup, ys, temp=0.6, negatives="per_label")
    lp.backward()
    assert (r[0]["lp"] + r[1]["lp"]).item() / 2 == pytest.approx(lp.item(), abs=1e-6)
    assert torch.allclose(torch.cat([r[0]["fgrad"], r[1]["fgrad"]]) / 2, f.grad, atol=1e-6)


# ------------------------------------------------------------------ the method through the engine
ENGINE = dict(method="ise", arch="resnet18", pretrained="none", height=64, width=32, pad=2, epochs=2, iters=2,
              batch_size=16, num_instances=4, k1=10, k2=3, min_samples=2, eps=0.7, workers=0, device="cpu",
              ise_lp_weight=1.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from conftest import build_tiny_synthcc

    return build_tiny_synthcc(tmp_path_factory.mktemp("ise"))


def _engine_run(work, name: str, stop_after_epoch=None, **over):
    import pandas as pd

    from maskcl.training.data import train_data_from_manifest
    from maskcl.training.engine import train
    from maskcl.training.settings import TrainSettings

    data = train_data_from_manifest(pd.read_csv(work / "manifest.csv"))
    out = work / name
    return train(TrainSettings.from_dict(dict(ENGINE, **over)), data, seed=0, out_model=str(out / "model.pt"),
                 out_log=str(out / "train_log.csv"), state_dir=str(out / "state"), threads=1, progress=False,
                 stop_after_epoch=stop_after_epoch)


@pytest.mark.slow
def test_ise_trains_through_the_engine_and_its_model_is_evaluated(tiny):
    import pandas as pd

    from maskcl.evaluation import evaluate_checkpoint

    res = _engine_run(tiny, "run")
    assert res.epochs_run == 2 and res.resumed_from is None
    out = tiny / "run"
    log = pd.read_csv(out / "train_log.csv")
    assert list(log["epoch"]) == [1, 2] and (log["clusters"] >= 2).all()
    assert (log["lp"] > 0).all() and (log["contrast"] > 0).all()
    # total = contrast + lp_weight · lp (weight 1 here), per step and so per epoch mean
    assert log["loss"].tolist() == pytest.approx((log["contrast"] + log["lp"]).tolist(), rel=1e-5)
    model = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert model["method"] == "ise" and model["epochs"] == 2
    metrics = evaluate_checkpoint("synthcc", tiny / "manifest.csv", out / "model.pt", out / "metrics.json",
                                  out / "ranks.npz", settings={"batch_size": 64, "workers": 0}, device="cpu",
                                  threads=1)
    assert metrics and all(0.0 <= r["mAP"] <= 1.0 for r in metrics.values())
    print(f"ISE engine test: epoch_s {log['epoch_s'].tolist()}, cluster_s {log['cluster_s'].tolist()}")


@pytest.mark.slow
def test_ise_resumes_exactly_after_an_epoch(tiny):

    _engine_run(tiny, "whole")
    cut = _engine_run(tiny, "cut", stop_after_epoch=0)
    assert cut.epochs_run == 1 and not (tiny / "cut" / "model.pt").exists()
    again = _engine_run(tiny, "cut")
    assert again.resumed_from == 1 and again.epochs_run == 1
    assert_trained_alike(tiny / "whole", tiny / "cut")


def test_ise_lambda_follows_the_global_step(tiny):
    import pandas as pd

    from maskcl.training.data import train_data_from_manifest
    from maskcl.training.methods import METHODS
    from maskcl.training.settings import TrainSettings

    s = TrainSettings.from_dict(dict(ENGINE, epochs=3, iters=5))
    m = METHODS.build("ise", s, train_data_from_manifest(pd.read_csv(tiny / "manifest.csv")), torch.device("cpu"))
    m.prepare_epoch(2)
    assert m.lam() == ise.support_lambda(2, 0, 5, 3)
    m._last = (torch.zeros(0, dtype=torch.long), torch.zeros(0, 512), torch.zeros(0, dtype=torch.long),
               torch.zeros(0, 512))
    m.after_step()
    assert m.lam() == pytest.approx(0.5 * math.log((E - 1) * 11 / 15 + 1), abs=1e-12)  # step 2 · 5 + 1 of 15


def test_ise_refuses_too_few_clusters_for_topk(tiny):
    from maskcl.errors import MaskCLError

    with pytest.raises(MaskCLError, match=r"train.ise_topk = 500 other cluster"):
        _engine_run(tiny, "topk", ise_topk=500)
