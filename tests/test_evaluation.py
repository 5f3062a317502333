"""Tests of maskcl.evaluation: metrics against hand-computed values and a slow reference, protocols
on fake manifests, chunk invariance, re-ranking against a dense reference, output files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from maskcl.errors import MaskCLError
from maskcl.evaluation import (EvalSettings, EvaluationError, evaluate, evaluate_chunks, evaluate_features,
                               evaluate_run, extract_features, headline_protocol, k_reciprocal_rerank, list_protocols,
                               pairwise_distance, provenance, required_rows, required_splits, run_protocols,
                               single_shot_galleries, write_metrics_json)
from maskcl.evaluation import _kernels
from maskcl.evaluation.metrics import _labels, _same_id_items

# ----------------------------------------------------------------------------- slow references


def reference_metrics(dist, q_pids, g_pids, q_cams, g_cams, q_clo, g_clo, rule):
    """Per-query AP / first good position straight from §2.1 (stable argsort of every row)."""
    aps, firsts = [], []
    for i in range(dist.shape[0]):
        order = np.argsort(dist[i], kind="stable")
        same = g_pids[order] == q_pids[i]
        same_cam = g_cams[order] == q_cams[i]
        if rule == "standard":
            good, junk = same & ~same_cam, same & same_cam
        else:
            same_clo = g_clo[order] == q_clo[i]
            if rule == "cc":
                good, junk = same & ~same_cam & ~same_clo, same & (same_cam | same_clo)
            else:
                good, junk = same & ~same_cam & same_clo, same & (same_cam | ~same_clo)
        hits = np.flatnonzero(good[~junk])
        if hits.size == 0:
            aps.append(np.nan)
            firsts.append(-1)
            continue
        aps.append(np.mean(np.arange(1, hits.size + 1) / (hits + 1.0)))
        firsts.append(hits[0])
    return np.array(aps), np.array(firsts)


def dense_rerank(qf, gf, k1, k2, lam, metric):
    """Zhong et al.'s re-ranking with dense (Q+G)² matrices, written from the definition."""
    f = np.vstack([qf, gf]).astype(np.float64)
    nq, n = len(qf), len(qf) + len(gf)
    if metric == "cosine":
        f = f / np.linalg.norm(f, axis=1, keepdims=True)
        d = 1.0 - f @ f.T
    else:
        sq = (f * f).sum(1)
        d = np.maximum(sq[:, None] + sq[None, :] - 2.0 * f @ f.T, 0.0)
    rank = np.argsort(d, axis=1, kind="stable")
    dn = d / d.max(axis=1, keepdims=True)

    def recip(i, k):
        fw = rank[i, :k + 1]
        return fw[(rank[fw, :k + 1] == i).any(axis=1)]

    kh = int(np.around(k1 / 2))
    v = np.zeros((n, n))
    for i in range(n):
        ri = recip(i, k1)
        exp = list(ri)
        for c in ri:
            rc = recip(c, kh)
            if len(np.intersect1d(rc, ri)) > 2.0 / 3.0 * len(rc):
                exp.extend(rc)
        exp = np.unique(exp)
        w = np.exp(-dn[i, exp])
        v[i, exp] = w / w.sum()
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(0) for i in range(n)])
    jac = np.empty((nq, n - nq))
    for i in range(nq):
        for j in range(n - nq):
            s = np.minimum(v[i], v[nq + j]).sum()
            jac[i, j] = 1.0 - s / (2.0 - s)
    return (1 - lam) * jac + lam * dn[:nq, nq:]


# ----------------------------------------------------------------------------- hand-computed cases

# One query: pid 1, camera 0, clothes 10. Gallery in ascending distance:
#   a pid1 cam1 clo10 | b pid1 cam0 clo11 | c pid2 | d pid1 cam2 clo11 | e pid3 | f pid1 cam1 clo12 | g pid1 cam2 clo10
HAND_D = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]])
HAND_G = dict(pids=np.array([1, 1, 2, 1, 3, 1, 1]), cams=np.array([1, 0, 1, 2, 0, 1, 2]),
              clothes=np.array([10, 11, 20, 11, 30, 12, 10]))


def _hand(rule):
    return evaluate(HAND_D, [1], HAND_G["pids"], [0], HAND_G["cams"], [10], HAND_G["clothes"], rule=rule)


