"""Adapter: download / verify / extract (or generate) one dataset and write its manifest."""

from maskcl.download import prepare_dataset
from maskcl.workflow import run_job


def main(smk):
    prepare_dataset(**smk.params.dataset, manifest_out=smk.output.manifest,
                    stats_out=smk.output.stats, info_out=smk.output.info, workers=smk.threads)


run_job(main, snakemake)  # noqa: F821 - injected by Snakemake
