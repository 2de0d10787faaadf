"""Snakemake adapter: fetch one AudioSet metadata file."""

from audiosetflow.fetch import fetch
from audiosetflow.logutil import setup_logging

fetch(
    snakemake.params.url,
    snakemake.output[0],
    logger=setup_logging(snakemake.log[0], name="audiosetflow.fetch"),
)
