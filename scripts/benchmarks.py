"""Snakemake adapter: wall time, CPU time and peak memory per rule, from the benchmark files."""

from audiosetflow.logutil import setup_logging
from audiosetflow.reporting.benchmarks import run_benchmarks

run_benchmarks(
    files=list(snakemake.input),
    root=snakemake.params.root,
    table_out=snakemake.output.table,
    plot_out=snakemake.output.plot,
    logger=setup_logging(snakemake.log[0], name="audiosetflow.benchmarks"),
)
