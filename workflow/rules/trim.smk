# Stage 3: cut exactly [start, end) of each segment; pad and flag clips shorter than 10 s.


rule trim:
    input:
        transcoded=TRANSCODED,
        manifest=MANIFEST,
    output:
        table=TRIMMED,
    log:
        f"{RES}/logs/trim/{{split}}/shard-{{shard}}.log",
    conda:
        ENV
    resources:
        mem_mb=1000,
    params:
        download_dir=lambda wildcards: f"{RES}/audio/download/{wildcards.split}",
        pcm_dir=lambda wildcards: f"{RES}/audio/pcm/{wildcards.split}",
        clips_dir=lambda wildcards: f"{RES}/audio/clips/{wildcards.split}",
        clip_seconds=config["audio"]["clip_seconds"],
        keep_intermediate=config["audio"]["keep_intermediate"],
    script:
        "../../scripts/trim.py"
