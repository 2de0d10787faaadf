"""Snakemake adapter: plot the availability funnel (the download bar split by source)."""

import pandas as pd

from audiosetflow.io import read_tsv
from audiosetflow.logutil import setup_logging
from audiosetflow.reporting.funnel import plot_funnel

setup_logging(snakemake.log[0])
sources = read_tsv(snakemake.input.sources)
if len(sources):
    sources["clips"] = pd.to_numeric(sources["clips"]).astype(int)
plot_funnel(read_tsv(snakemake.input.availability), snakemake.output[0], sources=sources)
