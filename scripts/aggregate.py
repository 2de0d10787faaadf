"""Snakemake adapter: availability funnel and download ledger over all shards."""

from audiosetflow.logutil import setup_logging
from audiosetflow.reporting.aggregate import aggregate

aggregate(
    tables=snakemake.input.tables,
    features=snakemake.input.features,
    availability_out=snakemake.output.availability,
    ledger_out=snakemake.output.ledger,
    failures_out=snakemake.output.failures,
    sources_out=snakemake.output.sources,
    logger=setup_logging(snakemake.log[0], name="audiosetflow.aggregate"),
)
