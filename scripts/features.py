"""Snakemake adapter: features of one shard into Parquet."""

from audiosetflow.logutil import setup_logging
from audiosetflow.pipeline import run_features

run_features(
    manifest=snakemake.input.manifest,
    ledger=snakemake.input.ledger,
    transcoded=snakemake.input.transcoded,
    trimmed=snakemake.input.trimmed,
    clips_dir=snakemake.params.clips_dir,
    out=snakemake.output.parquet,
    features_cfg=snakemake.params.features,
    sample_rate=snakemake.params.sample_rate,
    names=snakemake.params.names,
    threads=snakemake.threads,
    name=f"features {snakemake.wildcards.split}/{snakemake.wildcards.shard}",
    logger=setup_logging(snakemake.log[0], name="audiosetflow.features"),
)
