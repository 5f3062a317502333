"""Summarise a SynthCC benchmark run (configs/synthcc_benchmark.yaml) for docs/benchmarks.md.

Reads every ``results/<dataset>/runs/<experiment>/<masks>/seed<seed>/`` folder and prints Markdown:
accuracy mean ± std over seeds per protocol, and pseudo-label quality over the epochs (NMI and ARI
against identities and against outfits, cluster counts, singletons). The tables rule reports the
accuracy too; this script adds the per-epoch label diagnostics the rule's figure only draws.

    .venv/bin/python bench/synthcc_science.py results/synthcc/runs
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from maskcl.reporting.runs import load_runs


def collect(runs: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    metrics = sorted(runs.glob("*/*/seed*/metrics.json"))
    if not metrics:
        raise SystemExit(f"{runs}: no */*/seed*/metrics.json found; run the benchmark config first")
    logs_in = sorted(runs.glob("*/*/seed*/train_log.csv"))
    acc, logs = [], []
    for run in load_runs(metrics, train_logs=logs_in):  # the tables rule's reader: same checks, same keys
        k = run.key
        for proto, r in run.metrics["protocols"].items():
            acc.append(dict(experiment=k.experiment, masks=k.masks, seed=k.seed, protocol=proto,
                            mAP=100 * r["mAP"], R1=100 * r["rank1"], R5=100 * r["rank5"]))
        log = pd.read_csv(run.train_log_path)
        if log.empty:  # the untrained reference logs no epoch
            continue
        log["experiment"], log["seed"] = k.experiment, k.seed
        logs.append(log)
    return pd.DataFrame(acc), pd.concat(logs, ignore_index=True)


def mean_std(x: pd.Series) -> str:
    return f"{x.mean():.1f} ± {x.std(ddof=1):.1f}" if len(x) > 1 else f"{x.mean():.1f}"


def accuracy_table(acc: pd.DataFrame, protocol: str) -> str:
    rows = ["| experiment | n | mAP | R1 | R5 | per seed mAP |", "|---|---:|---:|---:|---:|---|"]
    sub = acc[acc.protocol == protocol]
    for exp, g in sub.groupby("experiment", sort=False):
        g = g.sort_values("seed")
        per_seed = " / ".join(f"{v:.1f}" for v in g.mAP)
        rows.append(f"| `{exp}` | {len(g)} | {mean_std(g.mAP)} | {mean_std(g.R1)} | {mean_std(g.R5)} | {per_seed} |")
    return "\n".join(rows)


def label_table(logs: pd.DataFrame, epochs: list[int]) -> str:
    cols = ["nmi_id", "ari_id", "nmi_clothes", "ari_clothes", "clusters", "outliers", "ejected", "singletons"]
    rows = ["| experiment | epoch | NMI id | ARI id | NMI outfit | ARI outfit | clusters | outliers | ejected | singleton classes |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for exp, g in logs.groupby("experiment", sort=False):
        if g["nmi_id"].isna().all() or (g["ari_id"] == 1.0).all():
            continue  # supervised: trained on the true identities, no pseudo-labels to score
        for e in epochs:
            ge = g[g.epoch == e]
            if ge.empty:
                continue
            m = ge[cols].mean()
            rows.append(f"| `{exp}` | {e} | {m.nmi_id:.2f} | {m.ari_id:.3f} | {m.nmi_clothes:.2f} | "
                        f"{m.ari_clothes:.3f} | {m.clusters:.0f} | {m.outliers:.0f} | {m.ejected:.0f} | {m.singletons:.0f} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, help="results/<dataset>/runs")
    ap.add_argument("--epochs", default="1,4,8,12", help="epochs of the label-quality table")
    args = ap.parse_args()
    acc, logs = collect(args.runs)
    for proto in acc.protocol.unique():
        print(f"\n### Protocol `{proto}` (%, mean ± std over seeds)\n")
        print(accuracy_table(acc, proto))
    print("\n### Pseudo-label quality (mean over seeds)\n")
    print(label_table(logs, [int(e) for e in args.epochs.split(",")]))
    if "nbr_precision_id" in logs:
        nb = logs.dropna(subset=["nbr_precision_id"]).groupby("experiment")[["nbr_precision_id", "nbr_precision_clothes"]]
        print("\n### Neighbour precision (MaskCL; mean over epochs with neighbours and seeds)\n")
        print("| experiment | same identity | same outfit |\n|---|---:|---:|")
        for exp, m in nb.mean().iterrows():
            print(f"| `{exp}` | {m.nbr_precision_id:.3f} | {m.nbr_precision_clothes:.3f} |")


if __name__ == "__main__":
    main()
