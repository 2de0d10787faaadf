"""Snakemake adapter: trim one shard."""

from audiosetflow.logutil import setup_logging
from audiosetflow.pipeline import run_trim

run_trim(
    transcoded=snakemake.input.transcoded,
    manifest=snakemake.input.manifest,
    download_dir=snakemake.params.download_dir,
    pcm_dir=snakemake.params.pcm_dir,
    clips_dir=snakemake.params.clips_dir,
    out=snakemake.output.table,
    clip_seconds=snakemake.params.clip_seconds,
    keep_intermediate=snakemake.params.keep_intermediate,
    name=f"trim {snakemake.wildcards.split}/{snakemake.wildcards.shard}",
    logger=setup_logging(snakemake.log[0], name="audiosetflow.trim"),
)