def test_standard_rule_by_hand():
    # junk: b (same camera). Ranked list a c d e f g; good a d f g at positions 0 2 4 5
    r = _hand("standard")
    assert r.ap[0] == pytest.approx((1 / 1 + 2 / 3 + 3 / 5 + 4 / 6) / 4)
    assert r["mAP"] == pytest.approx(0.7333333333333333)
    assert r.mINP == pytest.approx(4 / 6)
    assert r.first_match[0] == 0 and r.num_good[0] == 4
    np.testing.assert_array_equal(r.cmc, [1, 1, 1, 1, 1, 1, 1])


def test_cc_rule_by_hand():
    # junk: a (same clothes), b (same camera), g (same clothes). Ranked c d e f; good d f at 1 and 3
    r = _hand("cc")
    assert r.mAP == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert r.mINP == pytest.approx(2 / 4)
    assert r.first_match[0] == 1
    np.testing.assert_array_equal(r.cmc, [0, 1, 1, 1, 1, 1, 1])
    assert r.rank(1) == 0.0 and r["rank2"] == 1.0


def test_sc_rule_by_hand():
    # junk: b (same camera), d and f (other clothes). Ranked a c e g; good a g at 0 and 3
    r = _hand("sc")
    assert r.mAP == pytest.approx((1 / 1 + 2 / 4) / 2)
    assert r.mINP == pytest.approx(2 / 4)
    assert r.rank(1) == 1.0


