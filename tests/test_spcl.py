"""SpCL (``maskcl.training.methods.spcl``), step by step against the official formulas (yxgeee/SpCL ``01a486e``).

Every expected value is derived by hand, in the comments, from the official semantics on a case small
enough to check on paper: the hybrid memory's class-mean logits, ε and loss (``spcl/models/hm.py``), its
sequential momentum update, and the self-paced criterion's IoUs, cluster minima, epoch-0 threshold,
ejections and re-numbering (``examples/spcl_train_usl.py`` lines 158-226).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import assert_trained_alike

from maskcl.clustering import cluster_with_distances, dbscan, jaccard_distance
from maskcl.training import losses
from maskcl.training.methods.spcl import (HybridMemory, MultiScaleLabels, SelfPacedCriterion, hybrid_memory_loss,
                                  independence_threshold, multi_scale_dbscan, reliability_scores,
                                  select_reliable)

E = math.e
EPS = 1e-6

# ------------------------------------------------------------------ the hybrid memory (hm.py)
# Five entries in 2-D, three classes: {0, 1}, {2, 3} and the singleton {4} (an outlier kept as a class).
BANK = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
LABELS = torch.tensor([0, 0, 1, 1, 2])
FEATS = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # the batch: memory rows 0 and 4
INDEXES = torch.tensor([0, 4])
TAU = 0.5
# f_a = (1, 0): ⟨f, M⟩/τ = [2, 0, 2, 1.2, 0] → class means s_a = [(2+0)/2, (2+1.2)/2, 0] = [1, 1.6, 0]
# f_b = (0, 1): ⟨f, M⟩/τ = [0, 2, 0, 1.6, 2] → s_b = [1, 0.8, 2]
P_A = E / (E + math.exp(1.6) + 1.0 + EPS)                     # target class 0
P_B = E ** 2 / (E + math.exp(0.8) + E ** 2 + EPS)             # target class 2 (the singleton)
LOSS = -(math.log(P_A + EPS) + math.log(P_B + EPS)) / 2


def test_class_score_is_the_mean_of_member_logits():
    loss = hybrid_memory_loss(FEATS, BANK, LABELS, INDEXES, temp=TAU, eps=EPS)
    assert float(loss) == pytest.approx(LOSS, rel=1e-6)
    # a sum over members (no division by the count) would score s_a = [2, 3.2, 0]: a different loss
    p_sum = E ** 2 / (E ** 2 + math.exp(3.2) + 1.0)
    assert abs(float(loss) - LOSS) < 1e-6 < abs(-(math.log(p_sum) + math.log(P_B)) / 2 - LOSS)


def test_empty_classes_are_masked_out():
    # the official numbering leaves gaps where a cluster emptied; its masked softmax ignores them
    gaps = torch.tensor([0, 0, 2, 2, 5])
    a = hybrid_memory_loss(FEATS, BANK, LABELS, INDEXES, temp=TAU, eps=EPS)
    b = hybrid_memory_loss(FEATS, BANK, gaps, INDEXES, temp=TAU, eps=EPS)
    assert float(b) == pytest.approx(LOSS, rel=1e-6)
    assert torch.allclose(a, b, rtol=0, atol=1e-7)


def test_epsilon_saturates_the_loss():
    # τ = 0.05, f = (−1, 0) against its own class M0 = (1, 0) and the other M1 = (−1, 0): s = [−20, 20],
    # p_y = e^−20 / (e^−20 + e^20 + ε) ≈ e^−40 ≈ 4e−18, so −log(p_y + ε) = −log(1e−6 + 4e−18) = 13.8155…;
    # the exact softmax gives −log p_y = 40 + log(1 + e^−40) ≈ 40
    bank = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    f = torch.tensor([[-1.0, 0.0]])
    sat = hybrid_memory_loss(f, bank, torch.tensor([0, 1]), torch.tensor([0]), temp=0.05, eps=EPS)
    exact = hybrid_memory_loss(f, bank, torch.tensor([0, 1]), torch.tensor([0]), temp=0.05, eps=0.0)
    assert float(sat) == pytest.approx(-math.log(EPS), rel=1e-6)
    assert float(exact) == pytest.approx(40.0, rel=1e-5)


def test_gradient_reaches_the_batch_features_only():
    # dL/df_b = (1/B)(1/τ) Σ_k (p_bk − [k = y_b]) c̄_k with the class means of the entries
    # c̄_0 = (0.5, 0.5), c̄_1 = (0.8, 0.4), c̄_2 = (0, 1); ε moves this by < 1e−5
    bank = BANK.clone().requires_grad_(True)
    f = FEATS.clone().requires_grad_(True)
    hybrid_memory_loss(f, bank, LABELS, INDEXES, temp=TAU, eps=EPS).backward()
    assert bank.grad is None  # the official backward returns no gradient for the memory (hm.py 32)
    cbar = torch.tensor([[0.5, 0.5], [0.8, 0.4], [0.0, 1.0]], dtype=torch.float64)
    za = E + math.exp(1.6) + 1.0
    zb = E + math.exp(0.8) + E ** 2
    pa = torch.tensor([E / za, math.exp(1.6) / za, 1.0 / za], dtype=torch.float64)
    pb = torch.tensor([E / zb, math.exp(0.8) / zb, E ** 2 / zb], dtype=torch.float64)
    ga = (pa - torch.tensor([1.0, 0, 0], dtype=torch.float64)) @ cbar / TAU / 2
    gb = (pb - torch.tensor([0, 0, 1.0], dtype=torch.float64)) @ cbar / TAU / 2
    assert torch.allclose(f.grad.double(), torch.stack([ga, gb]), atol=1e-5)


def test_memory_init_and_sequential_momentum_update():
    mem = HybridMemory(2, 2, temp=0.05, momentum=0.2)
    mem.init_features(torch.tensor([[3.0, 4.0], [0.0, 2.0]]))  # normalised once: (0.6, 0.8), (0, 1)
    assert torch.allclose(mem.features, torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
    # row 0 twice in the batch, updated in batch order (hm.py 28-30), m = 0.2 keeps 20 % of the entry:
    # 0.2·(0.6, 0.8) + 0.8·(0, 1) = (0.12, 0.96) → /√0.936
    first = np.array([0.12, 0.96]) / math.sqrt(0.936)
    # then 0.2·first + 0.8·(1, 0), normalised
    second = 0.2 * first + 0.8 * np.array([1.0, 0.0])
    second /= np.linalg.norm(second)
    # row 1: 0.2·(0, 1) + 0.8·(1, 0) = (0.8, 0.2) → /√0.68
    row1 = np.array([0.8, 0.2]) / math.sqrt(0.68)
    mem.update(torch.tensor([0, 0, 1]), torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]))
    assert np.allclose(mem.features.numpy(), np.stack([second, row1]), atol=1e-6)


def test_hybrid_memory_loss_uses_its_labels_and_temperature():
    mem = HybridMemory(5, 2, temp=TAU, momentum=0.2)
    mem.init_features(BANK)
    mem.set_labels(LABELS)
    assert float(mem.loss(FEATS, INDEXES)) == pytest.approx(LOSS, rel=1e-6)


def test_equals_the_instance_memory_prototype_loss_at_gamma_0():
    # the mean of member logits is the logit of the member mean, so MaskCL's prototype loss with γ = 0 and
    # the same ε is SpCL's loss: either path may serve the engine
    torch.manual_seed(0)
    mem = HybridMemory(50, 8, temp=0.05, momentum=0.2)
    mem.init_features(torch.randn(50, 8))
    mem.set_labels(torch.randint(0, 12, (50,)).unique(return_inverse=True)[1])
    idx = torch.tensor([3, 3, 17, 42, 0])
    f = torch.nn.functional.normalize(torch.randn(5, 8), dim=1)
    proto = losses.prototype_focal_loss(mem.class_logits(f), mem.labels[idx], gamma=0.0, eps=EPS)
    assert torch.allclose(mem.loss(f, idx), proto, rtol=1e-5)


# ------------------------------------------------------------------ the self-paced criterion
# Twelve samples. DBSCAN at eps: cluster 0 = {0..5}, cluster 1 = {6..9}, outliers 10, 11.
# At eps − gap cluster 0 keeps only {0..3} (4 and 5 become noise); at eps + gap 0, 1 and sample 10 merge.
MAIN = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, -1, -1])
TIGHT = np.array([0, 0, 0, 0, -1, -1, 1, 1, 1, 1, -1, -1])
LOOSE = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -1])
# outliers as singletons: main labels 0 ×6, 1 ×4, 2 (sample 10), 3 (sample 11)
# r_comp = 1 − |C∩T|/|C∪T|: samples 0-3: 1 − 4/6 = 1/3; 4, 5: 1 − 1/6 = 5/6; 6-9: 0; 10, 11: 0
R_COMP = [1 / 3] * 4 + [5 / 6] * 2 + [0.0] * 6
# r_indep = 1 − |C∩L|/|C∪L| with L = {0..10} (11): 0-5: 1 − 6/11; 6-9: 1 − 4/11; 10: 1 − 1/11; 11: 0
R_INDEP = [5 / 11] * 6 + [7 / 11] * 4 + [10 / 11, 0.0]


def test_reliability_scores_by_hand():
    s = reliability_scores(MAIN, TIGHT, LOOSE)
    assert s.labels.tolist() == [0] * 6 + [1] * 4 + [2, 3]
    assert np.allclose(s.r_comp, R_COMP, atol=1e-7) and s.r_comp.dtype == np.float32
    assert np.allclose(s.r_indep, R_INDEP, atol=1e-7)
    # cluster scores are the minimum over the members (lines 210-211)
    assert np.allclose(s.cluster_r_comp, [1 / 3, 0, 0, 0], atol=1e-7)
    assert np.allclose(s.cluster_r_indep, [5 / 11, 7 / 11, 10 / 11, 0], atol=1e-7)
    assert s.cluster_sizes.tolist() == [6, 4, 1, 1] and s.num_clusters == 2


def test_epoch0_threshold_keeps_both_clusters_and_ejects_the_tight_noise():
    s = reliability_scores(MAIN, TIGHT, LOOSE)
    # clusters of > 1 member: r_indep [5/11, 7/11], n = 2 → position min(1, round(1.8) = 2) = 1 → 7/11
    thr = independence_threshold(s.cluster_r_indep, s.cluster_sizes)
    assert thr == pytest.approx(7 / 11, abs=1e-7)
    r = select_reliable(s, thr)
    # cluster 0 passes (5/11 ≤ 7/11); its members keep the label only with r_comp = the cluster's 1/3:
    # 0-3 stay, 4 and 5 (5/6) are ejected. Cluster 1 passes with equality (7/11 ≤ 7/11) and all stay.
    # Sample 10's singleton fails (10/11 > 7/11) and is re-numbered; sample 11 (0) stays.
    assert r.kept.tolist() == [True] * 4 + [False] * 2 + [True] * 4 + [False, True]
    # ejected samples get len(labels) = 4, 5, 6 in sample order; label 2 is left empty (lines 223-226)
    assert r.official_labels.tolist() == [0, 0, 0, 0, 4, 5, 1, 1, 1, 1, 6, 3]
    # contiguous, order kept: 0→0, 1→1, 3→2, 4→3, 5→4, 6→5
    assert r.labels.tolist() == [0, 0, 0, 0, 3, 4, 1, 1, 1, 1, 5, 2]
    assert r.ejected.tolist() == [False] * 4 + [True] * 2 + [False] * 6  # 10 was an outlier already
    st = r.stats()
    assert (st["clusters"], st["outliers"], st["ejected"], st["classes"], st["singletons"],
            st["reliable_clusters"], st["emptied_clusters"]) == (2, 2, 2, 6, 4, 2, 0)
    assert st["indep_iou_threshold"] == pytest.approx(4 / 11, abs=1e-7)


def test_a_fixed_threshold_dissolves_a_whole_cluster():
    # a later epoch with the threshold fixed at 0.5: cluster 1 (7/11 > 0.5) fails the independence test,
    # so all four members become singletons 6..9 after 4, 5 (cluster 0's ejections) and before 10
    r = select_reliable(reliability_scores(MAIN, TIGHT, LOOSE), 0.5)
    assert r.official_labels.tolist() == [0, 0, 0, 0, 4, 5, 6, 7, 8, 9, 10, 3]
    assert r.labels.tolist() == [0, 0, 0, 0, 2, 3, 4, 5, 6, 7, 8, 1]
    assert r.stats()["emptied_clusters"] == 1 and r.stats()["reliable_clusters"] == 1


def test_cluster_independence_is_its_best_members():
    # cluster {0..3}; the loose DBSCAN put 0-2 in one loose cluster and 3 with the outlier 4:
    # r_indep(0..2) = 1 − 3/4 = 1/4, r_indep(3) = 1 − |{3}|/|{0..4}| = 4/5; the cluster's is min = 1/4,
    # so a threshold of 0.3 keeps it (a maximum, 4/5, would dissolve it)
    s = reliability_scores(np.array([0, 0, 0, 0, -1]), np.array([0, 0, 0, 0, -1]), np.array([0, 0, 0, 1, 1]))
    assert np.allclose(s.r_indep, [0.25, 0.25, 0.25, 0.8, 0.5], atol=1e-7)
    r = select_reliable(s, 0.3)
    assert r.kept[:4].all() and r.labels.tolist() == [0, 0, 0, 0, 1]


def test_tied_tight_subclusters_both_stay():
    # cluster {0..5} splits into tight {0, 1, 2} and {3, 4, 5}: both IoU 3/6, r_comp 1/2 = the minimum;
    # a third part {6} (tight noise) has 1 − 1/7 and is ejected
    main = np.array([0] * 7)
    tight = np.array([0, 0, 0, 1, 1, 1, -1])
    s = reliability_scores(main, tight, main)
    assert np.allclose(s.r_comp, [1 - 3 / 7] * 6 + [1 - 1 / 7], atol=1e-7)
    r = select_reliable(s, 0.0)
    assert r.kept.tolist() == [True] * 6 + [False]
    assert r.official_labels.tolist() == [0] * 6 + [1]


def test_independence_threshold_position():
    # n = 20 clusters with r_indep k/20: position min(19, round(18.0)) = 18 → 0.9; singletons ignored
    vals = np.r_[np.arange(20) / 20, [0.99, 0.99]]
    sizes = np.r_[[2] * 20, [1, 1]]
    assert independence_threshold(vals, sizes) == pytest.approx(18 / 20)
    # n = 25: round(22.5) = 22 (half to even; rounding half up would give 23)
    assert independence_threshold(np.arange(25) / 25, np.full(25, 3)) == pytest.approx(22 / 25)
    # unsorted input, n = 3: min(2, round(2.7) = 3) = 2 → the largest
    assert independence_threshold(np.array([0.4, 0.1, 0.2]), np.array([5, 5, 5])) == pytest.approx(0.4)
    # no cluster of two members: the official code raises IndexError; here no threshold yet
    assert independence_threshold(np.array([0.3, 0.0]), np.array([1, 1])) is None


def test_criterion_fixes_the_threshold_once_and_resumes_it():
    crit = SelfPacedCriterion()
    none = MultiScaleLabels(main=np.full(4, -1), tight=np.full(4, -1), loose=np.full(4, -1), eps=0.6,
                            eps_gap=0.02)
    r0 = crit.adopt(crit.labels_from(none), epoch=0)  # no cluster at epoch 0: all singletons, nothing fixed
    assert crit.indep_threshold is None and r0.labels.tolist() == [0, 1, 2, 3]
    scales = MultiScaleLabels(main=MAIN, tight=TIGHT, loose=LOOSE, eps=0.6, eps_gap=0.02)
    r1 = crit.labels_from(scales)  # computing alone changes no state (the DDP rank-0 half)
    assert crit.indep_threshold is None and r1.indep_threshold == pytest.approx(7 / 11, abs=1e-7)
    crit.adopt(r1, epoch=1)
    assert crit.indep_threshold == pytest.approx(7 / 11, abs=1e-7) and crit.fixed_at_epoch == 1
    # later epochs keep the fixed 7/11: two clusters of 4 inside one loose cluster of 8 have r_indep
    # 1 − 4/8 = 0.5 ≤ 7/11 and stay
    later = MultiScaleLabels(main=np.array([0, 0, 0, 0, 1, 1, 1, 1]), tight=np.array([0, 0, 0, 0, 1, 1, 1, 1]),
                             loose=np.zeros(8, dtype=np.int64), eps=0.6, eps_gap=0.02)
    r2 = crit.adopt(crit.labels_from(later), epoch=2)
    assert crit.indep_threshold == pytest.approx(7 / 11, abs=1e-7) and r2.kept.all()
    # clusters of 3 and 7 inside one loose cluster of 10: r_indep 1 − 3/10 = 0.7 > 7/11 (dissolved) and
    # 0.3 (kept); had this epoch set its own threshold (n = 2 → the larger, 0.7), both would stay
    main = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 1])
    far = MultiScaleLabels(main=main, tight=main, loose=np.zeros(10, dtype=np.int64), eps=0.6, eps_gap=0.02)
    r3 = crit.adopt(crit.labels_from(far), epoch=3)
    assert r3.kept.tolist() == [False] * 3 + [True] * 7
    resumed = SelfPacedCriterion()
    resumed.load_state_dict(crit.state_dict())
    assert resumed.labels_from(far).labels.tolist() == r3.labels.tolist()
    assert SelfPacedCriterion().labels_from(far).kept.all()


def _dense_one_minus_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The official formula in its dense form: N×N 0/1 float32 matrices, 1 − Σ min / Σ max per row."""
    sa = torch.from_numpy((a[:, None] == a[None, :]).astype(np.float32))
    sb = torch.from_numpy((b[:, None] == b[None, :]).astype(np.float32))
    return (1 - torch.min(sa, sb).sum(-1) / torch.max(sa, sb).sum(-1)).numpy()


