"""Snakemake adapter: a few summary features of a label's clips, positives vs negatives."""

from audiosetflow.logutil import setup_logging
from audiosetflow.reporting.classes import run_class_features

inp = snakemake.input
run_class_features(
    dataset={p: inp[p] for p in ("train", "val", "test")},
    features=list(inp.features),
    label=snakemake.params.label["name"],
    out=snakemake.output[0],
    logger=setup_logging(snakemake.log[0], name="audiosetflow.classes"),
)
