# Stage 3: cut exactly [start, end) of each segment; pad and flag clips shorter than 10 s.


rule trim:
    input:
        table=TRANSCODED,
    output:
        table=TRIMMED,
    log:
        f"{RES}/logs/trim/{{split}}/shard-{{shard}}.log",
    benchmark:
        f"{RES}/benchmarks/trim/{{split}}/shard-{{shard}}.tsv"
    conda:
        ENV
    resources:
        mem_mb=node_mem(1000),
    params:
        clip_seconds=config["audio"]["clip_seconds"],
        keep_intermediate=config["audio"]["keep_intermediate"],
        keep_clips=config["audio"]["keep_clips"],
    script:
        "../../scripts/trim.py"
