# Stage 2: transcode downloaded media to mono 16-bit PCM (WAV window) at audio.sample_rate.


rule transcode:
    input:
        table=DOWNLOADED,
    output:
        table=TRANSCODED,
    log:
        f"{RES}/logs/transcode/{{split}}/shard-{{shard}}.log",
    benchmark:
        f"{RES}/benchmarks/transcode/{{split}}/shard-{{shard}}.tsv"
    conda:
        ENV
    resources:
        mem_mb=node_mem(1000),
    params:
        sample_rate=config["audio"]["sample_rate"],
    script:
        "../../scripts/transcode.py"
