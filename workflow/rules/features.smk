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
        clips_dir=lambda wildcards: f"{RES}/audio/clips/{wildcards.split}",
        features=config["features"],
        sample_rate=config["audio"]["sample_rate"],
        names=lambda wildcards: {m: PLAN.names[m] for m in PLAN.names},
    script:
        "../../scripts/features.py"