def _singletons(lab: np.ndarray) -> np.ndarray:
    out, nxt = lab.copy(), lab.max() + 1
    for i in range(lab.size):
        if lab[i] == -1:
            out[i], nxt = nxt, nxt + 1
    return out


@pytest.mark.parametrize("seed", range(5))
def test_counted_ious_are_bit_identical_to_the_dense_matrices(seed: int):
    # random labelings, not nested as DBSCAN's usually are (border points can break the nesting)
    rng = np.random.default_rng(seed)
    main, tight, loose = (rng.integers(-1, k, size=60) for k in (5, 8, 3))
    s = reliability_scores(main, tight, loose)
    m, t, lo = _singletons(main), _singletons(tight), _singletons(loose)
    assert np.array_equal(s.r_comp, _dense_one_minus_iou(m, t))
    assert np.array_equal(s.r_indep, _dense_one_minus_iou(m, lo))


# ------------------------------------------------------------------ three DBSCANs on one Jaccard distance
def _blobs(seed: int = 0, per: int = 10, k: int = 8, d: int = 16, spread: float = 0.7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(k, d))
    x = np.concatenate([c[i] + spread * rng.normal(size=(per, d)) for i in range(k)] + [1.5 * rng.normal(size=(10, d))])
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_multi_scale_dbscan_equals_dbscan_on_the_full_jaccard_distance():
    x = _blobs()
    eps, gap = 0.55, 0.1
    m = multi_scale_dbscan(x, eps=eps, eps_gap=gap, k1=10, k2=3)
    full = jaccard_distance(x, k1=10, k2=3)  # every overlapping pair: the dense reference's matrix
    ref = [dbscan(full, e, 4) for e in (eps, eps - gap, eps + gap)]
    assert [np.array_equal(a, b) for a, b in zip((m.main, m.tight, m.loose), ref)] == [True] * 3
    # the case is sensitive: the three scales differ, and pairs between eps and eps + gap matter
    assert (m.main != m.tight).any() and (m.main != m.loose).any()
    short = cluster_with_distances(x, eps=eps, k1=10, k2=3, tight_eps=eps - gap).distances
    assert not np.array_equal(dbscan(short, eps + gap, 4), m.loose)
    sklearn = pytest.importorskip("sklearn.cluster")
    dense = np.ones(full.shape)
    coo = full.tocoo()
    dense[coo.row, coo.col] = coo.data
    np.fill_diagonal(dense, 0.0)
    for e, lab in zip((eps, eps - gap, eps + gap), (m.main, m.tight, m.loose)):
        assert np.array_equal(sklearn.DBSCAN(eps=e, min_samples=4, metric="precomputed").fit_predict(dense), lab)


