# Stage 5: balanced per-label datasets, one CNN per label plus two baselines, metrics and plots.
# Needs from common.smk: RES, ENV, LABEL_SLUGS, label_info(slug) -> {mid, name},
# feature_shards(split) -> list of Parquet shard paths of a split.

DATASET = f"{RES}/datasets/{{label}}/{{part}}.tsv"


rule dataset:
    input:
        train=lambda wildcards: feature_shards("train"),
        eval=lambda wildcards: feature_shards("eval"),
        ontology=ontology_input,
    output:
        train=DATASET.replace("{part}", "train"),
        val=DATASET.replace("{part}", "val"),
        test=DATASET.replace("{part}", "test"),
    log:
        f"{RES}/logs/datasets/{{label}}.log",
    benchmark:
        f"{RES}/benchmarks/dataset/{{label}}.tsv"
    conda:
        ENV
    resources:
        mem_mb=node_mem(2000),
    params:
        use_eval=bool(config["metadata"].get("eval_segments")),
        label=lambda wildcards: label_info(wildcards.label),
        val_fraction=config["training"]["val_fraction"],
        test_fraction=config["training"]["test_fraction"],
        seed=config["selection"]["seed"],
    script:
        "../../scripts/make_dataset.py"


rule train:
    input:
        train=rules.dataset.output.train,
        val=rules.dataset.output.val,
        test=rules.dataset.output.test,
        train_features=lambda wildcards: feature_shards("train"),
        eval_features=lambda wildcards: feature_shards("eval"),
    output:
        model=f"{RES}/models/{{label}}.pt",
        metrics=f"{RES}/metrics/{{label}}.json",
        scores=f"{RES}/metrics/{{label}}_scores.tsv",
        roc_pr=report(
            f"{RES}/plots/{{label}}/roc_pr.png",
            caption="../report/roc_pr.rst",
            category="2. Classifiers",
            subcategory="{label}",
        ),
        confusion=report(
            f"{RES}/plots/{{label}}/confusion.png",
            caption="../report/confusion.rst",
            category="2. Classifiers",
            subcategory="{label}",
        ),
        curves=report(
            f"{RES}/plots/{{label}}/training_curves.png",
            caption="../report/training_curves.rst",
            category="2. Classifiers",
            subcategory="{label}",
        ),
    log:
        f"{RES}/logs/train/{{label}}.log",
    benchmark:
        f"{RES}/benchmarks/train/{{label}}.tsv"
    conda:
        ENV
    threads: config["training"]["threads"]
    resources:
        mem_mb=node_mem(8000),
        gpu=config["training"]["gpus"],
    params:
        label=lambda wildcards: _smk.report_param(
            {"slug": wildcards.label, **label_info(wildcards.label)}
        ),
        training=report_config("training"),
        model=label_model_param(),
        features=report_config("features"),
        sample_rate=config["audio"]["sample_rate"],
        clip_seconds=config["audio"]["clip_seconds"],
        seed=config["selection"]["seed"],
    script:
        "../../scripts/train_label.py"


rule metrics_summary:
    input:
        metrics=expand(f"{RES}/metrics/{{label}}.json", label=LABEL_SLUGS),
    output:
        summary=report(
            f"{RES}/metrics/summary.tsv",
            caption="../report/summary.rst",
            category="3. Metrics",
        ),
        plot=report(
            f"{RES}/plots/summary.png",
            caption="../report/summary_plot.rst",
            category="3. Metrics",
        ),
    log:
        f"{RES}/logs/metrics_summary.log",
    benchmark:
        f"{RES}/benchmarks/metrics_summary.tsv"
    conda:
        ENV
    script:
        "../../scripts/summarize_metrics.py"


rule eval_scores:
    input:
        binary=expand(f"{RES}/metrics/{{label}}_scores.tsv", label=LABEL_SLUGS),
        multilabel=multilabel_scores,
    output:
        f"{RES}/metrics/eval_scores.parquet",
    log:
        f"{RES}/logs/eval_scores.log",
    benchmark:
        f"{RES}/benchmarks/eval_scores.tsv"
    conda:
        ENV
    params:
        labels=labels_param,
    script:
        "../../scripts/eval_scores.py"
