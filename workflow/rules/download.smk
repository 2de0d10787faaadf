# Stage 1: download the labelled segments of one shard with yt-dlp (resumable per YTID).
# The shard's segments come in as a parameter, so a change of the selection reruns exactly the
# shards it touches; the job writes them out as the shard's manifest for the later stages.


if config["cluster"]["download_local"]:

    localrules:
        download,
        fetch_metadata,


rule download:
    input:
        demo=demo_media_flag,
    output:
        ledger=LEDGER,
        manifest=MANIFEST,
    log:
        f"{RES}/logs/download/{{split}}/shard-{{shard}}.log",
    conda:
        ENV
    resources:
        youtube=1,
        mem_mb=1000,
    params:
        rows=manifest_rows,
        cfg=DOWNLOAD_CFG,
        out_dir=audio_dir("download"),
        retry_token=retry_token,
        token_file=lambda wildcards, output: os.path.splitext(output.ledger)[0]
        + ".token",
    script:
        "../../scripts/download.py"
