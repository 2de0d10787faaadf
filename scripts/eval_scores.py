"""Snakemake adapter: every test clip's score of every label by every model, one Parquet."""

from audiosetflow.io import atomic_path
from audiosetflow.learning.evaluation import score_matrix
from audiosetflow.logutil import setup_logging
from audiosetflow.smk import stage_job

log = setup_logging(snakemake.log[0], name="audiosetflow.evaluation")
inp, params = snakemake.input, snakemake.params
with stage_job("eval_scores", log):
    binary = [(lab["mid"], path) for lab, path in zip(params.labels, inp.binary, strict=True)]
    table = score_matrix(binary, inp.multilabel[0] if len(inp.multilabel) else None)
    with atomic_path(snakemake.output[0]) as tmp:
        table.to_parquet(tmp, index=False)
    log.info("eval_scores: %d clips, %d columns", len(table), table.shape[1])
