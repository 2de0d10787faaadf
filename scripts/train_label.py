"""Snakemake adapter: train and evaluate one label's CNN and baselines."""

from audiosetflow.audio.features import FeatureParams
from audiosetflow.learning.training import (
    LabelRef,
    TrainJob,
    TrainOutputs,
    TrainSettings,
    run_train,
)
from audiosetflow.logutil import setup_logging
from audiosetflow.smk import stage_job

log = setup_logging(snakemake.log[0], name="audiosetflow.training")
inp, out, params = snakemake.input, snakemake.output, snakemake.params
with stage_job("train", log):
    job = TrainJob(
        label=LabelRef.from_mapping(params.label),
        dataset={p: inp[p] for p in ("train", "val", "test")},
        train_features=list(inp.train_features),
        eval_features=list(inp.eval_features) or None,
        params=FeatureParams.from_config(dict(params.features), sample_rate=params.sample_rate),
        outputs=TrainOutputs(
            model=out.model,
            metrics=out.metrics,
            roc_pr=out.roc_pr,
            confusion=out.confusion,
            curves=out.curves,
            scores=out.scores,
        ),
        clip_seconds=params.clip_seconds,
        config=snakemake.config,
    )
    settings = TrainSettings.from_config(params.training, seed=params.seed, model=params.model)
    run_train(job, settings, logger=log)
