#!/usr/bin/env bash
# The SynthCC benchmark stage by stage and seed by seed (docs/benchmarks.md, "Science"):
#   stage `verdict`:  configs/synthcc_benchmark.yaml, the official MaskCL recipe, ClusterContrast, the supervised
#                     bound and the untrained references (~1.5 h on 2 cores for 3 seeds);
#   stage `methods`:  the same plus configs/synthcc_methods.yaml, CACL, SpCL and ISE on their own recipes' schedules;
#   stage `variant`:  the same plus configs/synthcc_variant.yaml, the pre-registered MaskCL variant (~1.5 h more);
#   stage `switches`: the same plus configs/synthcc_switches.yaml, one switch at a time (~3 h more).
# Each stage runs seeds [0], [0, 1], [0, 1, 2]; after every step the tables rule has written results/tables/ for the
# finished seeds, and this script keeps a copy in results/benchmark/<stage>-seeds<0..s>/, so a session that ends
# early leaves its finished tables behind, and a rerun continues where it stopped (Snakemake reuses finished runs;
# a killed training run resumes from its last epoch). Run from the repository root, after the README's setup:
#   bash bench/synthcc_benchmark.sh [more config files, merged over the benchmark: e.g. configs/synthcc_paper_scale.yaml]
# $STAGES picks stages (default "verdict methods variant switches"), e.g. STAGES=methods.
# Extra snakemake options go in $SNAKEMAKE_ARGS (e.g. "--resources gpu=4"; the default allows one training job).
# On 2 CPU cores, two 1-thread training jobs side by side did about 15 % more work per hour than one 2-thread job
# (docs/benchmarks.md): SNAKEMAKE_ARGS="--set-threads train=1 evaluate=1 --resources gpu=2".
set -euo pipefail
snakemake=${SNAKEMAKE:-.venv/bin/snakemake}
seeds_file=$(mktemp --suffix=.yaml)   # `--config seeds=[0]` would hand the schema the string '0'
trap 'rm -f "$seeds_file"' EXIT
for stage in ${STAGES:-verdict methods variant switches}; do
  configs=(configs/synthcc_benchmark.yaml)
  [[ $stage == methods ]] && configs+=(configs/synthcc_methods.yaml)
  [[ $stage == variant || $stage == switches ]] && configs+=(configs/synthcc_variant.yaml)
  [[ $stage == switches ]] && configs+=(configs/synthcc_switches.yaml)
  seeds=""
  for seed in 0 1 2; do
    seeds="${seeds:+$seeds, }$seed"
    echo "seeds: [$seeds]" > "$seeds_file"
    echo "== $(date -u +%FT%TZ) stage $stage, seeds [$seeds]"
    # one --configfile with every file, the seeds last: a second flag would replace the first
    # shellcheck disable=SC2086
    "$snakemake" --cores all --rerun-incomplete ${SNAKEMAKE_ARGS:-} --configfile "${configs[@]}" "$@" "$seeds_file"
    out="results/benchmark/$stage-seeds0-$seed"
    rm -rf "$out.tmp" && mkdir -p "$out.tmp" && cp -r results/tables results/figures "$out.tmp/" \
      && rm -rf "$out" && mv "$out.tmp" "$out"
  done
done
echo "== $(date -u +%FT%TZ) done; summary: .venv/bin/python bench/synthcc_science.py results/synthcc/runs"
