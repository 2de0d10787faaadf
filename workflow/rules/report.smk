# Report: where the time goes (benchmarks per rule), each label's worst mistakes with audio and
# its summary features by class.
# Needs from common.smk: RES, ENV, FEATURES, LABEL_SLUGS, label_info(slug), per_shard(pattern),
# benchmark_inputs; from train.smk: the rules dataset and train.


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
    conda:
        ENV
    params:
        label=lambda wildcards: label_info(wildcards.label)["name"],
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

