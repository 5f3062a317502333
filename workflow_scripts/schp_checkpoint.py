"""Adapter: fetch the configured SCHP checkpoint, verify it (strict load, sha256 pin), publish it."""

from maskcl.masks.fetch import CheckpointSource, fetch_checkpoint
from maskcl.workflow import run_job


def main(smk):
    fetch_checkpoint(CheckpointSource.from_config(smk.params.schp), smk.output.checkpoint)


run_job(main, snakemake)  # noqa: F821 - injected by Snakemake
