# Export (target `export`, not part of the default target): what the workflow built, for other
# frameworks, under results/export/ (see audiosetflow.export). Parts are runs of whole shards
# of one split; a part is written again only when one of its shards' tables changed.
from audiosetflow import export as _export

EXPORT = f"{RES}/export"
EXPORT_CFG = config["export"]
EXPORT_FORMATS = set(EXPORT_CFG["formats"])
EXPORT_PART = "{split}/part-{part}"


wildcard_constraints:
    part=r"\d\d\d\d+",


def export_parts(split):
    """The export parts of a split, by name: the workflow shards each holds."""
    groups = _export.part_groups(
        PLAN.shards(split),
        shard_size=int(config["shard_size"]),
        clips_per_part=int(EXPORT_CFG["clips_per_part"]),
    )
    return {_export.part_name(i): g for i, g in enumerate(groups)}


def export_tables(wildcards):
    """The shard tables of one export part."""
    return [
        FEATURED.format(split=wildcards.split, shard=shard_name(n))
        for n in export_parts(wildcards.split)[wildcards.part]
    ]


def per_part(pattern, split=None):
    """Expand a pattern with {split} and {part} over every export part (of one split)."""
    return [
        pattern.format(split=s, part=p)
        for s in ([split] if split else splits())
        for p in export_parts(s)
    ]


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
        root=RES,
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
        root=RES,
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
        root=RES,
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
        root=RES,
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
        root=RES,
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
        root=RES,
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
        root=RES,
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
        root=RES,
    script:
        "../../scripts/export_join.py"


def export_part_files():
    """Every per-part file of the formats of export.formats (the rest is pruned)."""
    rules_ = [rules.export_fates]
    if "webdataset" in EXPORT_FORMATS:
        rules_.append(rules.export_webdataset)
    if "hf" in EXPORT_FORMATS:
        rules_.append(rules.export_hf_part)
    if "lhotse" in EXPORT_FORMATS:
        rules_.append(rules.export_lhotse_part)
    return sorted(f for r in rules_ for o in r.output for f in per_part(o))


def export_targets():
    """Every file `export` makes for the formats of export.formats."""
    if PLAN is None:
        return [str(p) for p in MISSING_METADATA]
    out = [rules.export_clips.output.clips]
    if "webdataset" in EXPORT_FORMATS:
        out += per_part(rules.export_webdataset.output.tar)
        out += per_part(rules.export_webdataset.output.info)
    if "hf" in EXPORT_FORMATS:
        out.append(rules.export_hf.output.readme)
    if "lhotse" in EXPORT_FORMATS:
        for s in splits():
            out += expand(rules.export_lhotse.output, split=s)
    if "croissant" in EXPORT_FORMATS:
        out.append(rules.export_croissant.output.croissant)
    return out


rule export:
    input:
        export_targets(),
