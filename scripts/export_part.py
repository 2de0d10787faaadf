"""Snakemake adapter: one export part of one format (webdataset, hf, lhotse) or its fates."""

from audiosetflow.export.run import export_part
from audiosetflow.logutil import setup_logging
from audiosetflow.smk import stage_job

log = setup_logging(snakemake.log[0], name="audiosetflow.export")
with stage_job(f"export_{snakemake.params.fmt}", log):
    export_part(
        fmt=snakemake.params.fmt,
        tables=list(snakemake.input.tables),
        classes=snakemake.input.classes,
        part=f"{snakemake.wildcards.split}/{snakemake.wildcards.part}",
        outputs=dict(snakemake.output.items()),
        log=log,
    )
