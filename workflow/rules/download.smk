# Stage 1: download the labelled segments of one shard with yt-dlp (resumable per YTID).
# The shard's segments come in as a parameter, so a change of the selection reruns exactly the
# shards it touches; the job writes the shard table that the later stages read and extend.


if config["cluster"]["download_local"]:

    localrules:
        download,
        fetch_metadata,


rule download:
    input:
        demo=demo_media_flag,
    output:
        table=DOWNLOADED,
    log:
        f"{RES}/logs/download/{{split}}/shard-{{shard}}.log",
    benchmark:
        f"{RES}/benchmarks/download/{{split}}/shard-{{shard}}.tsv"
    conda:
        ENV
    resources:
        youtube=1,
        mem_mb=1000,
    params:
        rows=manifest_rows,
        cfg=DOWNLOAD_CFG,
        retry_token=retry_token,
    script:
        "../../scripts/download.py"
