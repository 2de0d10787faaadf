"""Snakemake adapter: features of one shard into Parquet."""

from audiosetflow.audio.features import FeatureParams, run_features
from audiosetflow.logutil import setup_logging
from audiosetflow.shard import Layout
from audiosetflow.smk import stage_job

log = setup_logging(snakemake.log[0], name="audiosetflow.features")
with stage_job("features", log):
    run_features(
        snakemake.input.table,
        shard=Layout.locate(snakemake.output.table),
        out=snakemake.output.parquet,
        out_table=snakemake.output.table,
        params=FeatureParams.from_config(
            snakemake.params.features, sample_rate=snakemake.params.sample_rate
        ),
        names=snakemake.params.names,
        threads=snakemake.threads,
        keep_clips=snakemake.params.keep_clips,
        keep_intermediate=snakemake.params.keep_intermediate,
        clip_seconds=snakemake.params.clip_seconds,
        logger=log,
    )
