"""Snakemake adapter: the export's joined files (lhotse per split, hf README, clips.parquet,
croissant.json) from its parts."""

from audiosetflow.export.run import export_join
from audiosetflow.logutil import setup_logging
from audiosetflow.smk import stage_job

log = setup_logging(snakemake.log[0], name="audiosetflow.export")
with stage_job(f"export_{snakemake.params.what}", log):
    export_join(
        what=snakemake.params.what,
        inputs={k: list(v) if not isinstance(v, str) else v for k, v in snakemake.input.items()},
        outputs=dict(snakemake.output.items()),
        settings=snakemake.params.settings,
        keep=snakemake.params.get("keep", ()),
        log=log,
    )