def test_skipped_queries_and_cmc_by_hand():
    # q0 (pid 5, cam 0): gallery pid5@cam0 is junk, pid5@cam1 is good at ranked position 2 (after 2 distractors)
    # q1 (pid 7): not in the gallery → skipped; q2 (pid 6, cam 1): good at position 0 and 3
    d = np.array([[0.9, 0.1, 0.2, 0.3, 0.5, 0.8],
                  [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
                  [0.5, 0.6, 0.7, 0.1, 0.9, 0.8]])
    g_pids = np.array([5, 6, 8, 6, 5, 6])
    g_cams = np.array([1, 0, 0, 0, 0, 1])
    r = evaluate(d, [5, 7, 6], g_pids, [0, 0, 1], g_cams)
    # q0 ranked (junk index 4 removed): 1(pid6) 2(pid8) 3(pid6) 5(pid6) 0(pid5) → good at position 4
    # q2 ranked: 3(pid6 cam0) 0 1(pid6 cam0) 2 5(pid6 cam1 → junk) 4 → good 3 and 1 at positions 0 and 2
    assert r.num_valid_queries == 2 and r.num_skipped_queries == 1
    assert np.isnan(r.ap[1]) and r.first_match[1] == -1
    assert r.ap[0] == pytest.approx(1 / 5)
    assert r.ap[2] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert r.mAP == pytest.approx((1 / 5 + (1 + 2 / 3) / 2) / 2)
    np.testing.assert_allclose(r.cmc, [0.5, 0.5, 0.5, 0.5, 1.0, 1.0])


def test_ties_are_broken_by_gallery_index():
    # all distances equal: the ranked list is the gallery order
    d = np.zeros((1, 4), np.float32)
    r = evaluate(d, [1], [2, 1, 3, 1], [0], [1, 1, 1, 1])
    assert r.first_match[0] == 1
    assert r.ap[0] == pytest.approx((1 / 2 + 2 / 4) / 2)
    rev = evaluate(d, [1], [1, 3, 1, 2], [0], [1, 1, 1, 1])
    assert rev.ap[0] == pytest.approx((1 / 1 + 2 / 3) / 2)


def test_bad_inputs_raise_one_line_errors():
    d = np.zeros((1, 2))
    with pytest.raises(EvaluationError, match="unknown rule"):
        evaluate(d, [1], [1, 2], [0], [1, 1], rule="xx")
    with pytest.raises(EvaluationError, match="needs q_clothes"):
        evaluate(d, [1], [1, 2], [0], [1, 1], rule="cc")
    with pytest.raises(EvaluationError, match="non-finite"):
        evaluate(np.array([[np.nan, 1.0]]), [1], [1, 2], [0], [1, 1])
    with pytest.raises(EvaluationError, match="rows but there are"):
        evaluate(d, [1, 2], [1, 2], [0, 0], [1, 1])
    with pytest.raises(EvaluationError, match="expected"):
        evaluate(np.zeros((1, 3)), [1], [1, 2], [0], [1, 1])
    assert issubclass(EvaluationError, MaskCLError)


# ----------------------------------------------------------------------------- properties


@st.composite
def ranking_problem(draw, ties: bool):
    nq = draw(st.integers(1, 8))
    ng = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if ties:
        dist = rng.integers(0, 4, (nq, ng)).astype(draw(st.sampled_from([np.float32, np.float64])))
    else:
        dist = np.stack([rng.permutation(ng) for _ in range(nq)]).astype(np.float64) + rng.random((nq, 1))
    lab = lambda n, k: rng.integers(0, k, n)  # noqa: E731
    return dist, lab(nq, 4), lab(ng, 4), lab(nq, 3), lab(ng, 3), lab(nq, 3), lab(ng, 3)


@settings(max_examples=150, deadline=None)
@given(ranking_problem(ties=True), st.sampled_from(["standard", "cc", "sc"]), st.sampled_from([0, 32]))
def test_matches_slow_reference_with_ties(problem, rule, linear_max):
    dist, *labels = problem
    saved = _kernels.LINEAR_MAX_ITEMS
    _kernels.LINEAR_MAX_ITEMS = linear_max        # 0: every query takes the binary-search path
    try:
        r = evaluate(dist, *labels, rule=rule)
    finally:
        _kernels.LINEAR_MAX_ITEMS = saved
    ap, first = reference_metrics(dist, *labels, rule)
    np.testing.assert_array_equal(r.first_match, first)
    np.testing.assert_allclose(r.ap, ap, rtol=0, atol=1e-12)
    valid = first >= 0
    assert r.num_valid_queries == valid.sum()
    if valid.any():
        assert r.mAP == pytest.approx(np.mean(ap[valid]), abs=1e-12)
        for k in range(1, dist.shape[1] + 1):
            assert r.rank(k) == pytest.approx(np.mean(first[valid] < k))


@settings(max_examples=60, deadline=None)
@given(ranking_problem(ties=False), st.sampled_from(["standard", "cc", "sc"]), st.integers(0, 2**32 - 1))
def test_invariant_to_gallery_permutation(problem, rule, seed):
    dist, qp, gp, qc, gc, qcl, gcl = problem
    perm = np.random.default_rng(seed).permutation(dist.shape[1])
    a = evaluate(dist, qp, gp, qc, gc, qcl, gcl, rule=rule)
    b = evaluate(dist[:, perm], qp, gp[perm], qc, gc[perm], qcl, gcl[perm], rule=rule)
    np.testing.assert_array_equal(a.ap, b.ap)
    np.testing.assert_array_equal(a.first_match, b.first_match)
    np.testing.assert_array_equal(a.cmc, b.cmc)


@settings(max_examples=60, deadline=None)
@given(ranking_problem(ties=True), st.sampled_from(["standard", "cc", "sc"]))
def test_perfect_ranking_gives_map_one(problem, rule):
    _, qp, gp, qc, gc, qcl, gcl = problem
    same, same_cam, same_clo = qp[:, None] == gp[None], qc[:, None] == gc[None], qcl[:, None] == gcl[None]
    good = same & ~same_cam & {"standard": True, "cc": ~same_clo, "sc": same_clo}[rule]
    dist = np.where(good, 0.0, 1.0)
    r = evaluate(dist, qp, gp, qc, gc, qcl, gcl, rule=rule)
    if good.any(axis=1).any():
        assert r.mAP == 1.0 and r.mINP == 1.0 and r.rank(1) == 1.0
    assert r.num_valid_queries == good.any(axis=1).sum()


def test_binary_search_and_counting_paths_agree():
    rng = np.random.default_rng(3)
    dist = rng.integers(0, 20, (30, 500)).astype(np.float32)
    q = _labels("q", rng.integers(0, 2, 30), np.zeros(30), None)
    g = _labels("g", rng.integers(0, 2, 500), np.zeros(500), None)
    ptr, items = _same_id_items(q, g)
    linear = _kernels.same_id_ranks(dist, 0, ptr, items, 10**9)
    bsearch = _kernels.same_id_ranks(dist, 0, ptr, items, 0)
    np.testing.assert_array_equal(linear, bsearch)
    # and both equal the position in a stable sort
    rank_of = np.argsort(np.argsort(dist[7], kind="stable"), kind="stable")
    np.testing.assert_array_equal(linear[ptr[7]:ptr[8]], rank_of[items[ptr[7]:ptr[8]]])


# ----------------------------------------------------------------------------- chunking


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_chunked_features_equal_dense(metric):
    rng = np.random.default_rng(0)
    qf, gf = rng.standard_normal((150, 16)).astype(np.float32), rng.standard_normal((400, 16)).astype(np.float32)
    labels = (rng.integers(0, 30, 150), rng.integers(0, 30, 400), rng.integers(0, 4, 150), rng.integers(0, 4, 400),
              rng.integers(0, 3, 150), rng.integers(0, 3, 400))
    dense = evaluate(pairwise_distance(qf, gf, metric), *labels, rule="cc")
    for cs in (1, 64, 100, 1000, None):
        r = evaluate_features(qf, gf, *labels, rule="cc", metric=metric, chunk_size=cs)
        for key in ("ap", "inp", "first_match", "cmc"):
            np.testing.assert_array_equal(r[key], dense[key])
        assert r.mAP == dense.mAP and r.mINP == dense.mINP


def test_distances_match_definitions_and_rank_alike_when_normalised():
    rng = np.random.default_rng(1)
    qf, gf = rng.standard_normal((5, 8)), rng.standard_normal((9, 8))
    np.testing.assert_allclose(pairwise_distance(qf, gf), ((qf[:, None] - gf[None]) ** 2).sum(-1), atol=1e-12)
    qn, gn = qf / np.linalg.norm(qf, axis=1, keepdims=True), gf / np.linalg.norm(gf, axis=1, keepdims=True)
    cos = pairwise_distance(qf, gf, "cosine")
    np.testing.assert_allclose(cos, 1 - qn @ gn.T, atol=1e-12)
    np.testing.assert_allclose(pairwise_distance(qn, gn), 2 * cos, atol=1e-12)
    with pytest.raises(EvaluationError, match="unknown metric"):
        pairwise_distance(qf, gf, "l1")


def test_chunks_out_of_order_or_incomplete_are_refused():
    d = np.zeros((4, 3))
    lab = ([1, 1, 1, 1], [1, 2, 3], [0, 0, 0, 0], [1, 1, 1])
    with pytest.raises(EvaluationError, match="out of order"):
        evaluate_chunks([(2, d[2:]), (0, d[:2])], *lab)
    with pytest.raises(EvaluationError, match="covered 2 of 4"):
        evaluate_chunks([(0, d[:2])], *lab)


def test_topk_is_stable():
    d = np.array([[0.3, 0.1, 0.3, 0.2, 0.1]])
    ev = evaluate_chunks([(0, d)], [1], [1, 2, 3, 4, 5], [0], [1] * 5, topk=4)
    np.testing.assert_array_equal(ev.topk, [[1, 4, 3, 0]])
    ev = evaluate_chunks([(0, d[:, :2])], [1], [1, 2], [0], [1, 1], topk=4)
    np.testing.assert_array_equal(ev.topk, [[1, 0]])


# ----------------------------------------------------------------------------- re-ranking


@pytest.mark.parametrize("metric,k1,k2,chunk", [("euclidean", 20, 6, None), ("cosine", 20, 6, 64),
                                                ("euclidean", 5, 1, 64), ("cosine", 7, 3, None),
                                                ("euclidean", 100, 6, None)])
def test_rerank_equals_dense_reference(metric, k1, k2, chunk):
    rng = np.random.default_rng(k1 + k2)
    qf, gf = rng.standard_normal((23, 8)), rng.standard_normal((70, 8))
    ref = dense_rerank(qf, gf, k1, k2, 0.3, metric)
    got = k_reciprocal_rerank(qf, gf, metric=metric, k1=k1, k2=k2, lambda_value=0.3, chunk_size=chunk)
    assert got.shape == (23, 70)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10)


