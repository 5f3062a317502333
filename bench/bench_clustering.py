"""Benchmark of maskcl.clustering up to DeepChange scale (time per step and peak memory).

Two feature regimes, d = 2048, L2-normalised, seeded:

* ``easy``: one centre per 16 points drawn from N(0, I), each point its centre plus 1.2·N(0, I)
  (loose clusters, R* mostly inside the kNN lists);
* ``hard``: what a run produces late in training: tight clusters (centre plus 0.6·N(0, I), cosine
  ~0.75 inside a cluster) of realistic sizes 4-40 (log-normal, median 13), one near-duplicate
  pair (the same person in consecutive frames: 0.02·N(0, I) apart) in 300 of them, rows in
  shuffled order; R* then reaches far beyond the kNN lists (~3 pairs per row at N = 10k).

Settings: k1 = 30, k2 = 6, eps = 0.6, min_samples = 4, and MaskCL's tight DBSCAN at 0.58 (so the
cluster call runs both DBSCANs and stores every pair the refinement reads), outliers as
singletons, then ``refine_clusters`` on the returned distances.

Every (regime, N) runs in a fresh subprocess that reports its peak RSS (``ru_maxrss``):

* ``ours``: the floor is a bare exact search of the same array by the same library
  (``faiss.IndexFlatL2(d)``, ``add``, ``search(x, k)`` with the k columns the call needs), timed
  just before and just after each whole ``cluster_with_distances`` call (its own kNN included,
  per-step times kept); each call is compared with the mean of its two neighbouring floors, so a
  load change on shared cores does not land on one side only; three calls for N <= 20k, the
  median reported. Our ``knn_search`` alone is timed too. Then the refinement; for N <= 10k also
  the all-overlapping-pairs route ``jaccard_distance(max_distance=1)`` for information.
* ``reference`` (easy regime, N = 10k): a dense implementation of the same steps written here from
  the published algorithm (per-row loops, dense N x N weights, query expansion, inverted index and
  Jaccard matrix as ClusterContrast does it, sklearn DBSCAN on the dense matrix at eps and at the
  tight eps), on the same kNN lists; in the same process our post-kNN steps run on those lists
  too, so the speed-up is a ratio measured back to back. Labels must agree exactly (asserted).

Targets: N = 10k, post-kNN steps >= 20x faster than the dense reference; N = 10k and 20k, both
regimes, whole cluster call <= 1.25x the bare exact search; N = 75k, peak RSS <= 3 GiB.

Usage: .venv/bin/python bench/bench_clustering.py [--sizes 2000,10000,20000,75000]
           [--regimes easy,hard] [--reference-size 10000] [--json bench/out/bench_clustering.json]
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
from typing import Dict, List

import numpy as np

DIM, PER_CENTRE, NOISE, SEED = 2048, 16, 1.2, 0
HARD_NOISE, HARD_SIZES, NEAR_DUPLICATES, NEAR_NOISE = 0.6, (4, 40), 300, 0.02
REGIMES = ("easy", "hard")
K1, K2, EPS, TIGHT_EPS, MIN_SAMPLES = 30, 6, 0.6, 0.58, 4
POST_KNN_STEPS = ("reciprocal", "expansion", "weights", "query_expansion", "jaccard", "dbscan",
                  "completion")


def make_features(n: int, regime: str = "easy") -> tuple:
    """Clustered random features and their true clusters, generated in float32 blocks."""
    rng = np.random.default_rng(SEED)
    if regime == "easy":
        labels = np.arange(n) // PER_CENTRE
        noise = NOISE
    else:
        sizes = []
        while sum(sizes) < n:
            sizes.append(int(np.clip(np.round(rng.lognormal(2.6, 0.6)), *HARD_SIZES)))
        sizes[-1] -= sum(sizes) - n
        labels = np.repeat(np.arange(len(sizes)), sizes)
        noise = HARD_NOISE
    centres = rng.standard_normal((int(labels.max()) + 1, DIM), dtype=np.float32)
    x = np.empty((n, DIM), dtype=np.float32)
    for s in range(0, n, 8192):
        e = min(n, s + 8192)
        x[s:e] = centres[labels[s:e]]
        x[s:e] += noise * rng.standard_normal((e - s, DIM), dtype=np.float32)
    if regime == "hard":
        starts = np.flatnonzero(np.concatenate(([True], labels[1:] != labels[:-1])))
        for s in rng.choice(starts, size=min(NEAR_DUPLICATES, starts.size), replace=False):
            x[s + 1] = x[s] + NEAR_NOISE * rng.standard_normal(DIM, dtype=np.float32)
        perm = rng.permutation(n)
        x, labels = x[perm], labels[perm]
    for s in range(0, n, 8192):
        x[s:s + 8192] /= np.linalg.norm(x[s:s + 8192], axis=1, keepdims=True)
    return x, labels


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


# --------------------------------------------------------------------------- dense reference


def dense_reference(x: np.ndarray, initial_rank: np.ndarray) -> Dict[str, object]:
    """The published algorithm with dense N x N float32 arrays, step by step (``maskcl.clustering.dense``,
    ClusterContrast's variant: ``initial_rank`` holds k1 columns), then sklearn DBSCAN on the dense matrix."""
    from sklearn.cluster import DBSCAN

    from maskcl.clustering.dense import dense_jaccard

    times: Dict[str, float] = {}
    jaccard = dense_jaccard(x, K1, K2, initial_rank=initial_rank, dtype=np.float32, times=times)

    t = time.perf_counter()
    labels = DBSCAN(eps=EPS, min_samples=MIN_SAMPLES, metric="precomputed").fit_predict(jaccard)
    tight = DBSCAN(eps=TIGHT_EPS, min_samples=MIN_SAMPLES,
                   metric="precomputed").fit_predict(jaccard)
    times["dbscan (eps and tight eps)"] = time.perf_counter() - t
    return {"times": times, "labels": labels, "tight": tight, "jaccard": jaccard}


# --------------------------------------------------------------------------- children


def child_ours(n: int, regime: str) -> dict:
    import faiss
    import torch  # a trainer holds torch already: keep its import out of the timings

    from maskcl.clustering import (cluster_with_distances, jaccard_distance, knn_search,
                                   neighbour_columns, pseudo_label_quality, refine_clusters)

    x, truth = make_features(n, regime)
    need = max(neighbour_columns(K1, K2, n=n))
    out: dict = {"n": n, "regime": regime, "true_clusters": int(truth.max()) + 1,
                 "knn_columns": need, "rss_after_features_gib": peak_rss_gib()}

    def bare_search() -> float:
        t = time.perf_counter()
        index = faiss.IndexFlatL2(x.shape[1])
        index.add(x)
        index.search(x, need)
        return time.perf_counter() - t

    t = time.perf_counter()
    knn = knn_search(x, need)
    out["our_knn_s"] = time.perf_counter() - t
    out["knn_backend"] = knn.backend
    repeats = 3 if n <= 20_000 else 1
    floors = [bare_search()]
    calls, steps = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        res = cluster_with_distances(x, eps=EPS, min_samples=MIN_SAMPLES, k1=K1, k2=K2,
                                     outliers="singleton", tight_eps=TIGHT_EPS)
        calls.append(time.perf_counter() - t)
        steps.append(res.timings)
        floors.append(bare_search())
    ratios = [c / ((a + b) / 2) for c, a, b in zip(calls, floors[:-1], floors[1:])]
    best = int(np.argsort(ratios)[len(ratios) // 2])  # the median call
    out["bare_search_runs_s"] = floors
    out["cluster_call_runs_s"] = calls
    out["ratio_runs"] = ratios
    out["post_knn_runs_s"] = [sum(v for k, v in st.items() if k != "knn") for st in steps]
    out["cluster_call_s"] = calls[best]
    out["bare_search_s"] = (floors[best] + floors[best + 1]) / 2
    out["steps_s"] = steps[best]
    t = time.perf_counter()
    refined = refine_clusters(res.distances, res.dbscan_labels, tight_labels=res.tight_labels)
    out["refine_s"] = time.perf_counter() - t
    out.update(clusters=res.num_clusters, outliers=res.num_outliers, stored_pairs=res.distances.nnz,
               ejected=int(refined.ejected.sum()),
               identity_ari=pseudo_label_quality(res.labels, truth).identity.ari)
    out["peak_rss_gib"] = peak_rss_gib()
    if torch.cuda.is_available():
        out["gpu_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    if n <= 10_000:
        t = time.perf_counter()
        full = jaccard_distance(x, K1, K2)
        out["full_route_s"] = time.perf_counter() - t
        out["full_route_pairs"] = int(full.nnz)
        out["peak_rss_with_full_route_gib"] = peak_rss_gib()
    return out


def child_reference(n: int) -> dict:
    import torch  # noqa: F401

    from maskcl.clustering import cluster_with_distances, knn_search, neighbour_columns

    x, _ = make_features(n, "easy")
    knn = knn_search(x, max(neighbour_columns(K1, K2)))
    out: dict = {"n": n, "regime": "easy"}
    # ours on the same kNN lists: the cluster call given the neighbours (no search inside)
    t = time.perf_counter()
    res = cluster_with_distances(x, eps=EPS, min_samples=MIN_SAMPLES, k1=K1, k2=K2,
                                 outliers="singleton", tight_eps=TIGHT_EPS, knn=knn)
    out["ours_post_knn_s"] = time.perf_counter() - t
    out["ours_steps_s"] = res.timings
    ref = dense_reference(x, knn.indices[:, :K1])
    out["reference_steps_s"] = ref["times"]
    out["reference_post_knn_s"] = sum(ref["times"].values())
    out["reference_peak_rss_gib"] = peak_rss_gib()
    np.testing.assert_array_equal(res.dbscan_labels, ref["labels"])
    np.testing.assert_array_equal(res.tight_labels, ref["tight"])
    stored = res.distances.tocoo()
    out["max_abs_diff_vs_reference"] = float(np.abs(stored.data - ref["jaccard"][stored.row,
                                                                                 stored.col]).max())
    out["labels_identical"] = True
    return out


# --------------------------------------------------------------------------- parent


def run_child(kind: str, n: int, regime: str = "easy") -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, __file__, "--child", kind, str(n), regime], env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"child {kind} {n} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> dict:
    import scipy
    import torch

    try:
        import faiss

        faiss_version = faiss.__version__
    except ImportError:
        faiss_version = "not installed"
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "python": platform.python_version(),
            "numpy": np.__version__, "scipy": scipy.__version__, "faiss": faiss_version,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "load_average": os.getloadavg()}


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="2000,10000,20000,75000")
    parser.add_argument("--regimes", default=",".join(REGIMES))
    parser.add_argument("--reference-size", type=int, default=10_000)
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", nargs=3, metavar=("KIND", "N", "REGIME"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, n, regime = args.child[0], int(args.child[1]), args.child[2]
        result = child_ours(n, regime) if kind == "ours" else child_reference(n)
        print(json.dumps(result))
        return
    report = {"machine_start": machine(), "date_utc": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                     time.gmtime()),
              "command": " ".join([os.path.relpath(sys.executable)] + sys.argv), "runs": []}
    for regime in [r for r in args.regimes.split(",") if r]:
        if regime not in REGIMES:
            parser.error(f"unknown regime {regime!r}; use {', '.join(REGIMES)}")
        for n in [int(s) for s in args.sizes.split(",") if s]:
            r = run_child("ours", n, regime)
            post = sum(r["steps_s"].get(k, 0.0) for k in POST_KNN_STEPS)
            r["post_knn_s"] = post
            r["cluster_over_bare_search"] = r["cluster_call_s"] / r["bare_search_s"]
            r["own_knn_over_bare_search"] = r["steps_s"]["knn"] / r["bare_search_s"]
            r["post_over_bare_search"] = post / r["bare_search_s"]
            r["cluster_refine_over_bare_search"] = ((r["cluster_call_s"] + r["refine_s"])
                                                    / r["bare_search_s"])
            report["runs"].append(r)
            print(json.dumps(r), flush=True)
    if args.reference_size:
        r = run_child("reference", args.reference_size)
        r["speedup"] = r["reference_post_knn_s"] / r["ours_post_knn_s"]
        report["reference"] = r
        print(json.dumps(r), flush=True)
    report["load_average_end"] = os.getloadavg()
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main(sys.argv[1:])
