"""Snakemake adapter: download one shard (resumable per YTID) and write the token that tells
the next run whether to retry."""

from audiosetflow.acquisition.download import DownloadConfig, download_shard
from audiosetflow.acquisition.sources import parse_sources
from audiosetflow.config import restore_secrets
from audiosetflow.logutil import setup_logging
from audiosetflow.shard import Layout, ShardTable
from audiosetflow.smk import (
    DOWNLOAD_PACING_KEYS,
    manifest_from_param,
    stage_job,
    write_retry_token,
)

log = setup_logging(snakemake.log[0], name="audiosetflow.download")
shard = Layout.locate(snakemake.output.table)
with stage_job("download", log):
    pacing = {k: v for k, v in snakemake.config["download"].items() if k in DOWNLOAD_PACING_KEYS}
    # the param is redacted (Snakemake stores params in .snakemake/metadata): secrets from config
    real = snakemake.config["download"]
    cfg = DownloadConfig.from_config(restore_secrets({**snakemake.params.cfg, **pacing}, real))
    manifest = manifest_from_param(snakemake.params.rows, split=shard.split, shard=shard.shard)
    table = download_shard(
        ShardTable.from_manifest(manifest),
        shard=shard,
        cfg=cfg,
        out=snakemake.output.table,
        log=log,
        sources=parse_sources(snakemake.params.sources),
        index=snakemake.input.index[0] if snakemake.input.index else None,
    )
    write_retry_token(shard.token, table, current=snakemake.params.retry_token, cfg=cfg)
