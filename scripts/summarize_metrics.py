"""Snakemake adapter: test metrics of every label and model in one table and one figure."""

from audiosetflow.learning.evaluation import plot_summary, summarize_metrics
from audiosetflow.logutil import setup_logging

logger = setup_logging(snakemake.log[0], name="audiosetflow.evaluation")
summary = summarize_metrics(snakemake.input.metrics, snakemake.output.summary)
plot_summary(summary, snakemake.output.plot)
logger.info("metrics of %d label(s) x model(s) in %s", len(summary), snakemake.output.summary)
