"""Snakemake adapter: plot the availability funnel."""

from audiosetflow.io import read_tsv
from audiosetflow.logutil import setup_logging
from audiosetflow.reporting.funnel import plot_funnel

setup_logging(snakemake.log[0])
plot_funnel(read_tsv(snakemake.input.availability), snakemake.output[0])