def test_rerank_parameters_checked():
    x = np.zeros((3, 2))
    with pytest.raises(EvaluationError, match="k2"):
        k_reciprocal_rerank(x, x, k1=2, k2=5)
    with pytest.raises(EvaluationError, match="lambda"):
        k_reciprocal_rerank(x, x, lambda_value=2.0)


# ----------------------------------------------------------------------------- protocols


def _manifest(rows):
    frame = pd.DataFrame(rows)
    frame.insert(0, "path", [f"/img/{i}.jpg" for i in range(len(frame))])
    frame.insert(1, "relpath", [f"{i}.jpg" for i in range(len(frame))])
    return frame


def _rows(split, pids, cams, clothes=None, **extra):
    clothes = clothes if clothes is not None else pids
    out = []
    for i, (p, c, cl) in enumerate(zip(pids, cams, clothes)):
        row = {"split": split, "pid": p, "camid": c, "clothes_id": cl}
        row.update({k: v[i] for k, v in extra.items()})
        out.append(row)
    return out


def _features(m, seed=0, dim=8):
    f = np.random.default_rng(seed).standard_normal((len(m), dim)).astype(np.float32)
    return f


def _ltcc_manifest():
    # ids 1, 2 change clothes; id 3 does not
    rows = _rows("train", [9, 9], [0, 1], [90, 91], cloth_changing=[True, True])
    rows += _rows("query", [1, 2, 3], [0, 0, 0], [10, 20, 30], cloth_changing=[True, True, False])
    rows += _rows("gallery", [1, 1, 2, 2, 3, 3], [1, 2, 1, 0, 1, 2], [10, 11, 20, 21, 30, 30],
                  cloth_changing=[True, True, True, True, False, False])
    return _manifest(rows)


