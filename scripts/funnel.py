"""Snakemake adapter: plot the availability funnel."""

from audiosetflow.funnel import plot_funnel
from audiosetflow.io import read_tsv
from audiosetflow.logutil import setup_logging

setup_logging(snakemake.log[0])
plot_funnel(read_tsv(snakemake.input.availability), snakemake.output[0])
