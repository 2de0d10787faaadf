"""Snakemake adapter: write the shard manifest, download the shard (resumable per YTID) and
write the token that tells the next run whether to retry."""

from audiosetflow.acquisition.download import DownloadConfig, download_shard
from audiosetflow.logutil import setup_logging
from audiosetflow.pipeline import manifest_from_param, write_retry_token

log = setup_logging(snakemake.log[0], name="audiosetflow.download")
manifest = manifest_from_param(
    snakemake.output.manifest,
    snakemake.params.rows,
    split=snakemake.wildcards.split,
    shard=int(snakemake.wildcards.shard),
)
cfg = DownloadConfig.from_config(snakemake.params.cfg)
ledger = download_shard(
    manifest,
    out_dir=snakemake.params.out_dir,
    ledger_path=snakemake.output.ledger,
    cfg=cfg,
    log=log,
)
write_retry_token(
    snakemake.params.token_file,
    ledger,
    current=snakemake.params.retry_token,
    retry_permanent=cfg.retry_permanent,
)
