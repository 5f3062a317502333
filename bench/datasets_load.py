"""Loader and extraction cost at official dataset sizes (empty image files).

Builds a tree with exactly the official per-split image and id counts for each dataset, times
``load_dataset`` on it, checks that ``official_differences`` is empty (so the official-count
comparison and the loaders agree), and times ``safe_extract`` of an LTCC-sized zip and tar.gz.
Run: ``.venv/bin/python bench/datasets_load.py [--datasets prcc ltcc ...] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import platform
import resource
import shutil
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Dict, List, Tuple

from maskcl.datasets import get_dataset, load_dataset, split_statistics
from maskcl.download import safe_extract


def _spread(n: int, k: int) -> List[int]:
    """Person index of each of ``n`` images spread over ``k`` people (every person gets one)."""
    return [i % k for i in range(n)]


def build(name: str, root: Path) -> Path:
    off = get_dataset(name).official
    if name == "prcc":
        base = root / "prcc" / "rgb"
        for split in ("train", "val"):
            for i, person in enumerate(_spread(off[split].images, 150)):
                d = base / split / f"{person + 1:03d}"
                d.mkdir(parents=True, exist_ok=True)
                (d / f"{'ABC'[i // 150 % 3]}_cropped_rgb{i:05d}.jpg").touch()
        for split, cam in (("gallery", "A"), ("query_sc", "B"), ("query_cc", "C")):
            for i, person in enumerate(_spread(off[split].images, 71)):
                d = base / "test" / cam / f"{person + 1:03d}"
                d.mkdir(parents=True, exist_ok=True)
                (d / f"cropped_rgb{i:05d}.jpg").touch()
    elif name == "ltcc":
        base = root / "LTCC_ReID"
        for split, folder, first in (("train", "train", 0), ("query", "query", 77), ("gallery", "test", 77)):
            (base / folder).mkdir(parents=True)
            for i, person in enumerate(_spread(off[split].images, off[split].ids)):
                (base / folder / f"{first + person:03d}_{i % 3 + 1}_c{i % 12 + 1}_{i:06d}.png").touch()
    elif name == "vcclothes":
        base = root / "VC-Clothes"
        for split, first in (("train", 1), ("query", 257), ("gallery", 257)):
            (base / split).mkdir(parents=True)
            for i, person in enumerate(_spread(off[split].images, off[split].ids or 256)):
                (base / split / f"{first + person:04d}-{i % 4 + 1:02d}-{i % 4 // 3 + 1:02d}-{i:05d}.jpg").touch()
    elif name == "deepchange":
        base = root / "DeepChangeDataset"
        folders = {"train": "train-set", "val_query": "val-set-query", "val_gallery": "val-set-gallery",
                   "query": "test-set-query", "gallery": "test-set-gallery"}
        ids = {"train": (450, 1), "val_query": (150, 451), "val_gallery": (150, 451), "query": (521, 601),
               "gallery": (521, 601)}
        for split, folder in folders.items():
            (base / folder).mkdir(parents=True)
            k, first = ids[split]
            lines = []
            for i, person in enumerate(_spread(off[split].images, k)):
                n = f"P{first + person:04d}_C{i % 17 + 1:02d}_D{i % 40:04d}_H{i % 12:02d}_{i // 7:06d}_{i:06d}.jpg"
                (base / folder / n).touch()
                lines.append(f"{n},{i // 7}\n")
            (base / f"{folder}-bbox.txt").write_text("".join(lines))
    else:  # celebreid, celebreid_light
        base = root / ("Celeb-reID" if name == "celebreid" else "Celeb-reID-light")
        for split in ("train", "query", "gallery"):
            (base / split).mkdir(parents=True)
            offset = 0 if split != "gallery" else 1000
            for i, person in enumerate(_spread(off[split].images, off[split].ids)):
                (base / split / f"{person + 1}_{offset + i}_0.jpg").touch()
    return root


def bench_extract(tmp: Path) -> List[Tuple[str, float, int]]:
    src = build("ltcc", tmp / "src")
    files = sorted(p for p in src.rglob("*") if p.is_file())
    out = []
    for kind in ("zip", "tar.gz"):
        arc = tmp / f"ltcc.{kind}"
        if kind == "zip":
            with zipfile.ZipFile(arc, "w") as zf:
                for p in files:
                    zf.write(p, p.relative_to(src))
        else:
            with tarfile.open(arc, "w:gz") as tf:
                tf.add(src / "LTCC_ReID", "LTCC_ReID")
        t0 = time.perf_counter()
        safe_extract(arc, tmp / f"out-{kind}")
        out.append((kind, time.perf_counter() - t0, len(files)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", nargs="+",
                    default=["prcc", "ltcc", "vcclothes", "deepchange", "celebreid", "celebreid_light"])
    args = ap.parse_args()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.node()} {platform.processor() or platform.machine()} "
          f"python {platform.python_version()}")
    print("| dataset | images | build s | load s | official differences |")
    print("|---|---|---|---|---|")
    results: Dict[str, float] = {}
    for name in args.datasets:
        tmp = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        try:
            t0 = time.perf_counter()
            build(name, tmp)
            t1 = time.perf_counter()
            frame = load_dataset(name, tmp)
            t2 = time.perf_counter()
            loader = get_dataset(name)
            diffs = loader.official_differences(split_statistics(frame, loader.splits))
            results[name] = t2 - t1
            print(f"| {name} | {len(frame)} | {t1 - t0:.1f} | {t2 - t1:.2f} | {'; '.join(diffs) or 'none'} |")
        finally:
            shutil.rmtree(tmp)
    tmp = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    try:
        print("\n| safe_extract (LTCC-sized) | entries | seconds |\n|---|---|---|")
        for kind, secs, n in bench_extract(tmp):
            print(f"| {kind} | {n} | {secs:.2f} |")
    finally:
        shutil.rmtree(tmp)
    print(f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
