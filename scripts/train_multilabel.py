"""Snakemake adapter: train and evaluate the multi-label CNN."""

from audiosetflow.learning.heap import flat_heap

# First, before torch is imported: the process may start again under other malloc settings.
heap = flat_heap(enabled=snakemake.config["training"]["flat_memory"])

from audiosetflow.audio.features import FeatureParams  # noqa: E402
from audiosetflow.learning.labelsets import MultilabelSettings  # noqa: E402
from audiosetflow.learning.multilabel import MultilabelJob, MultilabelOutputs, run_multilabel  # noqa: E402
from audiosetflow.learning.training import TrainSettings  # noqa: E402
from audiosetflow.logutil import setup_logging  # noqa: E402
from audiosetflow.smk import stage_job  # noqa: E402

log = setup_logging(snakemake.log[0], name="audiosetflow.multilabel")
log.info(heap)
inp, out, params = snakemake.input, snakemake.output, snakemake.params
with stage_job("train_multilabel", log):
    job = MultilabelJob(
        labels=list(params.labels),
        train_features=list(inp.train_features),
        eval_features=(list(inp.eval_features) or None) if params.use_eval else None,
        params=FeatureParams.from_config(dict(params.features), sample_rate=params.sample_rate),
        outputs=MultilabelOutputs(
            model=out.model,
            metrics=out.metrics,
            table=out.table,
            scores=out.scores,
            ap_plot=out.ap_plot,
            history_plot=out.history_plot,
        ),
        clip_seconds=params.clip_seconds,
        ontology=inp.ontology[0] if len(inp.ontology) else None,
        compare_mids=list(params.compare_mids),
        val_fraction=params.training["val_fraction"],
        test_fraction=params.training["test_fraction"],
        config=snakemake.config,
    )
    run_multilabel(
        job,
        TrainSettings.from_config(params.training, seed=params.seed, model=params.model),
        MultilabelSettings.from_config(params.multilabel),
        logger=log,
    )
