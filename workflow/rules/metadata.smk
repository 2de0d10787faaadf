# Metadata: fetch missing AudioSet files, or generate the offline demo corpus.


rule fetch_metadata:
    output:
        "resources/metadata/{name}",
    log:
        "results/logs/fetch_metadata/{name}.log",
    benchmark:
        "results/benchmarks/fetch_metadata/{name}.tsv"
    wildcard_constraints:
        name=r"[A-Za-z0-9_.-]+\.(csv|json)",
    conda:
        ENV
    resources:
        youtube=0,
    params:
        url=lambda wildcards: fetch_url(wildcards.name),
    script:
        "../../scripts/fetch_metadata.py"


rule demo_media:
    output:
        flag=f"{DEMO_DIR}/media/.done",
    log:
        "results/logs/demo_media.log",
    benchmark:
        "results/benchmarks/demo_media.tsv"
    conda:
        ENV
    threads: 2
    params:
        spec=config["demo"],
        media_dir=lambda wildcards, output: os.path.dirname(output.flag),
    script:
        "../../scripts/demo_media.py"
