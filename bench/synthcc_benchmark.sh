#!/usr/bin/env bash
# The SynthCC benchmark (configs/synthcc_benchmark.yaml) seed by seed: after seed s the tables rule has written
# results/tables/ for seeds 0..s, so a session that ends early still leaves finished seeds' tables behind, and a
# rerun continues where it stopped (Snakemake reuses finished runs; a killed training run resumes from its last
# epoch). Run from the repository root, after the README's setup:
#   bash bench/synthcc_benchmark.sh [more config files, merged over the benchmark: e.g. configs/synthcc_paper_scale.yaml]
set -euo pipefail
snakemake=${SNAKEMAKE:-.venv/bin/snakemake}
seeds_file=$(mktemp --suffix=.yaml)   # `--config seeds=[0]` would hand the schema the string '0'
trap 'rm -f "$seeds_file"' EXIT
seeds=""
for seed in 0 1 2; do
  seeds="${seeds:+$seeds, }$seed"
  echo "seeds: [$seeds]" > "$seeds_file"
  echo "== $(date -u +%FT%TZ) seeds [$seeds]"
  # one --configfile with every file, the seeds last: a second flag would replace the first
  "$snakemake" --cores all --rerun-incomplete --configfile configs/synthcc_benchmark.yaml "$@" "$seeds_file"
done
echo "== $(date -u +%FT%TZ) done; summary: .venv/bin/python bench/synthcc_science.py results/synthcc/runs"
