"""Adapter: evaluate one trained run under every protocol of its dataset."""

from maskcl.evaluation import evaluate_checkpoint
from maskcl.workflow import run_job


def main(smk):
    job = smk.params.job
    # the section dict itself: provenance.config.evaluate records it verbatim (key order included);
    # evaluate_checkpoint builds the EvalSettings record from it and resolves its device; the model
    # must record the run's training settings (job["train"], from the plan) and seed
    evaluate_checkpoint(smk.wildcards.dataset, smk.input.manifest, smk.input.model, smk.output.metrics,
                        smk.output.ranks, settings=job["settings"], train=job["train"], run=job["run"],
                        threads=smk.threads, out_card=smk.output.card)


run_job(main, snakemake)  # noqa: F821 - injected by Snakemake