@pytest.mark.parametrize("dataset", ["ltcc", "synthcc"])
def test_ltcc_protocols(dataset):
    m = _ltcc_manifest()
    f = _features(m)
    f[m["split"] == "train"] = np.nan                      # unused rows may be NaN
    res = run_protocols(dataset, m, f)
    assert list(res) == ["general", "cc", "cc_maskcl"] and headline_protocol(dataset) == "cc"
    q, g = np.flatnonzero(m.split == "query"), np.flatnonzero(m.split == "gallery")
    for name in ("general", "cc"):
        np.testing.assert_array_equal(res[name].query_rows, q)
        np.testing.assert_array_equal(res[name].gallery_rows, g)   # every gallery image is a distractor
    assert res["general"].result.num_valid_queries == 3
    # cc: id 1 keeps (cam 2, clothes 11); id 2's images are same clothes or same camera; id 3 never
    # changes clothes → only id 1 is valid
    assert res["cc"].result.num_valid_queries == 1 and res["cc"].result.num_skipped_queries == 2
    mk = res["cc_maskcl"]
    assert set(m.pid[mk.query_rows]) == {1, 2} and set(m.pid[mk.gallery_rows]) == {1, 2}
    assert mk.result.num_gallery == 4 and mk.result.num_queries == 2


def test_prcc_protocols_and_single_shot_draws():
    rng = np.random.default_rng(0)
    gal_p = np.repeat(np.arange(1, 8), 5)
    rows = _rows("train", [50, 51], [0, 2])
    rows += _rows("query_sc", rng.integers(1, 8, 20).tolist(), [1] * 20)
    rows += _rows("query_cc", rng.integers(1, 8, 15).tolist(), [2] * 15)
    rows += _rows("gallery", gal_p.tolist(), [0] * gal_p.size)
    m = _manifest(rows)
    assert required_splits("prcc") == ("query_sc", "gallery", "query_cc")
    f = _features(m)
    res = run_protocols("prcc", m, f, settings=EvalSettings.from_dict({"seed": 5, "single_shot_trials": 4}))
    assert headline_protocol("prcc") == "cc_multishot"
    np.testing.assert_array_equal(res["sc_multishot"].query_rows, np.flatnonzero(m.split == "query_sc"))
    np.testing.assert_array_equal(res["cc_multishot"].query_rows, np.flatnonzero(m.split == "query_cc"))
    assert res["cc_multishot"].result.num_gallery == 35
    ss = res["cc_singleshot"]
    assert len(ss.trials) == 4 and all(t.num_gallery == 7 for t in ss.trials)
    for rows_ in ss.trial_gallery_rows:                       # one camera-A image per identity
        assert sorted(m.pid[rows_]) == list(range(1, 8)) and set(m.split[rows_]) == {"gallery"}
    # same draws for both single-shot protocols; reproducible for a seed, different across seeds
    for a, b in zip(ss.trial_gallery_rows, res["sc_singleshot"].trial_gallery_rows):
        np.testing.assert_array_equal(a, b)
    again = run_protocols("prcc", m, f, settings=EvalSettings.from_dict({"seed": 5, "single_shot_trials": 4}),
                          protocols=["cc_singleshot"])
    assert again["cc_singleshot"].summary() == ss.summary()
    other = run_protocols("prcc", m, f, settings=EvalSettings.from_dict({"seed": 6, "single_shot_trials": 4}),
                          protocols=["cc_singleshot"])
    assert any(not np.array_equal(a, b) for a, b in zip(other["cc_singleshot"].trial_gallery_rows,
                                                        ss.trial_gallery_rows))
    s = ss.summary()
    assert s["mAP"] == pytest.approx(np.mean([t.mAP for t in ss.trials]))
    assert s["mAP_std"] == pytest.approx(np.std([t.mAP for t in ss.trials], ddof=1))
    assert s["num_gallery"] == 7 and s["num_gallery_pool"] == 35 and s["num_trials"] == 4
    # with one image per id every valid query has exactly one good item, so AP = 1 / (position + 1)
    t0 = ss.trials[0]
    v = t0.first_match >= 0
    np.testing.assert_allclose(t0.ap[v], 1.0 / (t0.first_match[v] + 1))


