# Stage 1: download the labelled segments of one shard with yt-dlp (resumable per YTID).


if config["cluster"]["download_local"]:

    localrules:
        download,


rule download:
    input:
        manifest=MANIFEST,
        retry=retry_marker,
        demo=demo_media_flag,
    output:
        ledger=LEDGER,
    log:
        f"{RES}/logs/download/{{split}}/shard-{{shard}}.log",
    conda:
        ENV
    resources:
        youtube=1,
        mem_mb=1000,
    params:
        cfg=DOWNLOAD_CFG,
        out_dir=lambda wildcards: f"{RES}/audio/download/{wildcards.split}",
        marker=lambda wildcards: f"{RES}/shards/{wildcards.split}/shard-{wildcards.shard}/download.retry",
    script:
        "../../scripts/download.py"


rule manifest:
    output:
        MANIFEST,
    log:
        f"{RES}/logs/manifest/{{split}}/shard-{{shard}}.log",
    localrule: True
    conda:
        ENV
    params:
        rows=manifest_rows,
    script:
        "../../scripts/manifest.py"
