"""Snakemake adapter: transcode one shard."""

from audiosetflow.logutil import setup_logging
from audiosetflow.pipeline import run_transcode

name = f"transcode {snakemake.wildcards.split}/{snakemake.wildcards.shard}"
run_transcode(
    ledger=snakemake.input.ledger,
    download_dir=snakemake.params.download_dir,
    pcm_dir=snakemake.params.pcm_dir,
    clips_dir=snakemake.params.clips_dir,
    out=snakemake.output.table,
    sample_rate=snakemake.params.sample_rate,
    name=name,
    logger=setup_logging(snakemake.log[0], name="audiosetflow.transcode"),
)
