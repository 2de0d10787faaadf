# Report: the landing page (run overview), where the time goes (benchmarks per rule), each
# label's worst mistakes with audio and its summary features by class.
# Needs from common.smk: RES, ENV, FEATURES, LABEL_SLUGS, label_info(slug), per_shard(pattern),
# benchmark_inputs, labels_param, datasets_param, dropped_param; from train.smk: DATASET and
# the rules dataset, train and metrics_summary; from aggregate.smk: aggregate and funnel.


rule errors:
    input:
        scores=rules.train.output.scores,
        metrics=rules.train.output.metrics,
        features=per_shard(FEATURES),
    output:
        report(
            f"{RES}/reports/errors/{{label}}.html",
            caption="../report/errors.rst",
            category="2. Classifiers",
            subcategory="{label}",
        ),
    log:
        f"{RES}/logs/errors/{{label}}.log",
    benchmark:
        f"{RES}/benchmarks/errors/{{label}}.tsv"
    localrule: True
    conda:
        ENV
    params:
        model="cnn",
        n=5,
    script:
        "../../scripts/errors.py"


rule class_features:
    input:
        train=rules.dataset.output.train,
        val=rules.dataset.output.val,
        test=rules.dataset.output.test,
        features=per_shard(FEATURES),
    output:
        report(
            f"{RES}/plots/{{label}}/summary_features.png",
            caption="../report/class_features.rst",
            category="2. Classifiers",
            subcategory="{label}",
        ),
    log:
        f"{RES}/logs/class_features/{{label}}.log",
    benchmark:
        f"{RES}/benchmarks/class_features/{{label}}.tsv"
    localrule: True
    conda:
        ENV
    params:
        label=lambda wildcards: _smk.report_param(label_info(wildcards.label)),
    script:
        "../../scripts/class_features.py"


rule benchmarks:
    input:
        benchmark_inputs,
    output:
        table=report(
            f"{RES}/reports/benchmarks.tsv",
            caption="../report/benchmarks.rst",
            category="0. Overview",
        ),
        plot=report(
            f"{RES}/plots/benchmarks.png",
            caption="../report/benchmarks.rst",
            category="0. Overview",
        ),
    log:
        f"{RES}/logs/benchmarks.log",
    benchmark:
        f"{RES}/benchmarks/benchmarks.tsv"
    localrule: True
    conda:
        ENV
    params:
        root=f"{RES}/benchmarks",
    script:
        "../../scripts/benchmarks.py"


rule overview:
    input:
        summary=rules.metrics_summary.output.summary,
        metrics=expand(f"{RES}/metrics/{{label}}.json", label=LABEL_SLUGS),
        datasets=expand(DATASET, label=LABEL_SLUGS, part=["train", "val", "test"]),
        availability=rules.aggregate.output.availability,
        failures=rules.aggregate.output.failures,
        sources=rules.aggregate.output.sources,
        multilabel=multilabel_overview,
        funnel=rules.funnel.output[0],
        benchmarks=rules.benchmarks.output.table,
        benchmarks_plot=rules.benchmarks.output.plot,
    output:
        report(
            f"{RES}/reports/overview.html",
            caption="../report/overview.rst",
            category="0. Overview",
        ),
    log:
        f"{RES}/logs/overview.log",
    benchmark:
        f"{RES}/benchmarks/overview.tsv"
    localrule: True
    conda:
        ENV
    params:
        config=report_config(),
        labels=labels_param,
        datasets=datasets_param,
        dropped=dropped_param,
    script:
        "../../scripts/overview.py"
