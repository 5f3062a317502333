"""Adapter: masks of one dataset from one mask source (resumable), then its index.csv."""

from pathlib import Path

from maskcl.datasets import dataset_splits
from maskcl.masks import parse_dataset
from maskcl.workflow import run_job


def main(smk):
    parse_dataset(smk.input.manifest, Path(smk.output.index).parent, smk.params.source["name"],
                  source_params=smk.params.source["params"], index_path=smk.output.index,
                  threads=smk.threads, splits=dataset_splits(smk.wildcards.dataset))


run_job(main, snakemake)  # noqa: F821 - injected by Snakemake
