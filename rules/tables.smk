# Stage 5: paper tables (Markdown, LaTeX, CSV) and figures from every evaluated run, marked for
# `snakemake --report report.html`. Input functions live in rules/common.smk; the work is
# maskcl.reporting.build_report (docs/reporting.md). Figure folders are directory outputs because
# their content depends on the runs, mask sources and protocols present; each PNG has a sidecar CSV.


rule tables:
    input:
        metrics=all_metrics(),
        ranks=all_ranks(),
        train_logs=all_train_logs(),
        manifests=all_manifests(),
        mask_indexes=all_mask_indexes(),
        dataset_infos=all_dataset_infos(),
    output:
        results_md=report(
            "results/tables/results.md",
            caption="../report/results.rst",
            category="Tables",
            subcategory="All protocols",
            labels={"table": "results", "format": "Markdown"},
        ),
        results_tex=report(
            "results/tables/results.tex",
            caption="../report/results.rst",
            category="Tables",
            subcategory="All protocols",
            labels={"table": "results", "format": "LaTeX"},
        ),
        results_csv=report(
            "results/tables/results.csv",
            caption="../report/results.rst",
            category="Tables",
            subcategory="All protocols",
            labels={"table": "results", "format": "CSV"},
        ),
        headline_md=report(
            "results/tables/headline.md",
            caption="../report/headline.rst",
            category="Tables",
            subcategory="Headline protocol",
            labels={"table": "headline", "format": "Markdown"},
        ),
        headline_tex=report(
            "results/tables/headline.tex",
            caption="../report/headline.rst",
            category="Tables",
            subcategory="Headline protocol",
            labels={"table": "headline", "format": "LaTeX"},
        ),
        headline_csv=report(
            "results/tables/headline.csv",
            caption="../report/headline.rst",
            category="Tables",
            subcategory="Headline protocol",
            labels={"table": "headline", "format": "CSV"},
        ),
        ablation_masks_md=report(
            "results/tables/ablation_masks.md",
            caption="../report/ablation_masks.rst",
            category="Tables",
            subcategory="Ablation: mask source and mode",
            labels={"table": "ablation_masks", "format": "Markdown"},
        ),
        ablation_masks_tex=report(
            "results/tables/ablation_masks.tex",
            caption="../report/ablation_masks.rst",
            category="Tables",
            subcategory="Ablation: mask source and mode",
            labels={"table": "ablation_masks", "format": "LaTeX"},
        ),
        ablation_masks_csv=report(
            "results/tables/ablation_masks.csv",
            caption="../report/ablation_masks.rst",
            category="Tables",
            subcategory="Ablation: mask source and mode",
            labels={"table": "ablation_masks", "format": "CSV"},
        ),
        ablation_methods_md=report(
            "results/tables/ablation_methods.md",
            caption="../report/ablation_methods.rst",
            category="Tables",
            subcategory="Ablation: methods",
            labels={"table": "ablation_methods", "format": "Markdown"},
        ),
        ablation_methods_tex=report(
            "results/tables/ablation_methods.tex",
            caption="../report/ablation_methods.rst",
            category="Tables",
            subcategory="Ablation: methods",
            labels={"table": "ablation_methods", "format": "LaTeX"},
        ),
        ablation_methods_csv=report(
            "results/tables/ablation_methods.csv",
            caption="../report/ablation_methods.rst",
            category="Tables",
            subcategory="Ablation: methods",
            labels={"table": "ablation_methods", "format": "CSV"},
        ),
        ablation_components_md=report(
            "results/tables/ablation_components.md",
            caption="../report/ablation_components.rst",
            category="Tables",
            subcategory="Ablation: MaskCL components",
            labels={"table": "ablation_components", "format": "Markdown"},
        ),
        ablation_components_tex=report(
            "results/tables/ablation_components.tex",
            caption="../report/ablation_components.rst",
            category="Tables",
            subcategory="Ablation: MaskCL components",
            labels={"table": "ablation_components", "format": "LaTeX"},
        ),
        ablation_components_csv=report(
            "results/tables/ablation_components.csv",
            caption="../report/ablation_components.rst",
            category="Tables",
            subcategory="Ablation: MaskCL components",
            labels={"table": "ablation_components", "format": "CSV"},
        ),
        published_md=report(
            "results/tables/published.md",
            caption="../report/published.rst",
            category="Tables",
            subcategory="Published numbers",
            labels={"table": "published", "format": "Markdown"},
        ),
        published_tex=report(
            "results/tables/published.tex",
            caption="../report/published.rst",
            category="Tables",
            subcategory="Published numbers",
            labels={"table": "published", "format": "LaTeX"},
        ),
        published_csv=report(
            "results/tables/published.csv",
            caption="../report/published.rst",
            category="Tables",
            subcategory="Published numbers",
            labels={"table": "published", "format": "CSV"},
        ),
        runs_csv=report(
            "results/tables/runs.csv",
            caption="../report/runs.rst",
            category="Tables",
            subcategory="Every run and seed",
            labels={"table": "runs", "format": "CSV"},
        ),
        cmc=report(
            directory("results/figures/cmc"),
            patterns=["{dataset}/{protocol}.png"],
            caption="../report/cmc.rst",
            category="Figures",
            subcategory="CMC curves",
            labels={"dataset": "{dataset}", "protocol": "{protocol}"},
        ),
        retrieval=report(
            directory("results/figures/retrieval"),
            patterns=["{dataset}/{experiment}/{masks}/seed{seed}/{protocol}.png"],
            caption="../report/retrieval.rst",
            category="Figures",
            subcategory="Retrieval grids",
            labels={
                "dataset": "{dataset}",
                "experiment": "{experiment}",
                "masks": "{masks}",
                "seed": "{seed}",
                "protocol": "{protocol}",
            },
        ),
        training=report(
            directory("results/figures/training"),
            patterns=["{dataset}/{experiment}/{masks}.png"],
            caption="../report/training.rst",
            category="Figures",
            subcategory="Training curves",
            labels={
                "dataset": "{dataset}",
                "experiment": "{experiment}",
                "masks": "{masks}",
            },
        ),
        pseudo_labels=report(
            directory("results/figures/pseudo_labels"),
            patterns=["{dataset}.png"],
            caption="../report/pseudo_labels.rst",
            category="Figures",
            subcategory="Pseudo-label quality",
            labels={"dataset": "{dataset}"},
        ),
        masks=report(
            directory("results/figures/masks"),
            patterns=["{dataset}/{source}.png"],
            caption="../report/masks.rst",
            category="Figures",
            subcategory="Mask overlays",
            labels={"dataset": "{dataset}", "source": "{source}"},
        ),
        datasets=report(
            directory("results/figures/datasets"),
            patterns=["{dataset}.png"],
            caption="../report/datasets.rst",
            category="Figures",
            subcategory="Datasets",
            labels={"dataset": "{dataset}"},
        ),
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
        settings=config["tables"],
    script:
        "../workflow_scripts/tables.py"
