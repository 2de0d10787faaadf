"""Snakemake adapter: write a shard manifest from the plan's rows."""

from audiosetflow.logutil import setup_logging
from audiosetflow.pipeline import manifest_from_param

setup_logging(snakemake.log[0])
manifest_from_param(
    snakemake.output[0],
    snakemake.params.rows,
    split=snakemake.wildcards.split,
    shard=int(snakemake.wildcards.shard),
)
