"""Snakemake adapter: transcode one shard."""

from audiosetflow.audio.transcode import run_transcode
from audiosetflow.logutil import setup_logging
from audiosetflow.shard import Layout
from audiosetflow.smk import stage_job

log = setup_logging(snakemake.log[0], name="audiosetflow.transcode")
with stage_job("transcode", log):
    run_transcode(
        snakemake.input.table,
        shard=Layout.locate(snakemake.output.table),
        out=snakemake.output.table,
        sample_rate=snakemake.params.sample_rate,
        logger=log,
    )
