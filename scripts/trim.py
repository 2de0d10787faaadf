"""Snakemake adapter: trim one shard."""

from audiosetflow.audio.trim import run_trim
from audiosetflow.logutil import setup_logging
from audiosetflow.shard import Layout
from audiosetflow.smk import stage_job

log = setup_logging(snakemake.log[0], name="audiosetflow.trim")
with stage_job("trim", log):
    run_trim(
        snakemake.input.table,
        shard=Layout.locate(snakemake.output.table),
        out=snakemake.output.table,
        clip_seconds=snakemake.params.clip_seconds,
        keep_intermediate=snakemake.params.keep_intermediate,
        keep_clips=snakemake.params.keep_clips,
        logger=log,
    )
