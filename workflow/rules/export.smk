# Export (target `export`, not part of the default target): what the workflow built, for other
# frameworks, under results/export/ (see audiosetflow.export). Parts are runs of whole shards
# of one split; a part is written again only when one of its shards' tables changed. The
# input functions are in common.smk.


wildcard_constraints:
    part=r"\d\d\d\d+",


rule export_fates:
    input:
        tables=export_tables,
        classes=str(PATHS.class_labels),
    output:
        fates=f"{EXPORT}/parts/{EXPORT_PART}.fates.parquet",
    log:
        f"{RES}/logs/export/fates/{EXPORT_PART}.log",
    benchmark:
        f"{RES}/benchmarks/export/fates/{EXPORT_PART}.tsv"
    conda:
        ENV
    params:
        fmt="fates",
    script:
        "../../scripts/export_part.py"


rule export_webdataset:
    input:
        tables=export_tables,
        classes=str(PATHS.class_labels),
    output:
        tar=f"{EXPORT}/webdataset/{{split}}-{{part}}.tar",
        info=f"{EXPORT}/parts/{EXPORT_PART}.webdataset.json",
    log:
        f"{RES}/logs/export/webdataset/{EXPORT_PART}.log",
    benchmark:
        f"{RES}/benchmarks/export/webdataset/{EXPORT_PART}.tsv"
    conda:
        ENV
    params:
        fmt="webdataset",
    script:
        "../../scripts/export_part.py"


rule export_hf_part:
    input:
        tables=export_tables,
        classes=str(PATHS.class_labels),
    output:
        parquet=f"{EXPORT}/hf/data/{{split}}-{{part}}.parquet",
        info=f"{EXPORT}/parts/{EXPORT_PART}.hf.json",
    log:
        f"{RES}/logs/export/hf/{EXPORT_PART}.log",
    benchmark:
        f"{RES}/benchmarks/export/hf/{EXPORT_PART}.tsv"
    conda:
        ENV
    params:
        fmt="hf",
    script:
        "../../scripts/export_part.py"


rule export_lhotse_part:
    input:
        tables=export_tables,
        classes=str(PATHS.class_labels),
    output:
        recordings=f"{EXPORT}/parts/{EXPORT_PART}.recordings.jsonl.gz",
        supervisions=f"{EXPORT}/parts/{EXPORT_PART}.supervisions.jsonl.gz",
        cuts=f"{EXPORT}/parts/{EXPORT_PART}.cuts.jsonl.gz",
        info=f"{EXPORT}/parts/{EXPORT_PART}.lhotse.json",
    log:
        f"{RES}/logs/export/lhotse/{EXPORT_PART}.log",
    benchmark:
        f"{RES}/benchmarks/export/lhotse/{EXPORT_PART}.tsv"
    conda:
        ENV
    params:
        fmt="lhotse",
    script:
        "../../scripts/export_part.py"


rule export_lhotse:
    input:
        recordings=lambda w: per_part(
            rules.export_lhotse_part.output.recordings, w.split
        ),
        supervisions=lambda w: per_part(
            rules.export_lhotse_part.output.supervisions, w.split
        ),
        cuts=lambda w: per_part(rules.export_lhotse_part.output.cuts, w.split),
    output:
        recordings=f"{EXPORT}/lhotse/audioset_recordings_{{split}}.jsonl.gz",
        supervisions=f"{EXPORT}/lhotse/audioset_supervisions_{{split}}.jsonl.gz",
        cuts=f"{EXPORT}/lhotse/cuts_audioset_{{split}}.jsonl.gz",
    log:
        f"{RES}/logs/export/lhotse_{{split}}.log",
    benchmark:
        f"{RES}/benchmarks/export/lhotse_{{split}}.tsv"
    localrule: True
    conda:
        ENV
    params:
        what="lhotse",
        settings=EXPORT_CFG,
    script:
        "../../scripts/export_join.py"


rule export_hf:
    input:
        parquet=lambda w: per_part(rules.export_hf_part.output.parquet),
    output:
        readme=f"{EXPORT}/hf/README.md",
    log:
        f"{RES}/logs/export/hf.log",
    benchmark:
        f"{RES}/benchmarks/export/hf.tsv"
    localrule: True
    conda:
        ENV
    params:
        what="hf",
        settings=EXPORT_CFG,
    script:
        "../../scripts/export_join.py"


rule export_clips:
    input:
        fates=lambda w: per_part(rules.export_fates.output.fates),
        eval_scores=rules.eval_scores.output,
    output:
        clips=f"{EXPORT}/clips.parquet",
    log:
        f"{RES}/logs/export/clips.log",
    benchmark:
        f"{RES}/benchmarks/export/clips.tsv"
    localrule: True
    conda:
        ENV
    params:
        what="clips",
        settings=EXPORT_CFG,
        keep=lambda w: export_part_files(),
    script:
        "../../scripts/export_join.py"


rule export_croissant:
    input:
        clips=rules.export_clips.output.clips,
        readme=[rules.export_hf.output.readme] if "hf" in EXPORT_FORMATS else [],
    output:
        croissant=f"{EXPORT}/croissant.json",
    log:
        f"{RES}/logs/export/croissant.log",
    benchmark:
        f"{RES}/benchmarks/export/croissant.tsv"
    localrule: True
    conda:
        ENV
    params:
        what="croissant",
        settings=EXPORT_CFG,
    script:
        "../../scripts/export_join.py"


rule export:
    input:
        export_targets(),
