"""Adapter: train one run (model.pt + train_log.csv); state in an undeclared folder for resume."""

from maskcl.training.stage import train_stage
from maskcl.workflow import run_job


def main(smk):
    job = smk.params.job
    train_stage(smk.input.manifest, smk.input.get("masks"), job["mask_mode"], job["settings"], job["seed"],
                out_model=smk.output.model, out_log=smk.output.log_csv, state_dir=job["state_dir"],
                threads=smk.threads, dataset=smk.wildcards.dataset)


run_job(main, snakemake)  # noqa: F821 - injected by Snakemake
