"""Snakemake adapter: example-clip figures (waveform and every frame-level feature)."""

from audiosetflow.logutil import setup_logging
from audiosetflow.reporting.examples import plot_examples

setup_logging(snakemake.log[0])
plot_examples(
    features_dirs=snakemake.params.features_dirs,
    clips_root=snakemake.params.clips_root,
    out_dir=snakemake.output[0],
    labels=snakemake.params.labels,
    names=snakemake.params.names,
    example_clips=snakemake.params.example_clips,
    n_examples=snakemake.params.n_examples,
)
