"""Snakemake adapter: write the offline demo's media files."""

from audiosetflow.demo import DemoSpec, write_media
from audiosetflow.io import atomic_write_text
from audiosetflow.logutil import setup_logging

paths = write_media(
    snakemake.params.media_dir,
    DemoSpec.from_config(snakemake.params.spec),
    threads=snakemake.threads,
    logger=setup_logging(snakemake.log[0], name="audiosetflow.demo"),
)
atomic_write_text(snakemake.output.flag, "".join(f"{p.name}\n" for p in paths))
