# Stage 2: per-image masks from every configured mask source, and their quality against ground truth.
# Only index.csv is declared: the mask PNGs are written one by one (atomically) beside it, so a killed
# job keeps its finished masks and the rerun parses only the rest (see docs/masks.md).
# With masks.sources including schp, the SCHP checkpoint is itself a (local) rule's output: fetched from
# masks.schp.source, verified by a strict load (and the sha256 pin), then renamed into place.

if SCHP_CHECKPOINT:

    rule schp_checkpoint:
        output:
            checkpoint=SCHP_CHECKPOINT,
        log:
            "logs/schp_checkpoint.log",
        localrule: True
        conda:
            "../envs/parse.yaml"
        params:
            schp=schp_checkpoint_params(),
        script:
            "../workflow_scripts/schp_checkpoint.py"



rule parse:
    input:
        unpack(parse_inputs),
    output:
        index=MASK_INDEX,
    log:
        "logs/parse/{dataset}/{source}.log",
    benchmark:
        "benchmarks/parse/{dataset}/{source}.tsv"
    conda:
        "../envs/parse.yaml"
    threads: 4
    resources:
        mem_mb=parse_mem_mb,
        runtime=parse_runtime,
        gpu=parse_gpus,
    params:
        source=mask_source_params,
    script:
        "../workflow_scripts/parse.py"


rule mask_quality:
    input:
        unpack(mask_quality_inputs),
    output:
        csv=MASK_QUALITY_CSV,
        md=MASK_QUALITY_MD,
    log:
        "logs/mask_quality/{dataset}.log",
    benchmark:
        "benchmarks/mask_quality/{dataset}.tsv"
    conda:
        "../envs/parse.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../workflow_scripts/mask_quality.py"
