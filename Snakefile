# MaskCL pipeline: download -> parse -> train -> evaluate -> tables.
# This file is a table of contents; helpers live in rules/common.smk, logic in the maskcl package.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/download.smk"
include: "rules/parse.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/tables.smk"


rule all:
    default_target: True
    input:
        final_targets(),
