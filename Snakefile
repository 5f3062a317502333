# MaskCL pipeline: download -> parse -> train -> evaluate -> tables.
# This file is a table of contents; helpers live in rules/common.smk, logic in the maskcl package.
from snakemake.utils import min_version

min_version("9.0")


# The configuration: config.yaml beside this file, always, with --configfile files merged over it (read,
# checked and validated in rules/common.smk, also under --directory).
include: "rules/common.smk"


report: "report/workflow.rst"


include: "rules/download.smk"
include: "rules/parse.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/tables.smk"


rule all:
    default_target: True
    input:
        final_targets(),
