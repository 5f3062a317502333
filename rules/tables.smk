# Stage 5: paper tables (Markdown, LaTeX, CSV) and figures from every evaluated run, marked for
# `snakemake --report report.html`. Input functions live in rules/common.smk; the work is
# maskcl.reporting.build_report (docs/reporting.md). Figure folders are directory outputs because
# their content depends on the runs, mask sources and protocols present; each PNG has a sidecar CSV.
# The outputs and their report entries come from one list, maskcl.layout.TABLES and FIGURES (built by
# maskcl.layout.tables_outputs); each entry's caption is report/<stem or kind>.rst.
from maskcl.layout import tables_outputs


rule tables:
    input:
        metrics=all_metrics(),
        ranks=all_ranks(),
        train_logs=all_train_logs(),
        manifests=all_manifests(),
        mask_indexes=all_mask_indexes(),
        dataset_infos=all_dataset_infos(),
    output:
        **tables_outputs(report, directory),
    log:
        "logs/tables/tables.log",
    benchmark:
        "benchmarks/tables/tables.tsv"
    localrule: True
    conda:
        "../envs/tables.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        experiments=experiment_settings(),
        manifests=manifests_by_dataset(),
        mask_indexes=mask_indexes_by_source(),
        settings=config["tables"],
    script:
        "../workflow_scripts/tables.py"
