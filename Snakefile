# audiosetflow: AudioSet metadata -> segments (yt-dlp) -> features (Parquet) -> per-label CNNs
# and one multi-label CNN.
# Configuration: config.yaml (validated by workflow/schemas/config.schema.yaml).
# Offline demo: snakemake --cores 2 --configfile config/demo.yaml


from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

from audiosetflow.config import ConfigError, validate

min_version("9.0")


configfile: "config.yaml"


# The report's landing page (it includes results/reports/overview.html, see the overview rule).
report: "workflow/report/workflow.rst"


# Fills in the defaults and turns --config strings into the schema's types; one-line errors.
try:
    validate(config)
except ConfigError as _exc:
    raise WorkflowError(str(_exc)) from None


include: "workflow/rules/common.smk"
include: "workflow/rules/metadata.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/transcode.smk"
include: "workflow/rules/trim.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/multilabel.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/export.smk"


rule all:
    default_target: True
    input:
        all_targets(),
