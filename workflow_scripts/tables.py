"""Adapter: every table and figure of the evaluated runs (maskcl.reporting.build_report)."""

from pathlib import Path

from maskcl.reporting import build_report
from maskcl.workflow import run_job


def main(smk):
    build_report(list(smk.input.metrics), experiments=smk.params.experiments,
                 tables_dir=Path(smk.output.results_csv).parent, figures_dir=Path(smk.output.cmc).parent,
                 ranks=list(smk.input.ranks), train_logs=list(smk.input.train_logs),
                 manifests=dict(smk.params.manifests),
                 mask_indexes={(d, s): path for d, s, path in smk.params.mask_indexes},
                 dataset_infos=list(smk.input.dataset_infos), **smk.params.settings)


run_job(main, snakemake)  # noqa: F821 - injected by Snakemake
