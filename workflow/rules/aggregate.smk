# Stage 5: the availability funnel, the failures by reason and the download ledger over every
# shard.


rule aggregate:
    input:
        tables=per_shard(FEATURED),
        features=per_shard(FEATURES),
    output:
        availability=f"{RES}/reports/availability.tsv",
        ledger=f"{RES}/reports/download_ledger.tsv",
        failures=f"{RES}/reports/failures.tsv",
        sources=f"{RES}/reports/sources.tsv",
    log:
        f"{RES}/logs/aggregate.log",
    benchmark:
        f"{RES}/benchmarks/aggregate.tsv"
    localrule: True
    conda:
        ENV
    script:
        "../../scripts/aggregate.py"


rule funnel:
    input:
        availability=rules.aggregate.output.availability,
        sources=rules.aggregate.output.sources,
    output:
        report(
            f"{RES}/plots/availability_funnel.png",
            caption="../report/funnel.rst",
            category="1. Data",
            subcategory="Availability",
        ),
    log:
        f"{RES}/logs/funnel.log",
    benchmark:
        f"{RES}/benchmarks/funnel.tsv"
    localrule: True
    conda:
        ENV
    script:
        "../../scripts/funnel.py"
