"""Snakemake adapter: train and evaluate one label's CNN and baselines."""

from audiosetflow.learning.heap import flat_heap

# First, before torch is imported: the process may start again under other malloc settings.
heap = flat_heap(enabled=snakemake.config["training"]["flat_memory"])

from audiosetflow.audio.features import FeatureParams  # noqa: E402
from audiosetflow.learning.training import (  # noqa: E402
    LabelRef,
    TrainJob,
    TrainOutputs,
    TrainSettings,
    run_train,
)
from audiosetflow.logutil import setup_logging  # noqa: E402
from audiosetflow.smk import stage_job  # noqa: E402

log = setup_logging(snakemake.log[0], name="audiosetflow.training")
log.info(heap)
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
