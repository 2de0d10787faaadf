# Stage 4: librosa features of every clip of a shard, into one Parquet file.


rule features:
    input:
        manifest=MANIFEST,
        ledger=LEDGER,
        transcoded=TRANSCODED,
        trimmed=TRIMMED,
    output:
        parquet=FEATURES,
    log:
        f"{RES}/logs/features/{{split}}/shard-{{shard}}.log",
    conda:
        ENV
    threads: config["features"]["threads"]
    resources:
        mem_mb=2000,
    params:
        clips_dir=audio_dir("clips"),
        features=config["features"],
        sample_rate=config["audio"]["sample_rate"],
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
    conda:
        ENV
    params:
        features_dirs=lambda wildcards: [f"{RES}/features/{s}" for s in splits()],
        clips_root=f"{RES}/audio/clips",
        labels=lambda wildcards: {lab.mid: lab.name for lab in PLAN.labels},
        names=lambda wildcards: dict(PLAN.names),
        example_clips=config["features"]["example_clips"],
        n_examples=config["features"]["n_examples"],
    script:
        "../../scripts/feature_examples.py"
