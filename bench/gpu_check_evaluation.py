"""GPU checks of maskcl.evaluation (run on a CUDA machine): device paths agree with the CPU, and the
DeepChange-test-size evaluation with distances on the GPU (time, host peak RSS).

Usage: python bench/gpu_check_evaluation.py  (prints JSON lines)
"""

from __future__ import annotations

import json
import resource
import time

import numpy as np
import torch

from maskcl.evaluation import (evaluate, evaluate_features, extract_features, k_reciprocal_rerank,
                               pairwise_distance)


def log(**kw):
    print(json.dumps(kw), flush=True)


def main():
    assert torch.cuda.is_available(), "no CUDA device"
    log(device=torch.cuda.get_device_name(0), torch=torch.__version__)
    rng = np.random.default_rng(0)

    # 1. chunk invariance with distances computed on the GPU
    qf, gf = rng.standard_normal((700, 128), dtype=np.float32), rng.standard_normal((3000, 128), dtype=np.float32)
    lab = (rng.integers(0, 100, 700), rng.integers(0, 100, 3000), rng.integers(0, 6, 700), rng.integers(0, 6, 3000))
    for metric in ("euclidean", "cosine"):
        dense = evaluate(pairwise_distance(qf, gf, metric, device="cuda"), *lab)
        same = all(np.array_equal(evaluate_features(qf, gf, *lab, metric=metric, chunk_size=cs, device="cuda").ap,
                                  dense.ap, equal_nan=True) for cs in (1, 64, 300, None))
        cpu = evaluate(pairwise_distance(qf, gf, metric), *lab)
        log(check="gpu_chunk_invariance", metric=metric, identical=bool(same),
            gpu_vs_cpu_map_abs_diff=abs(dense.mAP - cpu.mAP), gpu_mAP=dense.mAP, cpu_mAP=cpu.mAP)

    # 2. feature extraction on the GPU vs the CPU (small conv net, flip on)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 16))
    import tempfile
    from pathlib import Path

    from PIL import Image
    tmp = Path(tempfile.mkdtemp())
    paths = []
    for i in range(37):
        p = tmp / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (32, 16, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    tf = lambda im: torch.from_numpy(np.asarray(im, np.float32) / 255).permute(2, 0, 1)  # noqa: E731
    fc = extract_features(net, paths, tf, batch_size=8, flip=True)
    fg = extract_features(net.cuda(), paths, tf, batch_size=8, flip=True, device="cuda")
    log(check="extract_features_gpu_vs_cpu", max_abs_diff=float(np.abs(fc - fg).max()), shape=list(fg.shape))

    # 3. re-ranking with products on the GPU vs the CPU
    a, b = rng.standard_normal((200, 32)), rng.standard_normal((500, 32))
    d_cpu = k_reciprocal_rerank(a, b)
    d_gpu = k_reciprocal_rerank(a, b, device="cuda")
    log(check="rerank_gpu_vs_cpu", max_abs_diff=float(np.abs(d_cpu - d_gpu).max()))

    # 4. DeepChange-test size, distances on the GPU
    nq, ng = 17149, 63672
    qf = rng.standard_normal((nq, 2048), dtype=np.float32)
    gf = rng.standard_normal((ng, 2048), dtype=np.float32)
    lab = (rng.integers(0, 521, nq), rng.integers(0, 521, ng), rng.integers(0, 17, nq), rng.integers(0, 17, ng))
    t = time.perf_counter()
    r = evaluate_features(qf, gf, *lab, device="cuda")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    log(check="deepchange_test_size_gpu", seconds=round(time.perf_counter() - t, 1), mAP=r.mAP,
        valid=r.num_valid_queries, host_peak_rss_gib=round(peak, 2),
        gpu_peak_mem_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2))


if __name__ == "__main__":
    main()
