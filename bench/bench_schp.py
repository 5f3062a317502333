"""SCHP parsing throughput: the whole official pipeline (letterbox, network, upsample, inverse warp,
argmax) on ReID-sized images, at the LIP input size 473x473, with random weights of the real shapes.

    .venv/bin/python bench/bench_schp.py                       # CPU, batch 1 and 4
    .venv/bin/python bench/bench_schp.py --device cuda --batch-sizes 1 8 32 --amp none bf16
    .venv/bin/python bench/bench_schp.py --device cuda --pipeline 512 --batch-sizes 32 --amp bf16 --workers 4

Prints one line per setting (images/s, seconds/image, peak GPU memory) plus the machine and command.
``--pipeline N`` instead times the whole parse stage (``parse_dataset`` with the ``schp`` source): N
random PNG images decoded by DataLoader workers, parsed, and three mask PNGs written per image; the
time includes loading the 267 MB checkpoint (about a second).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from maskcl.masks import SCHPSource, parse_dataset
from maskcl.masks.checkpoint import get_variant, random_state_dict
from maskcl.masks.schp import SCHPParser
from maskcl.masks.schp_net import AugmentCE2P


def build_model(variant: str) -> AugmentCE2P:
    spec = get_variant(variant)
    with torch.device("meta"):
        model = AugmentCE2P(spec.num_classes)
    model.load_state_dict(random_state_dict(spec.num_classes, seed=0, prefix=""), strict=True, assign=True)
    return model.eval().requires_grad_(False)


def run(parser: SCHPParser, images, iters: int, warmup: int) -> float:
    sync = torch.cuda.synchronize if parser.device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        parser.parse(images)
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        parser.parse(images)
    sync()
    return (time.perf_counter() - start) / iters


def run_pipeline(args, h: int, w: int) -> None:
    """Time parse_dataset end to end on ``args.pipeline`` random images (after a short warm-up)."""
    spec = get_variant(args.variant)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpt = root / "random.pth"
        torch.save({"state_dict": random_state_dict(spec.num_classes, seed=0)}, ckpt)
        rng = np.random.default_rng(0)
        rows = []
        for i in range(args.pipeline):
            rel = f"train/{i:06d}.png"
            (root / "train").mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / rel)
            rows.append({"path": str(root / rel), "relpath": rel, "split": "train"})
        frame = pd.DataFrame(rows)
        print(f"{'amp':>5} {'batch':>5} {'workers':>7} {'images':>6} {'img/s':>9}")
        for amp in args.amp:
            for bs in args.batch_sizes:
                src = SCHPSource(checkpoint=ckpt, variant=args.variant, batch_size=bs, workers=args.workers,
                                 device=args.device, amp=amp)
                out = root / f"masks_{amp}_{bs}"
                parse_dataset(frame.head(bs * args.warmup), root / f"warm_{amp}_{bs}", src, progress=False)
                start = time.perf_counter()
                res = parse_dataset(frame, out, src, progress=False)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                sec = time.perf_counter() - start
                print(f"{amp:>5} {bs:>5} {args.workers:>7} {res.processed:>6} {res.processed / sec:>9.2f}",
                      flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--variant", default="lip", choices=["lip", "atr", "pascal"])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--amp", nargs="+", default=["none"], choices=["none", "bf16", "fp16"])
    ap.add_argument("--image-size", default="128x64", help="HxW of the input images (ReID crops)")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--pipeline", type=int, default=0, metavar="N",
                    help="time the whole parse stage on N images instead of the parser alone")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers in --pipeline mode")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    h, w = (int(v) for v in args.image_size.split("x"))
    spec = get_variant(args.variant)

    print(f"date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}"
          + (f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""))
    print(f"input: {args.variant} {spec.input_size[0]}x{spec.input_size[1]}, images {h}x{w} (random), "
          f"{args.iters} timed iterations after {args.warmup} warm-up")
    if args.pipeline:
        run_pipeline(args, h, w)
        return
    model = build_model(args.variant)
    rng = np.random.default_rng(0)
    print(f"{'amp':>5} {'batch':>5} {'img/s':>9} {'s/img':>8} {'peak GPU MiB':>12}")
    for amp in args.amp:
        parser = SCHPParser(model, input_size=spec.input_size, device=device, amp=amp,
                            channels_last=device.type == "cuda")
        for bs in args.batch_sizes:
            images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(bs)]
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            sec = run(parser, images, args.iters, args.warmup)
            peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
            print(f"{amp:>5} {bs:>5} {bs / sec:>9.2f} {sec / bs:>8.3f} {peak:>12.0f}", flush=True)


if __name__ == "__main__":
    main()
