# Stage 4: evaluate a trained run under every protocol of its dataset (docs/protocols.md).


rule evaluate:
    input:
        model=RUN_MODEL,
        manifest=MANIFEST,
    output:
        metrics=RUN_METRICS,
        ranks=RUN_RANKS,
        card=RUN_CARD,
    log:
        "logs/evaluate/{dataset}/{experiment}/{masks}/seed{seed}.log",
    benchmark:
        "benchmarks/evaluate/{dataset}/{experiment}/{masks}/seed{seed}.tsv"
    conda:
        "../envs/evaluate.yaml"
    threads: 4
    resources:
        gpu=evaluate_gpus,
        mem_mb=8000,
        runtime=120,
    params:
        job=evaluate_params,
    script:
        "../workflow_scripts/evaluate.py"
