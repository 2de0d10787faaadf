"""Snakemake adapter: balanced train/val/test sets of one label."""

from pathlib import Path

from audiosetflow.learning.datasets import run_dataset
from audiosetflow.logutil import setup_logging
from audiosetflow.smk import stage_job

log = setup_logging(snakemake.log[0], name="audiosetflow.datasets")
label = snakemake.params.label
with stage_job("dataset", log):
    run_dataset(
        train_features=list(snakemake.input.train),
        eval_features=list(snakemake.input.eval) or None,
        out_dir=Path(snakemake.output.train).parent,
        mid=label["mid"],
        name=label["name"],
        val_fraction=snakemake.params.val_fraction,
        test_fraction=snakemake.params.test_fraction,
        seed=snakemake.params.seed,
        use_eval=snakemake.params.use_eval,
        ontology=snakemake.input.ontology[0] if len(snakemake.input.ontology) else None,
        logger=log,
    )
