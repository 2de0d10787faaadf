"""Snakemake adapter: example-clip figures (waveform and every frame-level feature)."""

from audiosetflow.logutil import setup_logging
from audiosetflow.reporting.examples import plot_examples
from audiosetflow.shard import Layout

setup_logging(snakemake.log[0])
plot_examples(
    features=snakemake.input.features,
    layout=Layout.locate(snakemake.input.features[0]).layout,
    out_dir=snakemake.output[0],
    labels=snakemake.params.labels,
    names=snakemake.params.names,
    example_clips=snakemake.params.example_clips,
    n_examples=snakemake.params.n_examples,
)
