"""Where a training epoch's time goes, on the per-sample data path and on the decoded, batched one (issue #29).

Trains the default config's MaskCL and ClusterContrast runs (SynthCC, the workspace's manifest and masks,
which the default DAG has written) for ``--epochs`` epochs twice each through the real engine: once
reading and augmenting one sample at a time in DataLoader workers (the path before #29), once from the
decoded cache with whole-batch augmentation. Prints and writes each epoch's ``data_s`` (waiting for
batches), ``step_s``, ``cluster_s`` and ``epoch_s``, and checks that both paths train the same weights.

    python bench/data_path.py [--workspace .] [--epochs 2] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maskcl.config import load_config  # noqa: E402
from maskcl.hardware import cpu_model  # noqa: E402
from maskcl.layout import MANIFEST, fill  # noqa: E402
from maskcl.manifest import read_manifest  # noqa: E402
from maskcl.masks.index import read_mask_index  # noqa: E402
from maskcl.plan import build_plan  # noqa: E402
from maskcl.training import engine  # noqa: E402
from maskcl.training.data import train_data_from_manifest  # noqa: E402
from maskcl.training.settings import TrainSettings  # noqa: E402


def run(settings: TrainSettings, data, out: Path, batched: bool, threads: int) -> pd.DataFrame:
    real = engine.batch_maker
    if not batched:
        engine.batch_maker = lambda *a, **k: None
    try:
        engine.train(settings, data, seed=0, out_model=str(out / "model.pt"), out_log=str(out / "train_log.csv"),
                     state_dir=str(out / "state"), threads=threads, progress=False)
    finally:
        engine.batch_maker = real
    return pd.read_csv(out / "train_log.csv")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", default=".", help="a folder where the default DAG has run")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    a = ap.parse_args()
    ws = Path(a.workspace).resolve()
    plan = build_plan(load_config(str(ws / "config.yaml")))
    manifest = read_manifest(ws / fill(MANIFEST, dataset="synthcc"), splits=("train", "query", "gallery"))
    report = {"machine": f"{platform.node()}: {cpu_model()}, {torch.get_num_threads()} torch threads available",
              "date": time.strftime("%Y-%m-%d"), "epochs": a.epochs, "threads": a.threads, "runs": {}}
    for experiment in ("maskcl", "clustercontrast"):
        rec = plan.run("synthcc", experiment, 0)
        settings = TrainSettings.from_dict({**rec.train_settings(), "epochs": a.epochs})
        index = read_mask_index(ws / rec.mask_index) if rec.mask_index else None
        data = train_data_from_manifest(manifest, index, rec.mask_mode or "silhouette")
        logs = {}
        with tempfile.TemporaryDirectory() as tmp:
            for name, batched in (("per_sample", False), ("batched", True)):
                logs[name] = run(settings, data, Path(tmp) / name, batched, a.threads)
            w = [torch.load(Path(tmp) / n / "model.pt", weights_only=True)["state_dict"] for n in logs]
            same = all(torch.equal(w[0][k], w[1][k]) for k in w[0])
        cols = ["epoch", "data_s", "step_s", "cluster_s", "epoch_s"]
        report["runs"][experiment] = {"same_weights": same, **{n: log[cols].to_dict("records") for n, log in logs.items()}}
        for n, log in logs.items():
            tot = log[["data_s", "step_s", "cluster_s", "epoch_s"]].sum()
            print(f"{experiment:16s} {n:10s} epoch {tot.epoch_s:7.1f} s: data {tot.data_s:6.1f} s "
                  f"({100 * tot.data_s / tot.epoch_s:4.1f} %), steps {tot.step_s:7.1f} s, clustering "
                  f"{tot.cluster_s:5.1f} s, other {tot.epoch_s - tot.data_s - tot.step_s - tot.cluster_s:5.1f} s")
        print(f"{experiment:16s} same weights on both paths: {same}")
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