def test_criterion_labels_feed_the_memory_with_the_official_loss():
    x = _blobs(seed=1, spread=0.7)
    crit = SelfPacedCriterion(eps=0.55, eps_gap=0.1, k1=10, k2=3)
    r = crit(x, epoch=0)
    assert crit.indep_threshold is not None and (r.labels >= 0).all()
    mem = HybridMemory(len(x), x.shape[1])
    mem.init_features(torch.from_numpy(x))
    mem.set_labels(torch.from_numpy(r.labels))  # contiguous: accepted
    idx = torch.arange(0, len(x), 7)
    f = torch.from_numpy(x[idx.numpy()])
    official = hybrid_memory_loss(f, mem.features, torch.from_numpy(r.official_labels), idx)
    assert torch.allclose(mem.loss(f, idx), official, atol=1e-6)


# ------------------------------------------------------------------ the method through the engine
TINY = dict(method="spcl", arch="resnet18", pretrained="none", height=64, width=32, pad=2, epochs=2, iters=2,
            batch_size=16, num_instances=4, k1=10, k2=3, min_samples=2, eps=0.7, workers=0, device="cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from conftest import build_tiny_synthcc

    return build_tiny_synthcc(tmp_path_factory.mktemp("spcl"))


def _data(work):
    import pandas as pd

    from maskcl.training.data import train_data_from_manifest

    return train_data_from_manifest(pd.read_csv(work / "manifest.csv"), pd.read_csv(work / "masks.csv"))


def _train(work, name, **kw):
    from maskcl.training.engine import train
    from maskcl.training.settings import TrainSettings

    out = work / name
    out.mkdir(exist_ok=True)
    return train(TrainSettings.from_dict(TINY), _data(work), seed=0, out_model=str(out / "model.pt"),
                 out_log=str(out / "train_log.csv"), state_dir=str(out / "state"), threads=1, progress=False, **kw)


def test_spcl_trains_through_the_engine_and_exports_an_evaluable_backbone(tiny):
    import pandas as pd

    from maskcl.evaluation import evaluate_checkpoint
    from maskcl.models.export import load_model
    from maskcl.training.methods import METHODS
    from maskcl.training.runtime import seed_everything
    from maskcl.training.settings import TrainSettings

    res = _train(tiny, "plain")
    assert res.epochs_run == 2 and res.resumed_from is None
    log = pd.read_csv(tiny / "plain" / "train_log.csv")
    assert log["epoch"].tolist() == [1, 2] and (log["contrast"] == log["loss"]).all()
    assert (log["contrast"] > 0).all() and log["clusters"].iloc[0] > 0
    # the random network clusters at epoch 1 already: the threshold is fixed there and kept at epoch 2
    assert log["indep_fixed_at_epoch"].tolist() == [1, 1]
    assert log["indep_iou_threshold"].nunique() == 1 and 0 < log["indep_iou_threshold"].iloc[0] <= 1
    # every sample has a class (outliers and ejected members are singletons)
    assert (log["classes"] >= log["reliable_clusters"] + log["singletons"]).all()

    net, _, meta = load_model(tiny / "plain" / "model.pt")
    assert meta["method"] == "spcl" and meta["epochs"] == 2 and meta["train_images"] == 144
    seed_everything(0)
    init = METHODS.build("spcl", TrainSettings.from_dict(TINY), _data(tiny), torch.device("cpu")).rgb_backbone()
    trained, start = net.state_dict(), init.state_dict()
    assert trained.keys() == start.keys()
    assert any(not torch.equal(trained[k], start[k]) for k in trained if trained[k].is_floating_point())
    metrics = evaluate_checkpoint("synthcc", tiny / "manifest.csv", tiny / "plain" / "model.pt",
                                  tiny / "plain" / "metrics.json", tiny / "plain" / "ranks.npz",
                                  settings={"batch_size": 64, "workers": 0}, device="cpu", threads=1)
    assert metrics and all(0.0 <= r["mAP"] <= 1.0 for r in metrics.values())


@pytest.mark.parametrize("eps, gap", [(0.6, 0.6), (0.7, 0.3)])
def test_spcl_refuses_a_gap_that_pushes_a_scale_out_of_0_1(tiny, eps, gap):
    from maskcl.errors import ConfigError
    from maskcl.training.methods import METHODS
    from maskcl.training.settings import TrainSettings

    s = TrainSettings.from_dict(dict(TINY, eps=eps, eps_gap=gap))
    with pytest.raises(ConfigError, match=r"SpCL's tight and loose DBSCANs run at eps - eps_gap and eps \+ eps_gap"):
        METHODS.build("spcl", s, _data(tiny), torch.device("cpu"))
    METHODS.build("spcl", TrainSettings.from_dict(dict(TINY, eps=eps, eps_gap=0.02)), _data(tiny), torch.device("cpu"))


@pytest.mark.slow
def test_spcl_resumed_after_epoch_1_equals_the_uninterrupted_run(tiny, monkeypatch):
    """Stopped after its first epoch and continued, a run gives the uninterrupted weights and log: the memory, the
    labels and the independence threshold fixed at the first epoch all travel in the training state."""
    import pandas as pd

    from maskcl.training.methods import MethodBase
    from maskcl.training.methods.spcl import SpCLMethod

    _train(tiny, "whole")
    _train(tiny, "halves", stop_after_epoch=0)
    assert not (tiny / "halves" / "model.pt").exists()
    state = torch.load(tiny / "halves" / "state" / "checkpoint.pt", weights_only=False)
    assert state["extra"]["spcl_criterion"]["fixed_at_epoch"] == 0
    assert state["extra"]["spcl_criterion"]["indep_threshold"] is not None
    res = _train(tiny, "halves")
    assert res.resumed_from == 1
    assert_trained_alike(tiny / "whole", tiny / "halves")

    # the same resume with the threshold forgotten: the second epoch fixes its own, and the log shows it
    def forget(self, st):
        MethodBase.load_extra_state(self, st)  # the labels only
    monkeypatch.setattr(SpCLMethod, "load_extra_state", forget)
    _train(tiny, "forgetful", stop_after_epoch=0)
    _train(tiny, "forgetful")
    forgetful = pd.read_csv(tiny / "forgetful" / "train_log.csv")
    whole = pd.read_csv(tiny / "whole" / "train_log.csv")
    assert forgetful["indep_fixed_at_epoch"].tolist() == [1, 2]
    assert forgetful.loc[1, "indep_iou_threshold"] != whole.loc[1, "indep_iou_threshold"]
