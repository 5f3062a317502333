# Stage 1: fetch / verify / extract (or generate) a dataset and write its manifest and statistics.


rule download:
    input:
        unpack(dataset_inputs),
    output:
        manifest=MANIFEST,
        stats=STATS,
        info=DATASET_INFO,
    log:
        "logs/download/{dataset}.log",
    benchmark:
        "benchmarks/download/{dataset}.tsv"
    conda:
        "../envs/download.yaml"
    localrule: True
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        dataset=dataset_params,
    script:
        "../workflow_scripts/download.py"
