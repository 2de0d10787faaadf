# Stage 2: transcode downloaded media to mono 16-bit PCM (WAV window) at audio.sample_rate.


rule transcode:
    input:
        ledger=LEDGER,
    output:
        table=TRANSCODED,
    log:
        f"{RES}/logs/transcode/{{split}}/shard-{{shard}}.log",
    conda:
        ENV
    resources:
        mem_mb=1000,
    params:
        download_dir=audio_dir("download"),
        pcm_dir=audio_dir("pcm"),
        clips_dir=audio_dir("clips"),
        sample_rate=config["audio"]["sample_rate"],
    script:
        "../../scripts/transcode.py"
