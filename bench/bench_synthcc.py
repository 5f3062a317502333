"""SynthCC generation speed: wall time and images/s for the default and large presets.

Run: ``.venv/bin/python bench/bench_synthcc.py [--presets default large] [--workers 1 2] [--out bench/out]``

Each (preset, workers) pair generates a fresh copy under ``--out`` (deleted first, so the idempotence
shortcut never kicks in) and reports the wall time of ``generate_synthcc`` (planning, rendering,
PNG writing, contact sheet, metadata, atomic rename) plus the process CPU time of the parent.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from maskcl.datasets.synthcc import expected_counts, generate_synthcc, resolve_config  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["default", "large"])
    ap.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"# bench_synthcc: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"# command: {' '.join([Path(sys.executable).name] + sys.argv)}")
    print(f"# machine: {platform.machine()} {platform.system()} {platform.release()}, {os.cpu_count()} logical CPUs, "
          f"python {platform.python_version()}; load average at start {os.getloadavg()[0]:.2f}")
    print()
    print("| preset | workers | images | size (H×W) | wall s | images/s | parent CPU s | load avg after |")
    print("|---|---|---|---|---|---|---|---|")
    for preset in args.presets:
        cfg = resolve_config(preset)
        n = sum(c["images"] for c in expected_counts(cfg).values())
        for w in args.workers:
            root = Path(args.out) / f"synthcc_bench_{preset}_w{w}"
            shutil.rmtree(root, ignore_errors=True)
            t0, c0 = time.perf_counter(), time.process_time()
            generate_synthcc(root, preset, args.seed, workers=w)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            print(f"| {preset} | {w} | {n} | {cfg.image_height}×{cfg.image_width} | {wall:.1f} | {n / wall:.0f} | "
                  f"{cpu:.1f} | {os.getloadavg()[0]:.2f} |", flush=True)
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
