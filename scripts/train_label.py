"""Snakemake adapter: train and evaluate one label's CNN and baselines."""

from audiosetflow.learning.training import run_train
from audiosetflow.logutil import setup_logging

run_train(
    dataset={p: snakemake.input[p] for p in ("train", "val", "test")},
    train_features=snakemake.input.train_features,
    eval_features=snakemake.input.eval_features or None,
    model_out=snakemake.output.model,
    metrics_out=snakemake.output.metrics,
    plots={p: snakemake.output[p] for p in ("roc_pr", "confusion", "curves")},
    label=snakemake.params.label,
    training_cfg=snakemake.params.training,
    features_cfg=snakemake.params.features,
    sample_rate=snakemake.params.sample_rate,
    clip_seconds=snakemake.params.clip_seconds,
    seed=snakemake.params.seed,
    threads=snakemake.threads,
    logger=setup_logging(snakemake.log[0], name="audiosetflow.training"),
)
