"""Benchmark of maskcl.evaluation at DeepChange scale (speed and peak memory).

Part 1, DeepChange-val size (4,976 queries × 17,527 gallery, 256-d random features, ids from 500,
cameras from 17): a plain per-query loop that stable-argsorts every row (written here as the
baseline) against ``maskcl.evaluation.evaluate`` on the same distance matrix; the per-query AP,
first-match positions, CMC and mAP must be identical (asserted).

Part 2, DeepChange-test size (17,149 × 63,672, 2048-d, ids from 521): ``evaluate_features`` in a
fresh subprocess, whose peak RSS is read with ``getrusage(RUSAGE_CHILDREN)``. The full float32
distance matrix alone would take 4.07 GiB; the target is a peak RSS of at most 4 GiB.

Usage: .venv/bin/python bench/bench_evaluation.py [--skip-test-size] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

VAL = dict(num_query=4976, num_gallery=17527, dim=256, num_ids=500, num_cams=17)
TEST = dict(num_query=17149, num_gallery=63672, dim=2048, num_ids=521, num_cams=17)


def make_problem(num_query, num_gallery, dim, num_ids, num_cams, seed=0):
    rng = np.random.default_rng(seed)
    qf = rng.standard_normal((num_query, dim), dtype=np.float32)
    gf = rng.standard_normal((num_gallery, dim), dtype=np.float32)
    labels = (rng.integers(0, num_ids, num_query), rng.integers(0, num_ids, num_gallery),
              rng.integers(0, num_cams, num_query), rng.integers(0, num_cams, num_gallery))
    return qf, gf, labels


def per_query_loop(dist, q_pids, g_pids, q_cams, g_cams):
    """The baseline: stable argsort of each row, standard rule, AP summed in rank order."""
    nq, ng = dist.shape
    ap = np.full(nq, np.nan)
    first = np.full(nq, -1, np.int64)
    for i in range(nq):
        order = np.argsort(dist[i], kind="stable")
        same = g_pids[order] == q_pids[i]
        junk = same & (g_cams[order] == q_cams[i])
        good = (same & ~junk)[~junk]
        hits = np.flatnonzero(good)
        if hits.size:
            ap[i] = np.cumsum(np.arange(1, hits.size + 1) / (hits + 1.0))[-1] / hits.size
            first[i] = hits[0]
    valid = first >= 0
    cmc = np.cumsum(np.bincount(first[valid], minlength=ng)[:ng]) / valid.sum()
    return ap, first, cmc, float(np.mean(ap[valid]))


def part_val():
    import torch

    from maskcl.evaluation import evaluate, evaluate_features, pairwise_distance

    qf, gf, labels = make_problem(**VAL)
    t = time.perf_counter()
    dist = pairwise_distance(qf, gf, "euclidean")
    t_dist = time.perf_counter() - t
    t = time.perf_counter()
    evaluate(dist[:64], labels[0][:64], *labels[1:2], labels[2][:64], labels[3])   # numba compile / cache load
    t_compile = time.perf_counter() - t

    t = time.perf_counter()
    ap, first, cmc, mAP = per_query_loop(dist, *labels)
    t_loop = time.perf_counter() - t

    runs = []
    for _ in range(3):
        t = time.perf_counter()
        r = evaluate(dist, *labels)
        runs.append(time.perf_counter() - t)
    assert np.array_equal(r.first_match, first), "first-match positions differ from the per-query loop"
    assert np.array_equal(np.isnan(r.ap), np.isnan(ap)) and np.array_equal(r.ap[~np.isnan(ap)], ap[~np.isnan(ap)]), \
        "per-query AP differs from the per-query loop"
    assert np.array_equal(r.cmc, cmc) and r.mAP == mAP, "CMC / mAP differ from the per-query loop"

    t = time.perf_counter()
    rf = evaluate_features(qf, gf, *labels, metric="euclidean")
    t_feat = time.perf_counter() - t
    assert np.array_equal(rf.ap, r.ap, equal_nan=True) and np.array_equal(rf.cmc, r.cmc)
    return {
        "size": VAL, "torch_threads": torch.get_num_threads(),
        "distance_matrix_s": round(t_dist, 3), "compile_or_cache_load_s": round(t_compile, 3),
        "per_query_loop_s": round(t_loop, 3), "evaluate_s": [round(x, 3) for x in runs],
        "speedup_vs_loop_best": round(t_loop / min(runs), 1),
        "speedup_vs_loop_median": round(t_loop / float(np.median(runs)), 1),
        "evaluate_features_incl_distances_s": round(t_feat, 3),
        "mAP": r.mAP, "rank1": r.rank(1), "num_valid_queries": r.num_valid_queries,
        "identical_to_loop": True,
    }


def child_test_size():
    """Runs in a fresh process: DeepChange-test size through evaluate_features."""
    from maskcl.evaluation import evaluate_features

    def rss_mib():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    qf, gf, labels = make_problem(**TEST)
    after_features = rss_mib()
    t = time.perf_counter()
    r = evaluate_features(qf, gf, *labels, metric="euclidean")
    elapsed = time.perf_counter() - t
    print(json.dumps({"evaluate_features_s": round(elapsed, 1), "rss_after_features_mib": round(after_features),
                      "peak_rss_self_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      "mAP": r.mAP, "rank1": r.rank(1), "num_valid_queries": r.num_valid_queries}))


def part_test():
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child"], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"child failed:\n{proc.stderr}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out.update(size=TEST, child_wall_s=round(wall, 1), peak_rss_children_mib=round(peak_kib / 1024),
               peak_rss_children_gib=round(peak_kib / 1024 ** 2, 3), earlier_children_max_kib=before,
               full_distance_matrix_gib=round(TEST["num_query"] * TEST["num_gallery"] * 4 / 1024 ** 3, 2),
               within_4gib=peak_kib <= 4 * 1024 ** 2)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-test-size", action="store_true", help="only run part 1 (DeepChange-val size)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_test_size()
        return
    info = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "python": platform.python_version(),
            "platform": platform.platform(), "cpu_count": os.cpu_count(), "loadavg_start": os.getloadavg()}
    print(json.dumps({"machine": info}), flush=True)
    res = {"machine": info, "deepchange_val": part_val()}
    print(json.dumps({"deepchange_val": res["deepchange_val"]}, indent=1), flush=True)
    if not args.skip_test_size:
        res["deepchange_test"] = part_test()
        print(json.dumps({"deepchange_test": res["deepchange_test"]}, indent=1), flush=True)
    info["loadavg_end"] = os.getloadavg()
    print(json.dumps({"loadavg_end": info["loadavg_end"]}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
