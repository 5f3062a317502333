"""Training throughput on a GPU: MaskCL (2×backbone) and ClusterContrast (1×) steps, fp32 vs autocast.

Part 1 (always): the optimisation step alone on synthetic tensors — forward of both branches and the
fusion, the three memory losses (N instance entries, C classes), backward, Adam, momentum updates —
at 256×128, batch 64, for fp32 and bf16 autocast, with plain BatchNorm and with ``bn_groups=4``
(DataParallel's 4-GPU BatchNorm behaviour on one device). Reports images/s and peak GPU memory.

Part 2 (``--e2e``): the real engine for one short epoch on SynthCC at 256×128 (generation, ground-truth
silhouettes, data loading with workers, memory initialisation, clustering, training), to show what
the data pipeline costs on top of the step.

    python bench/bench_train_gpu.py [--arch resnet50] [--iters 20] [--e2e] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maskcl.models.backbone import build_backbone  # noqa: E402
from maskcl.models.bn_groups import convert_bn_groups  # noqa: E402
from maskcl.models.maskcl_net import MaskCLNet  # noqa: E402
from maskcl.models.memory import ClusterMemory, InstanceMemory  # noqa: E402
from maskcl.training import losses  # noqa: E402


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def step_benchmark(method: str, arch: str, amp: str, bn_groups: int, iters: int, batch: int, n_mem: int,
                   n_cls: int, device: torch.device, channels_last: bool = True) -> dict:
    torch.manual_seed(0)
    if method == "maskcl":
        net = MaskCLNet(build_backbone(arch), build_backbone(arch))
        d = net.dim
        mems = [InstanceMemory(n_mem, d) for _ in range(3)]
        labels = torch.arange(n_mem) % n_cls
        for m in mems:
            m.init_features(torch.randn(n_mem, d))
            m.set_labels(labels)
    else:
        net = build_backbone(arch)
        d = net.dim
        mems = [ClusterMemory(d)]
        mems[0].init_centroids(torch.randn(n_cls, d))
    convert_bn_groups(net, bn_groups)
    net = net.to(device)
    mems = [m.to(device) for m in mems]
    if channels_last and device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=3.5e-4, weight_decay=5e-4)
    x = torch.randn(batch, 3, 256, 128, device=device)
    xm = torch.randn(batch, 3, 256, 128, device=device)
    if channels_last and device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
        xm = xm.contiguous(memory_format=torch.channels_last)
    idx = torch.randint(0, n_mem, (batch,), device=device)
    y_cls = torch.randint(0, n_cls, (batch,), device=device)
    ctx = (torch.autocast("cuda", dtype=torch.bfloat16) if amp == "bf16" and device.type == "cuda"
           else torch.autocast("cpu", enabled=False))
    net.train()

    def one() -> None:
        with ctx:
            if method == "maskcl":
                out = net(x, xm)
                y = mems[0].labels[idx]
                total = 0
                for mem, f in zip(mems, (out.f_rgb, out.f_mask, out.f_fused)):
                    total = total + losses.prototype_focal_loss(mem.class_logits(f.float()), y)
                total = total + losses.cross_view_loss(out.g_rgb.float(), out.f_mask.float(),
                                                       mems[1].centroids()[y])
                feats = (out.f_rgb, out.f_mask, out.f_fused)
            else:
                f, _ = net(x)
                total = losses.cluster_contrast_loss(mems[0].logits(f.float()), y_cls)
                feats = (f,)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        with torch.no_grad():
            if method == "maskcl":
                for mem, f in zip(mems, feats):
                    mem.update(idx, f.float())
            else:
                mems[0].update(y_cls, feats[0].float())

    for _ in range(3):
        one()
    _sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(iters):
        one()
    _sync()
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"method": method, "arch": arch, "amp": amp, "bn_groups": bn_groups, "batch": batch,
            "images_per_s": round(batch * iters / dt, 1), "step_ms": round(1000 * dt / iters, 1),
            "peak_gib": round(peak, 2)}


def e2e_benchmark(arch: str, iters: int, workers: int, out_dir: Path, preset: str = "default") -> dict:
    import numpy as np
    import pandas as pd
    from PIL import Image

    from maskcl.datasets.synthcc import generate_synthcc
    from maskcl.datasets import load_dataset
    from maskcl.training.engine import train
    from maskcl.training.data import train_data_from_manifest
    from maskcl.training.settings import TrainSettings

    t0 = time.perf_counter()
    root = generate_synthcc(out_dir / "synthcc", preset=preset, seed=0,
                            overrides={"image_height": 256, "image_width": 128}, workers=workers)
    t_gen = time.perf_counter() - t0
    df = load_dataset("synthcc", root)
    sil = []
    for rel, par in zip(df["relpath"], df["parsing"]):
        out = out_dir / "sil" / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(((np.array(Image.open(Path(root) / par)) > 0) * 255).astype(np.uint8)).save(out)
        sil.append(str(out))
    index = pd.DataFrame({"relpath": df["relpath"], "silhouette": sil, "parts": sil})
    data = train_data_from_manifest(df, index, "silhouette")
    rows = {}
    for method in ("maskcl", "clustercontrast"):
        s = TrainSettings.from_dict(dict(method=method, arch=arch, pretrained="none", epochs=1, iters=iters,
                                         workers=workers, allknn=0))
        t1 = time.perf_counter()
        res = train(s, data, seed=0, out_model=str(out_dir / f"{method}.pt"),
                    out_log=str(out_dir / f"{method}.csv"), state_dir=str(out_dir / f"state_{method}"),
                    progress=False)
        wall = time.perf_counter() - t1
        row = res.log_rows[-1]
        rows[method] = {"epoch_s": row["epoch_s"], "cluster_s": row["cluster_s"], "wall_s": round(wall, 1),
                        "train_images_per_s": round(64 * iters / (row["epoch_s"] - row["cluster_s"]), 1)}
    return {"generation_s": round(t_gen, 1), "train_images": len(data), **rows}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--e2e", action="store_true")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--preset", default="default", help="SynthCC preset of the --e2e run (tiny for a smoke test)")
    ap.add_argument("--skip-steps", action="store_true", help="only the --e2e part")
    ap.add_argument("--out", default="bench/out/train_gpu")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    info = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(info), flush=True)
    torch.backends.cudnn.benchmark = True
    results = []
    for method in (() if a.skip_steps else ("maskcl", "clustercontrast")):
        for amp in ("fp32", "bf16"):
            for groups in ((1, 4) if method == "maskcl" else (1,)):
                r = step_benchmark(method, a.arch, amp, groups, a.iters, a.batch, n_mem=10000, n_cls=500,
                                   device=device)
                print(json.dumps(r), flush=True)
                results.append(r)
    out = {"info": info, "steps": results}
    if a.e2e:
        torch.backends.cudnn.benchmark = False
        e = e2e_benchmark(a.arch, a.iters, a.workers, Path(a.out), a.preset)
        print(json.dumps(e), flush=True)
        out["e2e"] = e
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
