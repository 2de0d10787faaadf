"""Snakemake adapter: the report's landing page (run overview) as an HTML fragment."""

from audiosetflow.logutil import setup_logging
from audiosetflow.reporting.overview import write_overview

inp, params = snakemake.input, snakemake.params
write_overview(
    config=params.config,
    labels=params.labels,
    datasets=params.datasets,
    summary=inp.summary,
    metrics=list(inp.metrics),
    availability=inp.availability,
    failures=inp.failures,
    clip_sources=inp.sources,
    multilabel=list(inp.multilabel),
    funnel=inp.funnel,
    benchmarks=inp.benchmarks,
    benchmarks_plot=inp.benchmarks_plot,
    out=snakemake.output[0],
    dropped=params.dropped,
    logger=setup_logging(snakemake.log[0], name="audiosetflow.overview"),
)
