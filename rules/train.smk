# Stage 3: train one run (method x masks x seed) and, when train.pretrained is ssl, the
# self-supervised warm-up it starts from. Resumable state lives in results/{dataset}/state/...,
# outside the declared outputs (Snakemake deletes those when a job fails); see docs/training.md.


rule pretrain:
    input:
        manifest=MANIFEST,
    output:
        weights=PRETRAIN,
    log:
        "logs/pretrain/{dataset}/{backbone}.log",
    benchmark:
        "benchmarks/pretrain/{dataset}/{backbone}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 8
    resources:
        gpu=pretrain_gpus,
        mem_mb=16000,
        runtime=12 * 60,
    params:
        job=pretrain_params,
    script:
        "../workflow_scripts/pretrain.py"


rule train:
    input:
        unpack(train_inputs),
    output:
        model=RUN_MODEL,
        log_csv=RUN_TRAIN_LOG,
    log:
        "logs/train/{dataset}/{experiment}/{masks}/seed{seed}.log",
    benchmark:
        "benchmarks/train/{dataset}/{experiment}/{masks}/seed{seed}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 8
    resources:
        gpu=train_gpus,
        mem_mb=32000,
        runtime=train_runtime,
    params:
        job=train_params,
    script:
        "../workflow_scripts/train.py"
