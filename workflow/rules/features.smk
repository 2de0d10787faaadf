# Stage 4: librosa features of every clip of a shard, into one Parquet file.


rule features:
    input:
        table=TRIMMED,
    output:
        parquet=FEATURES,
        table=FEATURED,
    log:
        f"{RES}/logs/features/{{split}}/shard-{{shard}}.log",
    benchmark:
        f"{RES}/benchmarks/features/{{split}}/shard-{{shard}}.tsv"
    conda:
        ENV
    threads: config["features"]["threads"]
    resources:
        mem_mb=node_mem(2000),
    params:
        features=config["features"],
        sample_rate=config["audio"]["sample_rate"],
        keep_clips=config["audio"]["keep_clips"],
        keep_intermediate=config["audio"]["keep_intermediate"],
        clip_seconds=config["audio"]["clip_seconds"],
        names=lambda wildcards: dict(PLAN.names),
    script:
        "../../scripts/features.py"


rule feature_examples:
    input:
        features=per_shard(FEATURES),
    output:
        report(
            directory(f"{RES}/plots/examples"),
            patterns=["{name}.png"],
            caption="../report/feature_examples.rst",
            category="1. Data",
            subcategory="Feature examples",
        ),
    log:
        f"{RES}/logs/feature_examples.log",
    benchmark:
        f"{RES}/benchmarks/feature_examples.tsv"
    conda:
        ENV
    params:
        labels=lambda wildcards: _smk.report_param(
            {lab.mid: lab.name for lab in PLAN.labels}
        ),
        names=lambda wildcards: _smk.report_param(dict(PLAN.names)),
        example_clips=_smk.report_param(config["features"]["example_clips"]),
        n_examples=config["features"]["n_examples"],
    script:
        "../../scripts/feature_examples.py"
