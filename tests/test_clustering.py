"""Tests of maskcl.clustering: kNN backends, sparse Jaccard vs a dense reference written here from
the published algorithm, DBSCAN vs sklearn, MaskCL's refinement vs a dense implementation, and the
pseudo-label quality helper on hand-computed values."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.cluster import DBSCAN
from sklearn.metrics import adjusted_rand_score

from maskcl.clustering.dense import dense_jaccard
from maskcl.clustering import (apply_outlier_policy, build_jaccard_graph, cluster,
                               cluster_with_distances, dbscan, jaccard_distance, knn_search,
                               neighbour_columns, pseudo_label_quality, refine_clusters)
from maskcl.clustering import jaccard as jaccard_module
from maskcl.clustering import knn as knn_module
from maskcl.clustering.reciprocal import k_reciprocal_support, query_expansion, reciprocal_sets
from maskcl.errors import ConfigError, MaskCLError



def _has_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


requires_faiss = pytest.mark.skipif(not _has_faiss(), reason="faiss is not installed")
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

# --------------------------------------------------------------------------- data


def clustered_features(n: int, d: int = 96, per: int = 12, noise: float = 1.0, seed: int = 0
                       ) -> np.ndarray:
    """Gaussian blobs plus exact duplicates, near-duplicates and far outliers, L2-normalised."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n // per + 1, d))
    x = centres[np.arange(n) // per] + noise * rng.standard_normal((n, d))
    x[n - 30:] = 4.0 * rng.standard_normal((30, d))          # outliers far from every blob
    x[[5, 7, 9]] = x[3]                                       # exact duplicates inside a blob
    x[n - 34:n - 30] = 4.0 * rng.standard_normal(d)           # an isolated group of 4 copies
    x[100] = x[101] + 1e-3 * rng.standard_normal(d)           # near-duplicate
    x[200] = x[201] + 1e-2 * rng.standard_normal(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# --------------------------------------------------------------------------- dense reference


def dense_jaccard_reference(x: np.ndarray, k1: int = 30, k2: int = 6,
                            slicing: str = "clustercontrast") -> np.ndarray:
    """The published k-reciprocal Jaccard distance with dense N x N float64 arrays (maskcl.clustering.dense)."""
    return dense_jaccard(x, k1, k2, slicing=slicing)


def densify(m: sp.spmatrix, fill: float = 1.0) -> np.ndarray:
    out = np.full(m.shape, fill)
    c = sp.coo_matrix(m)
    out[c.row, c.col] = c.data
    return out


@pytest.fixture(scope="module")
def features() -> np.ndarray:
    return clustered_features(900)


@pytest.fixture(scope="module")
def reference(features: np.ndarray) -> dict:
    return {s: dense_jaccard_reference(features, slicing=s) for s in ("clustercontrast", "paper")}


# --------------------------------------------------------------------------- kNN


@requires_faiss
def test_knn_backends_agree_including_duplicate_ties() -> None:
    x = clustered_features(400, d=48, seed=3)
    x[50:56] = x[50]  # six exact copies: ties the backends must order identically
    a = knn_search(x, 12, backend="faiss", device="cpu")
    b = knn_search(x, 12, backend="torch", device="cpu")
    assert a.backend == "faiss-cpu" and b.backend == "torch-cpu"
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.sq_distances, b.sq_distances, atol=1e-5)
    assert (a.indices[:, 0] == np.arange(400)).all()
    assert (a.sq_distances[:, 0] == 0).all() and (np.diff(a.sq_distances, axis=1) >= 0).all()
    for i in range(50, 56):  # self first, then the other copies by index
        assert list(a.indices[i, :6]) == [i] + [j for j in range(50, 56) if j != i]


@pytest.mark.parametrize("backend", [pytest.param("faiss", marks=requires_faiss), "torch"])
def test_knn_self_first_when_duplicates_outnumber_k(backend: str) -> None:
    x = np.repeat(np.eye(3, 8, dtype=np.float32), 20, axis=0)  # 3 points, 20 copies each
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        res = knn_search(x, 5, backend=backend, device=device)
        assert (res.indices[:, 0] == np.arange(60)).all()
        assert res.indices[25].tolist() == [25, 20, 21, 22, 23]
        assert (res.sq_distances[:, :5] == 0).all()


def test_knn_exact_against_brute_force() -> None:
    x = clustered_features(300, d=32, seed=5)
    d2 = ((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    res = knn_search(x, 10, backend="torch", device="cpu")
    np.testing.assert_allclose(res.sq_distances, np.sort(d2, axis=1)[:, :10], atol=1e-5)
    assert knn_search(torch.from_numpy(x), 10).indices.tolist() == res.indices.tolist()


def test_knn_backend_selection_is_explicit(monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    x = clustered_features(300, d=16)
    with pytest.raises(ConfigError, match="unknown kNN backend"):
        knn_search(x, 5, backend="annoy")
    monkeypatch.setattr(knn_module, "_faiss_module", lambda: None)
    with pytest.raises(ConfigError, match="faiss is not installed"):
        knn_search(x, 5, backend="faiss")
    with caplog.at_level(logging.INFO, logger="maskcl.clustering.knn"):
        res = knn_search(x, 5, backend="auto", device="cpu")
    assert res.backend == "torch-cpu" and "backend torch-cpu (requested auto)" in caplog.text
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            knn_search(x, 5, device="cuda")


@requires_cuda
def test_knn_cuda_matches_cpu() -> None:
    x = clustered_features(3000, d=256, seed=7)
    x[10:14] = x[10]
    gpu = knn_search(x, 31, backend="torch", device="cuda")
    cpu = knn_search(x, 31, backend="torch", device="cpu")
    assert gpu.backend == "torch-cuda"
    np.testing.assert_array_equal(gpu.indices, cpu.indices)
    np.testing.assert_allclose(gpu.sq_distances, cpu.sq_distances, atol=1e-5)


@pytest.mark.parametrize("bad", [np.zeros(5), np.zeros((0, 4)), np.full((4, 3), np.nan)])
def test_bad_features_are_user_errors(bad: np.ndarray) -> None:
    with pytest.raises(MaskCLError):
        knn_search(bad, 2)


# --------------------------------------------------------------------------- Jaccard


def test_neighbour_columns_variants() -> None:
    assert neighbour_columns(30, 6) == (30, 16, 6)
    assert neighbour_columns(30, 6, "paper") == (31, 16, 6)
    assert neighbour_columns(13, 6, "paper") == (14, 7, 6)  # round(6.5) == 6, as np.around
    assert neighbour_columns(4, 6) == (4, 3, 4)             # only k1 columns exist
    with pytest.raises(ConfigError, match="k1_slicing"):
        neighbour_columns(30, 6, "zhong")


@pytest.mark.parametrize("slicing", ["clustercontrast", "paper"])
def test_sparse_jaccard_matches_dense_reference(features: np.ndarray, reference: dict,
                                                slicing: str) -> None:
    ref = reference[slicing]
    got = jaccard_distance(features, 30, 6, k1_slicing=slicing)
    dense = densify(got)
    assert ((dense < 1) == (ref < 1)).all()              # same pairs with shared support
    assert np.abs(dense - ref).max() < 1e-5
    assert got.nnz == (ref < 1).sum()                    # every overlapping pair stored once
    assert got.has_sorted_indices and (abs(got - got.T) > 1e-12).nnz == 0
    np.testing.assert_array_equal(got.diagonal(), 0.0)
    # exact duplicates are stored as explicit (near-)zeros, so a sparse consumer sees them
    assert got[3, 5] < 1e-12 and 5 in got.indices[got.indptr[3]:got.indptr[4]]


def test_slicing_variants_differ(reference: dict) -> None:
    assert np.abs(reference["clustercontrast"] - reference["paper"]).max() > 1e-3


# --------------------------------------------------------------------------- the k-reciprocal core

# Four points on a line at 0, 1, 3 and 10: each kNN list, self first, nearest first.
_LINE_KNN = np.array([[0, 1, 2, 3], [1, 0, 2, 3], [2, 1, 0, 3], [3, 2, 1, 0]])


def _sets(m: sp.csr_matrix) -> list:
    return [sorted(m.indices[m.indptr[i]:m.indptr[i + 1]].tolist()) for i in range(m.shape[0])]


def test_k_reciprocal_core_both_slicings_by_hand() -> None:
    # clustercontrast, k1 = 2: two columns → 0 and 1 are mutual, 2 (whose 2nd is 1) and 3 alone;
    # R_half (round(1) + 1 = 2 columns) is the same, so the expansion adds nothing.
    cc, k_qe = k_reciprocal_support(_LINE_KNN, 2, 6, k1_slicing="clustercontrast")
    assert _sets(cc) == [[0, 1], [0, 1], [2], [3]] and k_qe == 2       # k2 capped at k1
    # paper, k1 = 2: three columns → {0, 1, 2} are pairwise mutual; 3's list holds 2 but not back.
    paper, k_qe = k_reciprocal_support(_LINE_KNN, 2, 6, k1_slicing="paper")
    assert _sets(paper) == [[0, 1, 2], [0, 1, 2], [0, 1, 2], [3]] and k_qe == 4   # k2 capped at N
    for m in (cc, paper):
        assert m.dtype == np.int32 and m.has_canonical_format and (m.data == 1).all()
    assert _sets(reciprocal_sets(_LINE_KNN, 3)) == _sets(paper)
    with pytest.raises(ValueError, match="kNN columns"):
        reciprocal_sets(_LINE_KNN[:, :2], 3)
    # query expansion averages the rows of the first k_qe neighbours
    qe = query_expansion(sp.identity(4, format="csr"), _LINE_KNN, 2).toarray()
    np.testing.assert_array_equal(qe[2], [0.0, 0.5, 0.5, 0.0])


def _slow_support(knn: np.ndarray, k1: int, columns: tuple) -> list:
    """R*(i) with Python sets, straight from the definition (the ``columns`` of R and R_half)."""
    n = knn.shape[0]

    def r(i: int, c: int) -> set:
        return {int(j) for j in knn[i, :c] if i in knn[j, :c]}

    out = []
    for i in range(n):
        full = r(i, columns[0])
        star = set(full)
        for c in full:
            half = r(c, columns[1])
            if len(half & full) > 2 / 3 * len(half):
                star |= half
        out.append(sorted(star))
    return out


def _old_rerank_support(knn: np.ndarray, k1: int) -> sp.csr_matrix:
    """The re-ranking's own R* before the shared core (kept verbatim as the regression target)."""
    n = knn.shape[0]

    def recip(k: int) -> sp.csr_matrix:
        cols = knn[:, :min(k + 1, knn.shape[1])]
        a = sp.csr_matrix((np.ones(cols.size, np.int32), cols.ravel(),
                           np.arange(0, cols.size + 1, cols.shape[1])), shape=(n, n))
        m = a.multiply(a.T).tocsr()
        m.sort_indices()
        return m

    r1, rh = recip(k1), recip(int(np.around(k1 / 2.0)))
    inter = r1.multiply(r1 @ rh.T).tocoo()
    keep = inter.data > 2.0 / 3.0 * np.diff(rh.indptr)[inter.col]
    acc = sp.csr_matrix((np.ones(int(keep.sum()), np.int32), (inter.row[keep], inter.col[keep])), shape=(n, n))
    rstar = ((r1 + acc @ rh) > 0).tocsr()
    rstar.sort_indices()
    return rstar


@pytest.mark.parametrize("k1", [1, 4, 13, 20])
def test_k_reciprocal_core_matches_slow_reference_and_old_rerank(k1: int) -> None:
    x = clustered_features(240, d=16, per=8, seed=k1)
    d2 = ((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    idx = np.broadcast_to(np.arange(len(x)), d2.shape)
    knn = np.lexsort((idx, idx != np.arange(len(x))[:, None], d2), axis=-1)   # stable, self first
    for slicing in ("clustercontrast", "paper"):
        columns = neighbour_columns(k1, 6, slicing, len(x))
        got, _ = k_reciprocal_support(knn[:, :max(columns)].copy(), k1, 6, k1_slicing=slicing)
        assert _sets(got) == _slow_support(knn, k1, columns)
    # the re-ranking caller (paper slicing on k1 + 1 columns) gives its old pattern exactly
    kk = min(k1 + 1, len(x))
    old = _old_rerank_support(knn[:, :kk].copy(), k1)
    new, _ = k_reciprocal_support(knn[:, :kk].copy(), k1, min(6, k1 + 1), k1_slicing="paper")
    np.testing.assert_array_equal(new.indptr, old.indptr)
    np.testing.assert_array_equal(new.indices, old.indices)


@pytest.mark.parametrize("max_distance", [0.3, 0.6, 0.9])
def test_thresholded_jaccard_is_exact(features: np.ndarray, reference: dict,
                                      max_distance: float) -> None:
    ref = reference["clustercontrast"]
    got = jaccard_distance(features, max_distance=max_distance)
    c = got.tocoo()
    assert ((densify(got, fill=np.inf) <= max_distance) == (ref <= max_distance)).all()
    assert (c.data <= max_distance).all()
    assert np.abs(c.data - ref[c.row, c.col]).max() < 1e-5


@requires_faiss
def test_jaccard_is_deterministic_and_backends_agree(features: np.ndarray) -> None:
    a = jaccard_distance(features, max_distance=0.9, backend="faiss", device="cpu")
    again = jaccard_distance(features, max_distance=0.9, backend="faiss", device="cpu")
    assert (a != again).nnz == 0
    b = jaccard_distance(features, max_distance=0.9, backend="torch", device="cpu")
    # same pairs; values differ only by the backends' float32 rounding of squared distances
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.data, b.data, atol=1e-6)


def test_jaccard_graph_rows_sum_to_one(features: np.ndarray) -> None:
    graph = build_jaccard_graph(features)
    np.testing.assert_allclose(graph.row_sums(), 1.0, atol=1e-12)
    assert graph.knn_backend in ("faiss-cpu", "faiss-gpu", "torch-cpu", "torch-cuda")


# --------------------------------------------------------------------------- DBSCAN


def tight_features(n: int, d: int = 48, seed: int = 1) -> np.ndarray:
    """Late-training-like features: tight clusters of 4-40 points in shuffled order, with
    near-duplicate pairs (consecutive frames), so that R* reaches far beyond the kNN lists."""
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(rng.integers(4, 41)))
    sizes[-1] -= sum(sizes) - n
    sizes = [s for s in sizes if s > 0]
    label = np.repeat(np.arange(len(sizes)), sizes)
    x = rng.standard_normal((len(sizes), d))[label] + 0.35 * rng.standard_normal((n, d))
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    for s in starts[::3]:
        x[s + 1] = x[s] + 1e-3 * rng.standard_normal(d)
    perm = rng.permutation(n)
    return (x[perm] / np.linalg.norm(x[perm], axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("route", ["product", "gather"])
def test_pair_sq_distances_both_routes_exact(monkeypatch: pytest.MonkeyPatch, route: str) -> None:
    x = tight_features(400)
    rng = np.random.default_rng(0)
    a = np.sort(rng.integers(0, 400, 3000))
    b = rng.integers(0, 400, 3000)
    b[:50] = a[:50]  # self pairs: distance exactly 0 after clipping
    monkeypatch.setattr(jaccard_module, "_PRODUCT_PER_PAIR", 10**9 if route == "product" else 0)
    monkeypatch.setattr(jaccard_module, "_PAIR_CHUNK", 257)  # several chunks on the gather route
    got = jaccard_module._pair_sq_distances(x, a, b)
    xd = x.astype(np.float64)
    expected = ((xd[a] - xd[b]) ** 2).sum(1)
    assert np.abs(got - expected).max() < 1e-5
    assert (got >= 0).all() and got[:50].max() < 1e-5


def test_jaccard_exact_on_tight_clusters_with_near_duplicates() -> None:
    x = tight_features(700)
    knn = knn_search(x, 30)
    support, _ = k_reciprocal_support(knn.indices, 30, 6, k1_slicing="clustercontrast")
    _, outside = jaccard_module._weights(x, knn, support)
    assert outside > 1000  # the hard regime: many R* pairs need distances the kNN did not return
    graph = build_jaccard_graph(x, 30, 6, knn=knn)
    ref = dense_jaccard_reference(x)
    dense = densify(graph.distances(1.0))
    assert ((dense < 1) == (ref < 1)).all()
    assert np.abs(dense - ref).max() < 1e-5
    res = cluster_with_distances(x, eps=0.6, min_samples=4, tight_eps=0.58)
    np.testing.assert_array_equal(
        res.dbscan_labels, DBSCAN(eps=0.6, min_samples=4, metric="precomputed").fit_predict(ref))
    np.testing.assert_array_equal(
        res.tight_labels, DBSCAN(eps=0.58, min_samples=4, metric="precomputed").fit_predict(ref))


def test_dbscan_on_non_canonical_csr_sums_duplicates() -> None:
    dist = random_sparse_distances(200, 3)
    coo = dist.tocoo()
    half = coo.data / 2.0  # every entry split in two stored halves, rows unsorted
    order = np.random.default_rng(0).permutation(2 * coo.nnz)
    rows = np.concatenate((coo.row, coo.row))[order]
    cols = np.concatenate((coo.col, coo.col))[order]
    vals = np.concatenate((half, half))[order]
    by_row = np.argsort(rows, kind="stable")  # CSR rows, columns left shuffled and doubled
    rebuilt = sp.csr_matrix((vals[by_row], cols[by_row], np.concatenate(
        ([0], np.cumsum(np.bincount(rows, minlength=200))))), shape=dist.shape)
    assert not rebuilt.has_canonical_format
    for eps, min_samples in ((0.3, 3), (0.5, 5)):
        np.testing.assert_array_equal(dbscan(rebuilt, eps, min_samples), dbscan(dist, eps, min_samples))


def random_sparse_distances(n: int, seed: int) -> sp.csr_matrix:
    """Symmetric random distances with explicit zeros and some missing diagonal entries."""
    rng = np.random.default_rng(seed)
    m = sp.random(n, n, density=0.04, random_state=seed, format="coo")
    vals = np.where(rng.random(m.nnz) < 0.1, 0.0, rng.random(m.nnz))
    upper = m.row < m.col
    rows = np.concatenate((m.row[upper], m.col[upper], np.arange(0, n, 2)))
    cols = np.concatenate((m.col[upper], m.row[upper], np.arange(0, n, 2)))
    data = np.concatenate((vals[upper], vals[upper], np.zeros(len(range(0, n, 2)))))
    return sp.csr_matrix((data, (rows, cols)), shape=(n, n))


@pytest.mark.parametrize("seed", range(6))
def test_dbscan_equals_sklearn(seed: int) -> None:
    dist = random_sparse_distances(300, seed)
    for eps, min_samples in ((0.3, 3), (0.5, 5), (0.15, 2)):
        expected = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(dist)
        np.testing.assert_array_equal(dbscan(dist, eps, min_samples), expected)


def test_dbscan_border_joins_first_cluster_and_zeros_count() -> None:
    # cliques 0-3 and 5-8 are cores; border sample 4 touches one core of each; 9 is alone
    n = 10
    pairs = [(a, b) for g in (range(0, 4), range(5, 9)) for a in g for b in g if a < b]
    pairs += [(3, 4), (4, 5)]
    rows, cols = zip(*(pairs + [(b, a) for a, b in pairs]))
    expected = [0, 0, 0, 0, 0, 1, 1, 1, 1, -1]
    dist = sp.csr_matrix((np.full(len(rows), 0.1), (rows, cols)), shape=(n, n))
    np.testing.assert_array_equal(dbscan(dist, 0.5, 4), expected)
    # the same graph with explicit zeros: stored zeros are neighbours, absent entries are not
    zero = sp.csr_matrix((np.zeros(len(rows)), (rows, cols)), shape=(n, n))
    assert zero.nnz == len(rows)
    np.testing.assert_array_equal(dbscan(zero, 0.5, 4), expected)
    empty = sp.csr_matrix((n, n))  # what the zeros become if a library drops them: all noise
    np.testing.assert_array_equal(dbscan(empty, 0.5, 4),
                                  DBSCAN(eps=0.5, min_samples=4, metric="precomputed")
                                  .fit_predict(empty))
    assert (dbscan(empty, 0.5, 4) == -1).all()


def test_cluster_matches_dbscan_on_dense_reference(features: np.ndarray, reference: dict) -> None:
    ref = reference["clustercontrast"]
    expected = DBSCAN(eps=0.6, min_samples=4, metric="precomputed").fit_predict(ref)
    expected_tight = DBSCAN(eps=0.58, min_samples=4, metric="precomputed").fit_predict(ref)
    res = cluster_with_distances(features, eps=0.6, min_samples=4, tight_eps=0.58)
    assert adjusted_rand_score(expected, res.dbscan_labels) == 1.0
    np.testing.assert_array_equal(res.dbscan_labels, expected)
    np.testing.assert_array_equal(res.tight_labels, expected_tight)
    assert res.num_clusters == expected.max() + 1 and res.num_outliers == (expected < 0).sum()
    assert res.labels.dtype == np.int64
    np.testing.assert_array_equal(cluster(features), expected)
    # the four isolated copies only cluster because their zero distances are stored explicitly
    assert len(set(res.dbscan_labels[-34:-30])) == 1 and res.dbscan_labels[-34] >= 0
    # every pair refinement reads (inside a loose or tight cluster) is stored with its value
    stored = densify(res.distances)
    for labels in (expected, expected_tight):
        same = (labels[:, None] == labels[None, :]) & (labels[:, None] >= 0) & (ref < 1)
        assert np.abs(stored[same] - ref[same]).max() < 1e-5
    near = ref <= 0.6
    assert np.abs(stored[near] - ref[near]).max() < 1e-5
    assert ((stored < 1) <= (ref < 1)).all()


@pytest.mark.parametrize("n", [1, 2, 5, 40])
def test_tiny_inputs(n: int) -> None:
    x = clustered_features(300, d=16)[:n]
    d = jaccard_distance(x)
    assert d.shape == (n, n) and (d.diagonal() == 0).all()
    labels = cluster(x, min_samples=2, outliers="singleton")
    assert labels.shape == (n,) and (labels >= 0).all()
    res = cluster_with_distances(x, min_samples=2, tight_eps=0.5)
    refined = refine_clusters(res.distances, res.labels, tight_labels=res.tight_labels)
    assert sorted(set(refined.labels.tolist())) == list(range(refined.labels.max() + 1))


def test_outlier_policies() -> None:
    raw = np.array([0, -1, 1, -1, 0, 2, -1])
    np.testing.assert_array_equal(apply_outlier_policy(raw, "drop"), raw)
    np.testing.assert_array_equal(apply_outlier_policy(raw, "singleton"), [0, 3, 1, 4, 0, 2, 5])
    with pytest.raises(ConfigError, match="outlier policy"):
        apply_outlier_policy(raw, "keep")


def test_cluster_argument_errors(features: np.ndarray) -> None:
    with pytest.raises(ConfigError, match="eps"):
        cluster(features, eps=1.0)
    with pytest.raises(ConfigError, match="tight_eps"):
        cluster_with_distances(features, eps=0.5, tight_eps=0.55)
    with pytest.raises(ConfigError, match="max_distance"):
        cluster_with_distances(features, eps=0.6, max_distance=0.5)
    with pytest.raises(ConfigError, match="outlier policy"):
        cluster(features, outliers="keep")


# --------------------------------------------------------------------------- refinement


def dense_refinement(dist: np.ndarray, loose: np.ndarray, tight: np.ndarray, ratio: float = 1.0,
                     official: bool = False) -> np.ndarray:
    """MaskCL's cluster_finement_new step by step on a dense matrix, plus contiguous relabelling."""

    def singletons(lab: np.ndarray) -> np.ndarray:
        lab = lab.copy()
        noise = np.flatnonzero(lab < 0)
        lab[noise] = lab.max(initial=-1) + 1 + np.arange(noise.size)
        return lab

    loose, tight = singletons(loose), singletons(tight)
    dist = dist.copy()
    np.fill_diagonal(dist, 0.0)
    same_l = (loose[:, None] == loose[None, :]).astype(float)
    same_t = (tight[:, None] == tight[None, :]).astype(float)
    per_sample = (dist * same_l).sum(1) / same_l.sum(1) ** 2
    cluster_avg = np.zeros(loose.max() + 1)
    np.add.at(cluster_avg, loose, per_sample)
    pairs = (same_l == 1 - same_t) if official else (same_l == 1) & (same_t == 0)
    m = pairs.sum(1)
    s = (pairs * dist).sum(1) / np.maximum(m, 1) ** 2
    tight_sum = np.zeros(tight.max() + 1)
    np.add.at(tight_sum, tight, s)
    refined = loose.copy()
    counter = 0
    for i in range(len(loose)):
        if not ratio * tight_sum[tight[i]] <= cluster_avg[loose[i]]:
            refined[i] = len(cluster_avg) + counter
            counter += 1
    return np.unique(refined, return_inverse=True)[1]


@pytest.mark.parametrize("official", [False, True])
def test_refinement_matches_dense_implementation(features: np.ndarray, reference: dict,
                                                 official: bool) -> None:
    ref = reference["clustercontrast"]
    res = cluster_with_distances(features, eps=0.6, tight_eps=0.5)
    for ratio in (0.5, 1.0, 20.0):
        got = refine_clusters(res.distances, res.dbscan_labels, tight_labels=res.tight_labels,
                              ratio=ratio, pair_rule="official" if official else "intended")
        expected = dense_refinement(ref, res.dbscan_labels, res.tight_labels, ratio, official)
        np.testing.assert_array_equal(got.labels, expected)
    assert got.ejected.any()  # the large ratio does eject samples: the comparison is not vacuous


def test_refinement_computes_tight_labels_itself(features: np.ndarray) -> None:
    res = cluster_with_distances(features, eps=0.6, tight_eps=0.58)
    a = refine_clusters(res.distances, res.dbscan_labels, eps=0.6, eps_gap=0.02)
    b = refine_clusters(res.distances, res.dbscan_labels, tight_labels=res.tight_labels)
    np.testing.assert_array_equal(a.tight_labels, res.tight_labels)
    np.testing.assert_array_equal(a.labels, b.labels)


def crafted_refinement_case() -> tuple:
    """Loose cluster 0: tight parts B1 (0-3), B2 (4-7) close together and A (8-13) far away.
    Loose cluster 1: two equally far halves (14-17, 18-21), both dissolve. Loose cluster 2 (22-25)
    is one tight cluster. Sample 26 is noise. Cross pairs of A and of cluster 1 are left out of
    the matrix: the refinement must count them as 1.0."""
    n = 27
    d = np.ones((n, n))
    groups = [range(0, 4), range(4, 8), range(8, 14), range(14, 18), range(18, 22), range(22, 26)]
    for g in groups:
        for i in g:
            for j in g:
                d[i, j] = 0.05
    d[np.ix_(range(0, 4), range(4, 8))] = d[np.ix_(range(4, 8), range(0, 4))] = 0.3
    np.fill_diagonal(d, 0.0)
    loose = np.array([0] * 14 + [1] * 8 + [2] * 4 + [-1])
    tight = np.array([0] * 4 + [1] * 4 + [2] * 6 + [3] * 4 + [4] * 4 + [5] * 4 + [-1])
    stored = np.argwhere(d < 1)
    sparse = sp.csr_matrix((d[stored[:, 0], stored[:, 1]], (stored[:, 0], stored[:, 1])),
                           shape=(n, n))
    return sparse, d, loose, tight


def test_refinement_dissolves_far_subcluster_and_relabels_contiguously() -> None:
    sparse, dense, loose, tight = crafted_refinement_case()
    res = refine_clusters(sparse, loose, tight_labels=tight)
    labels = res.labels
    assert res.ejected.tolist() == [False] * 8 + [True] * 6 + [True] * 8 + [False] * 5
    assert len(set(labels[:8])) == 1 and len(set(labels[22:26])) == 1
    assert len(set(labels[8:22].tolist() + [labels[26]])) == 15  # all singletons
    assert sorted(set(labels.tolist())) == list(range(labels.max() + 1)) == list(range(17))
    assert res.num_clusters == 2 and res.num_singletons == 15
    # A_0 = (0.05*(12+12+30) + 0.3*32 + 1.0*96) / 14² and S_A = 6 * (8 * 1.0 / 8²)
    assert res.cluster_score[0] == pytest.approx((0.05 * 54 + 0.3 * 32 + 96) / 196)
    assert res.tight_score[8] == pytest.approx(6 * 8 / 64)
    np.testing.assert_array_equal(labels, dense_refinement(dense, loose, tight))


def test_official_pair_rule_counts_cross_loose_same_tight_pairs() -> None:
    sparse, dense, loose, tight = crafted_refinement_case()
    tight = tight.copy()
    tight[22] = 0  # a border sample whose tight cluster (0) sits in another loose cluster
    intended = refine_clusters(sparse, loose, tight_labels=tight)
    official = refine_clusters(sparse, loose, tight_labels=tight, pair_rule="official")
    np.testing.assert_array_equal(intended.labels, dense_refinement(dense, loose, tight))
    np.testing.assert_array_equal(official.labels,
                                  dense_refinement(dense, loose, tight, official=True))
    assert not np.array_equal(intended.tight_score, official.tight_score)


def test_refinement_argument_errors() -> None:
    sparse, _, loose, tight = crafted_refinement_case()
    with pytest.raises(ConfigError, match="pair_rule"):
        refine_clusters(sparse, loose, tight_labels=tight, pair_rule="xor")
    with pytest.raises(ConfigError, match="tight_labels"):
        refine_clusters(sparse, loose, tight_labels=tight[:-1])


# --------------------------------------------------------------------------- quality


def test_quality_on_hand_made_labels() -> None:
    pred = np.array([0, 0, 1, 1, 1, -1])
    truth = np.array([0, 0, 0, 1, 1, 1])
    q = pseudo_label_quality(pred, truth, clothes=np.array([0, 0, 1, 2, 2, 3]))
    assert (q.num_samples, q.num_clusters, q.num_singletons, q.num_outliers) == (6, 2, 0, 1)
    assert q.identity.purity == pytest.approx(5 / 6)
    assert q.identity.ari == pytest.approx(2 / 17)  # (2 - 1.6) / (5 - 1.6), by hand
    mi = (math.log(2) / 3 + math.log(2 / 3) / 6 + math.log(4 / 3) / 3 + math.log(2) / 6)
    h_pred = -sum(p * math.log(p) for p in (2 / 6, 3 / 6, 1 / 6))
    assert q.identity.nmi == pytest.approx(mi / ((h_pred + math.log(2)) / 2))
    assert q.clothes.purity == pytest.approx(5 / 6)
    assert q.as_dict()["identity_ari"] == pytest.approx(2 / 17)
    assert set(q.as_dict()) >= {"clothes_nmi", "num_outliers"}


def test_quality_perfect_and_outlier_policy_invariant() -> None:
    truth = np.array([4, 4, 9, 9, 9, 7])
    perfect = pseudo_label_quality(np.array([1, 1, 0, 0, 0, 2]), truth)
    assert (perfect.identity.nmi, perfect.identity.ari, perfect.identity.purity) == \
        pytest.approx((1.0, 1.0, 1.0))
    assert perfect.num_singletons == 1 and perfect.clothes is None
    dropped = np.array([0, 0, -1, 1, 1, -1])
    a = pseudo_label_quality(dropped, truth)
    b = pseudo_label_quality(apply_outlier_policy(dropped, "singleton"), truth)
    assert a.identity == b.identity and a.num_outliers == 2 and b.num_singletons == 2
    with pytest.raises(ConfigError, match="identities"):
        pseudo_label_quality(dropped, truth[:-1])
