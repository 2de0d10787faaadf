"""Snakemake adapter: index the local sources (tar members, Parquet rows, folder files) once;
each file's index is cached beside the index, so a new source indexes only its own files."""

from pathlib import Path

from audiosetflow.acquisition.sources import build_index, parse_sources
from audiosetflow.logutil import setup_logging
from audiosetflow.smk import stage_job

log = setup_logging(snakemake.log[0], name="audiosetflow.sources")
with stage_job("index_sources", log):
    out = Path(snakemake.output.index)
    build_index(
        parse_sources(snakemake.params.sources), out=out, cache_dir=out.parent / "cache", log=log
    )
