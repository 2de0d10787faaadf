"""Snakemake adapter: the multi-label model's AP beside each binary model's, same clips."""

from audiosetflow.io import read_tsv, write_tsv
from audiosetflow.learning.multilabel import compare_table
from audiosetflow.logutil import setup_logging
from audiosetflow.smk import stage_job

log = setup_logging(snakemake.log[0], name="audiosetflow.multilabel")
inp, params = snakemake.input, snakemake.params
with stage_job("multilabel_compare", log):
    binary = [{**lab, "scores": path} for lab, path in zip(params.labels, inp.binary, strict=True)]
    table = compare_table(read_tsv(inp.multilabel), binary)
    write_tsv(snakemake.output[0], table.round(4))
    log.info("multilabel_compare: %d labels", len(table))