def test_single_shot_galleries_direct():
    pids = np.array([3, 1, 3, 2, 1, 3])
    a = single_shot_galleries(pids, 10, seed=1)
    assert all(sorted(pids[d]) == [1, 2, 3] for d in a)
    b = single_shot_galleries(pids, 10, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    c = single_shot_galleries(pids, 10, seed=2)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c))


def test_vcclothes_camera_subsets():
    cams_q = [0, 1, 2, 3, 1, 2, 3, 0]
    cams_g = [0, 1, 2, 3, 0, 1, 2, 3, 1, 2]
    rows = _rows("query", [1, 1, 2, 2, 3, 3, 4, 4], cams_q)
    rows += _rows("gallery", [1, 1, 2, 2, 3, 3, 4, 4, 1, 2], cams_g)
    m = _manifest(rows)
    res = run_protocols("vcclothes", m, _features(m))
    assert list(res) == ["general", "sc", "cc", "cams23", "cams34"] and headline_protocol("vcclothes") == "cc"
    for name, cams in (("cams23", {1, 2}), ("cams34", {2, 3})):
        assert set(m.camid[res[name].query_rows]) == cams and set(m.camid[res[name].gallery_rows]) == cams
        assert res[name].result.num_queries == sum(c in cams for c in cams_q)
    for name in ("general", "sc", "cc"):
        assert res[name].result.num_queries == 8 and res[name].result.num_gallery == 10


@pytest.mark.parametrize("dataset", ["celebreid", "celebreid_light"])
def test_celeb_excludes_nothing(dataset):
    # even with identical camera ids on both sides, every same-id gallery image is a true match
    rows = _rows("query", [1, 2], [0, 0], [100, 101])
    rows += _rows("gallery", [1, 1, 2, 3], [0, 0, 0, 0], [100, 100, 101, 103])
    m = _manifest(rows)
    res = run_protocols(dataset, m, _features(m))
    r = res["general"].result
    np.testing.assert_array_equal(r.num_good, [2, 1])
    assert r.num_skipped_queries == 0 and headline_protocol(dataset) == "general"


def test_deepchange_uses_tracklets_as_cameras():
    # query pid 1 on camera 4, tracklet 7; gallery: same camera + same tracklet (junk), same camera +
    # another tracklet (good), other camera (good)
    rows = _rows("val_query", [5], [0], tracklet=[1])
    rows += _rows("val_gallery", [5, 6], [1, 1], tracklet=[2, 3])
    rows += _rows("query", [1], [4], tracklet=[7])
    rows += _rows("gallery", [1, 1, 1, 2], [4, 4, 9, 4], tracklet=[7, 8, 9, 10])
    m = _manifest(rows)
    assert required_splits("deepchange") == ("val_query", "val_gallery", "query", "gallery")
    f = np.zeros((len(m), 2), np.float32)
    f[:, 0] = np.arange(len(m))                                # distance order = manifest order
    res = run_protocols("deepchange", m, f)
    t = res["test"].result
    assert t.num_good[0] == 2 and t.first_match[0] == 0        # same-camera other-tracklet match counts
    assert t.ap[0] == pytest.approx(1.0)
    assert res["val"].result.num_valid_queries == 1 and headline_protocol("deepchange") == "test"


def test_missing_features_and_columns_are_reported():
    m = _ltcc_manifest()
    f = _features(m)
    f[np.flatnonzero(m.split == "gallery")[0]] = np.nan
    with pytest.raises(EvaluationError, match="non-finite features"):
        run_protocols("ltcc", m, f)
    rows = required_rows("ltcc", m)
    np.testing.assert_array_equal(rows, np.flatnonzero(m.split != "train"))
    ok = run_protocols("ltcc", m, _features(m)[rows], feature_rows=rows)
    with pytest.raises(EvaluationError, match="no features"):
        run_protocols("ltcc", m, _features(m)[rows[1:]], feature_rows=rows[1:])
    with pytest.raises(EvaluationError, match="cloth_changing"):
        run_protocols("ltcc", m.drop(columns="cloth_changing"), _features(m))
    with pytest.raises(EvaluationError, match="known"):
        list_protocols("market1501")
    assert ok["cc"].result.num_queries == 3


