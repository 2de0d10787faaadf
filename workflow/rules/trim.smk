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
        download_dir=audio_dir("download"),
        pcm_dir=audio_dir("pcm"),
        clips_dir=audio_dir("clips"),
        clip_seconds=config["audio"]["clip_seconds"],
        keep_intermediate=config["audio"]["keep_intermediate"],
    script:
        "../../scripts/trim.py"
