# Stage 1: get the labelled segments of one shard, from local mirrors (config `sources`) or with
# yt-dlp (resumable per YTID). The shard's segments come in as a parameter, so a change of the
# selection reruns exactly the shards it touches; the job writes the shard table that the later
# stages read and extend. The download settings are a parameter with secrets redacted (Snakemake
# stores parameters); the script takes those from the config.


rule index_sources:
    output:
        index=SOURCE_INDEX,
        lookup=SOURCE_LOOKUP,
    log:
        f"{RES}/logs/index_sources.log",
    benchmark:
        f"{RES}/benchmarks/index_sources.tsv"
    conda:
        ENV
    params:
        sources=config["sources"],
        files=source_files(),
    script:
        "../../scripts/index_sources.py"


if config["cluster"]["download_local"]:

    localrules:
        download,
        fetch_metadata,


rule download:
    input:
        demo=demo_media_flag,
        index=source_index,
    output:
        table=DOWNLOADED,
    log:
        f"{RES}/logs/download/{{split}}/shard-{{shard}}.log",
    benchmark:
        f"{RES}/benchmarks/download/{{split}}/shard-{{shard}}.tsv"
    conda:
        ENV
    resources:
        youtube=youtube_units,
        mem_mb=node_mem(1000),
    params:
        rows=manifest_rows,
        cfg=redact_config(DOWNLOAD_CFG),
        sources=config["sources"],
        retry_token=retry_token,
    script:
        "../../scripts/download.py"
