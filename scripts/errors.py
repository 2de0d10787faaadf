"""Snakemake adapter: a label's worst false positives and negatives, with audio, as HTML."""

from audiosetflow.logutil import setup_logging
from audiosetflow.reporting.errors import write_errors_page
from audiosetflow.shard import Layout

write_errors_page(
    scores=snakemake.input.scores,
    metrics=snakemake.input.metrics,
    layout=Layout.locate(snakemake.input.features[0]).layout,
    out=snakemake.output[0],
    features=list(snakemake.input.features),
    model=snakemake.params.model,
    n=snakemake.params.n,
    logger=setup_logging(snakemake.log[0], name="audiosetflow.errors"),
)
