"""Adapter: score every mask source of one dataset against its ground-truth parsing."""

from maskcl.datasets import dataset_splits
from maskcl.masks import write_quality_report
from maskcl.workflow import run_job


def main(smk):
    indexes = {name: path for name, path in smk.input.items() if name != "manifest"}
    write_quality_report(smk.input.manifest, indexes, smk.output.csv, smk.output.md,
                         dataset=smk.wildcards.dataset, splits=dataset_splits(smk.wildcards.dataset))


run_job(main, snakemake)  # noqa: F821 - injected by Snakemake