def test_rerank_through_protocols_changes_distances_only():
    m = _ltcc_manifest()
    f = _features(m)
    plain = run_protocols("ltcc", m, f)
    rr = run_protocols("ltcc", m, f, settings=EvalSettings.from_dict({"rerank": True, "rerank_k1": 3, "rerank_k2": 2}))
    assert rr["general"].result.num_valid_queries == plain["general"].result.num_valid_queries
    qs = np.flatnonzero(m.split == "query")
    gs = np.flatnonzero(m.split == "gallery")
    dist = k_reciprocal_rerank(f[qs], f[gs], k1=3, k2=2)
    direct = evaluate(dist, m.pid[qs], m.pid[gs], m.camid[qs], m.camid[gs])
    np.testing.assert_array_equal(rr["general"].result.ap, direct.ap)


# ----------------------------------------------------------------------------- outputs


def test_evaluate_run_writes_metrics_and_ranks(tmp_path):
    m = _ltcc_manifest()
    f = _features(m)
    prov = provenance({"flip": False}, device="cpu", batch_size=8, run_time_s=1.5)
    res = evaluate_run("ltcc", m, f, tmp_path / "metrics.json", tmp_path / "ranks.npz", provenance=prov,
                       settings=EvalSettings.from_dict({"topk": 3, "seed": 4}))
    doc = json.loads((tmp_path / "metrics.json").read_text())
    assert doc["dataset"] == "ltcc" and doc["headline_protocol"] == "cc"
    assert set(doc["protocols"]) == {"general", "cc", "cc_maskcl"}
    cc = doc["protocols"]["cc"]
    assert cc["mAP"] == pytest.approx(res["cc"].result.mAP) and cc["num_gallery"] == 6
    assert cc["num_skipped_queries"] == 2 and len(cc["cmc"]) == 6 and cc["rank1"] == cc["cmc"][0]
    assert doc["headline"]["mAP"] == cc["mAP"]
    assert doc["settings"]["seed"] == 4 and doc["settings"]["metric"] == "euclidean"
    p = doc["provenance"]
    assert p["batch_size"] == 8 and p["config"] == {"flip": False} and "git_commit" in p and "gpu_count" in p
    assert p["evaluation_time_s"] >= 0
    z = np.load(tmp_path / "ranks.npz")
    assert str(z["headline"]) == "cc" and list(z["protocols"])[0] == "cc"
    np.testing.assert_array_equal(z["cc.query_rows"], np.flatnonzero(m.split == "query"))
    top, flags = z["cc.topk_rows"], z["cc.topk_flags"]
    assert top.shape == (3, 3) and set(m.split[top.ravel()]) == {"gallery"}
    same = m.pid.to_numpy()[top] == m.pid.to_numpy()[z["cc.query_rows"]][:, None]
    np.testing.assert_array_equal(flags > 0, same)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "ranks.npz"]   # no temp files left


def test_metrics_json_truncates_cmc(tmp_path):
    rng = np.random.default_rng(2)
    rows = _rows("query", rng.integers(0, 30, 40).tolist(), [0] * 40)
    rows += _rows("gallery", rng.integers(0, 30, 120).tolist(), [1] * 120)
    m = _manifest(rows)
    res = run_protocols("celebreid", m, _features(m))
    doc = write_metrics_json(tmp_path / "m.json", res, provenance())
    g = doc["protocols"]["general"]
    assert len(g["cmc"]) == 50 and g["num_gallery"] == 120
    assert [g[f"rank{k}"] for k in (1, 5, 10, 20)] == [g["cmc"][k - 1] for k in (1, 5, 10, 20)]


# ----------------------------------------------------------------------------- features


