"""Adapter: self-supervised warm-up on the training images → backbone weights."""

from maskcl.training.stage import pretrain_stage
from maskcl.workflow import run_job


def main(smk):
    job = smk.params.job
    pretrain_stage(smk.input.manifest, job["settings"], job["seed"], smk.output.weights, threads=smk.threads,
                   dataset=smk.wildcards.dataset)


run_job(main, snakemake)  # noqa: F821 - injected by Snakemake