class _MeanColour(torch.nn.Module):
    """Features = a fixed linear map of the per-column mean colour, so a flip changes them."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3 * 4, 5)
        torch.nn.init.normal_(self.proj.weight, generator=torch.Generator().manual_seed(0))

    def forward(self, x):
        return self.proj(x.mean(dim=2).flatten(1))


def _images(tmp_path, n=5):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(rng.integers(0, 255, (6, 4, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def _to_tensor(img):
    return torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1)


def test_extract_features_flip_normalise_order(tmp_path):
    paths = _images(tmp_path)
    model = _MeanColour().train()
    f1 = extract_features(model, paths, _to_tensor, batch_size=2)
    f5 = extract_features(model, paths, _to_tensor, batch_size=5)
    np.testing.assert_allclose(f1, f5, atol=1e-6)
    assert model.training                                   # mode restored
    x = torch.stack([_to_tensor(Image.open(p).convert("RGB")) for p in paths])
    with torch.no_grad():
        plain = torch.nn.functional.normalize(model(x), dim=1).numpy()
        flipped = torch.nn.functional.normalize(model(x) + model(torch.flip(x, dims=[3])), dim=1).numpy()
    np.testing.assert_allclose(f1, plain, atol=1e-6)
    np.testing.assert_allclose(extract_features(model, paths, _to_tensor, flip=True), flipped, atol=1e-6)
    raw = extract_features(model, paths[::-1], _to_tensor, normalize=False)
    np.testing.assert_allclose(raw[::-1], model(x).detach().numpy(), atol=1e-6)
    assert f1.dtype == np.float32 and not np.allclose(plain, flipped)


def test_extract_features_errors(tmp_path):
    paths = _images(tmp_path, 2)
    with pytest.raises(EvaluationError, match="image not found"):
        extract_features(_MeanColour(), paths + [tmp_path / "missing.png"], _to_tensor)
    with pytest.raises(EvaluationError, match=r"\(N, d\)"):
        extract_features(lambda x: x, paths, _to_tensor)


# ----------------------------------------------------------------------------- config


def test_evaluate_config_section():
    from maskcl.config import validate_config

    cfg = validate_config({})
    assert cfg["evaluate"] == {"flip": False, "metric": "euclidean", "rerank": False, "rerank_k1": 20,
                               "rerank_k2": 6, "rerank_lambda": 0.3, "single_shot_trials": 10, "seed": 0,
                               "batch_size": 64, "topk": 10, "workers": 2, "device": "auto"}
    with pytest.raises(MaskCLError, match="evaluate"):
        validate_config({"evaluate": {"metrc": "cosine"}})


def test_eval_settings_record_defaults_refusal_frozen():
    import dataclasses

    from maskcl.config import section_defaults
    from maskcl.errors import ConfigError
    from maskcl.evaluation import RERANK_DEFAULTS

    schema = section_defaults("evaluate")
    rec = EvalSettings.defaults()
    assert rec.to_dict() == schema and list(rec.to_dict()) == list(schema)   # every field, schema order
    assert [f.default for f in dataclasses.fields(EvalSettings)] == [dataclasses.MISSING] * len(schema)
    assert RERANK_DEFAULTS == {"k1": schema["rerank_k1"], "k2": schema["rerank_k2"],
                               "lambda_value": schema["rerank_lambda"]}
    part = EvalSettings.from_dict({"rerank": True, "rerank_k1": 7})
    assert part.rerank and part.rerank_k1 == 7 and part.rerank_k2 == schema["rerank_k2"]
    with pytest.raises(ConfigError, match=r"config evaluate: unknown key\(s\) \['metrc'\]; known keys: .*'metric'"):
        EvalSettings.from_dict({"metrc": "cosine"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.seed = 3
    assert part.metrics_settings() == {"metric": "euclidean", "rerank": True, "rerank_k1": 7, "rerank_k2": 6,
                                       "rerank_lambda": 0.3, "single_shot_trials": 10, "seed": 0, "topk": 10}


def test_evaluate_checkpoint_records_the_section_verbatim(monkeypatch, tmp_path):
    import maskcl.devices
    import maskcl.models.export

    m = _ltcc_manifest()
    images = _images(tmp_path, len(m))
    m["path"], m["relpath"] = [str(p) for p in images], [p.name for p in images]   # path = <root>/<relpath>
    m.to_csv(tmp_path / "manifest.csv", index=False)
    seen = []
    monkeypatch.setattr(maskcl.devices, "select_device", lambda spec, key: seen.append(spec) or torch.device("cpu"))
    monkeypatch.setattr(maskcl.models.export, "load_model",
                        lambda path, dev: (_MeanColour(), _to_tensor, {"settings": {"arch": "x"}}))
    section = {"batch_size": 4, "workers": 0, "rerank": True, "rerank_k1": 3, "rerank_k2": 2, "device": "cpu"}
    from maskcl.evaluation import evaluate_checkpoint
    evaluate_checkpoint("ltcc", tmp_path / "manifest.csv", "model.pt", tmp_path / "metrics.json",
                        tmp_path / "ranks.npz", settings=section, run={"dataset": "ltcc"})
    doc = json.loads((tmp_path / "metrics.json").read_text())
    assert seen == ["cpu"]                                   # the record's device spec, resolved
    assert list(doc["provenance"]["config"]["evaluate"].items()) == list(section.items())
    assert doc["settings"] == EvalSettings.from_dict(section).metrics_settings()
    assert list(doc["settings"]) == ["metric", "rerank", "rerank_k1", "rerank_k2", "rerank_lambda",
                                     "single_shot_trials", "seed", "topk"]
    assert doc["provenance"]["batch_size"] == 4 and doc["provenance"]["flip"] is False
