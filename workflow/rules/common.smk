# Parse-time plan (labels, selected segments, shards) and input functions. No logic here: it all
# lives in the audiosetflow package.
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from audiosetflow import cluster as _cluster
from audiosetflow import demo as _demo
from audiosetflow import export as _export
from audiosetflow import integrity as _integrity
from audiosetflow import plan as _plan
from audiosetflow import smk as _smk
from audiosetflow.config import redact_config
from audiosetflow.acquisition import sources as _sources
from audiosetflow.errors import InputError
from audiosetflow.metadata import MetadataError
from audiosetflow.shard import Layout


wildcard_constraints:
    split="train|eval",
    shard=r"\d\d\d\d+",
    label=r"[0-9a-z_]+",


RES = "results"
# The per-rule conda environment (--sdm conda), relative to this file. Snakemake builds it in
# .snakemake/conda/; its post-deploy script installs the package from the project folder,
# which it reads from $AUDIOSETFLOW_PROJECT (the Snakefile's folder, set here).
ENV = "../envs/audiosetflow.yaml"
_smk.export_project(workflow.basedir)
# Every per-shard and per-YTID path comes from one layout (audiosetflow.shard.Layout).
LAYOUT = Layout(RES)
# The shard table each stage writes, and the features shard (patterns with {split}, {shard}).
DOWNLOADED = LAYOUT.pattern("download")
TRANSCODED = LAYOUT.pattern("transcode")
TRIMMED = LAYOUT.pattern("trim")
FEATURED = LAYOUT.pattern("features")
FEATURES = LAYOUT.pattern("parquet")
DEMO = config["demo"]["enabled"]
DEMO_DIR = config["demo"]["dir"]

# No job asks for more than one node has (audiosetflow.cluster): the size comes from
# cluster.node_cpus / cluster.node_mem_mb, or from sinfo where SLURM is set up. CPUs are capped
# through --cores (group jobs included), memory through each rule's mem_mb (node_mem).
if _smk.is_job_process(workflow):  # inside a cluster job: what the job was given
    NODE = _cluster.allocation_limits()
else:
    try:
        NODE = _cluster.node_limits(
            config["cluster"], partition=_smk.default_partition(workflow)
        )
    except InputError as _exc:
        raise WorkflowError(str(_exc)) from None
    if NODE is not None:
        print(
            f"audiosetflow: every job fits one node: {NODE.describe()}", file=sys.stderr
        )
if NODE is not None:
    _smk.cap_cores(workflow, NODE.cpus)


def node_mem(want):
    """A rule's mem_mb: `want`, capped at one node's memory (per CPU times the threads)."""
    return lambda wildcards, threads: want if NODE is None else NODE.mem(want, threads)


if DEMO:
    # Cheap and deterministic: the demo's metadata files are written at parse time so that the
    # plan below can read them like real AudioSet files. Its media are made by rule demo_media.
    _demo.write_metadata(
        Path(DEMO_DIR) / "metadata", _demo.DemoSpec.from_config(config["demo"])
    )

PATHS = _plan.metadata_paths(config)
MISSING_METADATA = PATHS.missing()
if MISSING_METADATA and not PATHS.fetchable:
    raise WorkflowError(
        f"{MISSING_METADATA[0]}: metadata file not found; fix metadata.dir / metadata.* in "
        'config.yaml, or set metadata.dir to "" to fetch the files into resources/metadata/'
    )

PLAN = None
if not MISSING_METADATA:
    try:
        # Computed once per config and metadata, stored under results/plan/ and read back by
        # every later process, cluster jobs included (audiosetflow.planstore).
        PLAN = _plan.stored_plan(config, PATHS, f"{RES}/plan")
    except (MetadataError, ValueError) as _exc:
        raise WorkflowError(str(_exc)) from None
    except OSError as _exc:
        raise WorkflowError(
            f"{RES}/plan: the plan cannot be stored or read: {_exc}"
        ) from None
    for _lab, _ratio in PLAN.dropped:
        print(
            f"audiosetflow: label {_lab.name} dropped: rated-true ratio {_ratio:.2f} < "
            f"label_quality.min_ratio {config['label_quality']['min_ratio']}",
            file=sys.stderr,
        )
    for _msg in PLAN.messages:
        print(_msg, file=sys.stderr)
else:
    print(
        "audiosetflow: metadata missing ("
        + ", ".join(p.name for p in MISSING_METADATA)
        + "): this run fetches it into resources/metadata/; run the same command again "
        "afterwards to process the segments.",
        file=sys.stderr,
    )

# Where clips come from (config `sources`): checked here, so that a path that does not exist
# is one line before any job starts. Local mirrors are indexed once by rule index_sources.
try:
    SOURCES = _sources.parse_sources(config["sources"])
except InputError as _exc:
    raise WorkflowError(str(_exc)) from None
MIRRORS = bool(_sources.mirrors(SOURCES))
YOUTUBE = _sources.has_youtube(SOURCES)
SOURCE_INDEX = f"{RES}/sources/index.parquet"
# the same rows keyed by YTID (SQLite): a download job's lookup does not grow with the mirror
SOURCE_LOOKUP = f"{RES}/sources/index.sqlite"


def source_index(wildcards):
    """The keyed index of the local sources, for the download jobs (none without local
    sources)."""
    return [SOURCE_LOOKUP] if MIRRORS else []


def source_files():
    """Every file (and folder) of the local sources with its size and modification time (a
    param: a new, grown or replaced file reruns the index)."""
    return _sources.fingerprints(SOURCES)


def youtube_units(wildcards, input):
    """The `youtube` units a download job holds: 1 only when YouTube is a source and some YTID
    of its shard has no copy in the local sources (a mirror-only shard never waits for the
    YouTube budget). Snakemake evaluates it again once the job is ready (the index built).
    """
    if not YOUTUBE:
        return 0
    if not MIRRORS:
        return 1
    # the Parquet index (made by the same rule as the job's keyed lookup, input.index)
    ytids = PLAN.shard_ytids(wildcards.split, int(wildcards.shard))
    return int(_sources.needs_youtube(SOURCE_INDEX, ytids))


# The download settings as a param (a change reruns the download jobs), except those that only
# pace the requests: scripts/download.py reads them from the config, so that slowing down or
# speeding up a long run does not rerun every shard.
DOWNLOAD_CFG = {
    k: v for k, v in config["download"].items() if k not in _smk.DOWNLOAD_PACING_KEYS
}
if DEMO:
    DOWNLOAD_CFG["url_template"] = _demo.url_template(os.path.join(DEMO_DIR, "media"))


LABEL_SLUGS = [lab.slug for lab in PLAN.labels] if PLAN is not None else []
# The multi-label model: trained when enabled and its label set is not empty.
MULTILABEL = (
    bool(config["multilabel"]["enabled"]) and PLAN is not None and bool(PLAN.multilabel)
)
if config["multilabel"]["enabled"] and PLAN is not None and not PLAN.multilabel:
    print(
        "audiosetflow: multilabel: no class has multilabel.min_positives="
        f"{config['multilabel']['min_positives']} positives in the train split: no "
        "multi-label model this run",
        file=sys.stderr,
    )


def label_info(slug):
    """MID and display name of a target label, from its slug."""
    lab = PLAN.label(slug)
    return {"mid": lab.mid, "name": lab.name}


def multilabel_param(wildcards):
    """MID, name and slug of every candidate label of the multi-label model, in order."""
    return _smk.report_param(
        [
            {"mid": l.mid, "name": l.name, "slug": l.slug, "index": l.index}
            for l in PLAN.multilabel
        ]
    )


def ontology_input(wildcards):
    """ontology.json when selection.expand_ontology is on (the targets depend on it)."""
    return [str(PATHS.ontology)] if config["selection"]["expand_ontology"] else []


def fetch_url(name):
    """Where the fetch_metadata rule downloads a metadata file from."""
    m = config["metadata"]
    if name == Path(m["ontology"]).name:
        return m["ontology_url"]
    if m.get("qa_counts") and name == Path(m["qa_counts"]).name:
        return m["qa_base_url"] + name
    return m["base_url"] + name


def shard_name(n):
    return f"{int(n):04d}"


def splits():
    return PLAN.splits if PLAN is not None else []


def shards(split):
    return [shard_name(n) for n in PLAN.shards(split)]


def per_shard(pattern, split=None):
    """Expand a path pattern with {split} and {shard} over every shard (of one split)."""
    return [
        pattern.format(split=s, shard=n)
        for s in ([split] if split else splits())
        for n in shards(s)
    ]


def feature_shards(split):
    """Parquet feature shards of a split."""
    return per_shard(FEATURES, split)


def manifest_rows(wildcards):
    """The shard's segments as one compact string (a param, so that a change reruns the shard)."""
    return PLAN.manifest(wildcards.split, int(wildcards.shard))


def retry_token(wildcards):
    """A param that changes exactly when the shard's last download run left YTIDs to retry
    (see audiosetflow.smk.next_retry_token)."""
    return _smk.read_retry_token(LAYOUT.shard(wildcards.split, wildcards.shard).token)


def demo_media_flag(wildcards):
    return [f"{DEMO_DIR}/media/.done"] if DEMO else []


def all_targets():
    if PLAN is None:
        return [str(p) for p in MISSING_METADATA]
    return [
        f"{RES}/reports/availability.tsv",
        f"{RES}/reports/download_ledger.tsv",
        f"{RES}/plots/availability_funnel.png",
        f"{RES}/plots/examples",
        *[f"{RES}/models/{slug}.pt" for slug in LABEL_SLUGS],
        f"{RES}/metrics/summary.tsv",
        f"{RES}/metrics/eval_scores.parquet",
        *[f for s in splits() for f in feature_shards(s)],
        *[f"{RES}/reports/errors/{slug}.html" for slug in LABEL_SLUGS],
        *[f"{RES}/plots/{slug}/summary_features.png" for slug in LABEL_SLUGS],
        f"{RES}/reports/overview.html",
        *(multilabel_targets() if MULTILABEL else []),
    ]


def multilabel_overview(wildcards):
    """The multi-label model's metrics, comparison and AP plot, for the landing page."""
    if not MULTILABEL:
        return []
    return [
        f"{RES}/metrics/multilabel.json",
        f"{RES}/metrics/multilabel_compare.tsv",
        f"{RES}/plots/multilabel/label_ap.png",
    ]


def multilabel_scores(wildcards):
    """The multi-label model's test scores, when it is trained."""
    return [f"{RES}/metrics/multilabel_scores.tsv"] if MULTILABEL else []


def multilabel_targets():
    """The multi-label model's files (see rules/multilabel.smk)."""
    return [
        f"{RES}/models/multilabel.pt",
        f"{RES}/metrics/multilabel.json",
        f"{RES}/metrics/multilabel.tsv",
        f"{RES}/plots/multilabel/label_ap.png",
        f"{RES}/plots/multilabel/map_history.png",
        f"{RES}/metrics/multilabel_compare.tsv",
    ]


# Rules whose benchmark files are summed (by the benchmarks rule), per shard, per label, once.
SHARD_RULES = ["download", "transcode", "trim", "features"]
LABEL_RULES = ["dataset", "train", "errors", "class_features"]
SINGLE_RULES = [
    "aggregate",
    "funnel",
    "feature_examples",
    "metrics_summary",
    "eval_scores",
]
if MULTILABEL:
    SINGLE_RULES += ["train_multilabel", "multilabel_compare"]


def benchmark_inputs(wildcards):
    """The benchmark file of every job before the report (all but benchmarks and overview)."""
    files = [
        f for r in SHARD_RULES for f in per_shard(str(getattr(rules, r).benchmark))
    ]
    files += expand(
        [str(getattr(rules, r).benchmark) for r in LABEL_RULES], label=LABEL_SLUGS
    )
    files += [str(getattr(rules, r).benchmark) for r in SINGLE_RULES]
    if MIRRORS:
        files.append(str(rules.index_sources.benchmark))
    if DEMO:
        files.append(str(rules.demo_media.benchmark))
    return files


def labels_param(wildcards):
    """Slug, MID and name of every target label, in order (shown escaped by the report)."""
    return _smk.report_param(
        [{"slug": lab.slug, **label_info(lab.slug)} for lab in PLAN.labels]
    )


def datasets_param(wildcards):
    """Each label's dataset parts: {slug: {part: path}}."""
    parts = ("train", "val", "test")
    return _smk.report_param(
        {s: {p: DATASET.format(label=s, part=p) for p in parts} for s in LABEL_SLUGS}
    )


def report_config(*keys):
    """A config section as a parameter of a job shown by the report, with secrets redacted
    and shown escaped (audiosetflow.smk.report_param)."""
    cfg = config
    for k in keys:
        cfg = cfg[k]
    return _smk.report_param(redact_config(cfg))


def label_model_param():
    """The `model` keys a per-label CNN uses (its architecture; `init`, `init_head` and
    `freeze_trunk` start the multi-label model only, so changing them reruns no per-label job).
    """
    m = config["model"]
    return _smk.report_param({"arch": m["arch"], "cnn14_width": m["cnn14_width"]})


def dropped_param(wildcards):
    """Labels dropped by the quality filter, with their rated-true ratio."""
    return _smk.report_param([(lab.name, float(ratio)) for lab, ratio in PLAN.dropped])


# A features shard that differs from the rows and checksum its features job wrote for it (cut
# off, rewritten) is moved aside here, one line each, so that this run rebuilds it. Only in the
# main process: a cluster job (remote mode) does not look at every shard of the run.
if PLAN is not None and not _smk.is_job_process(workflow):
    for _line in _integrity.set_aside_damaged(
        [f for s in splits() for f in feature_shards(s)]
    ):
        print(f"audiosetflow: {_line}", file=sys.stderr)


# --- export (workflow/rules/export.smk) ---------------------------------------------------------
EXPORT = f"{RES}/export"
EXPORT_CFG = config["export"]
EXPORT_FORMATS = set(EXPORT_CFG["formats"])
EXPORT_PART = "{split}/part-{part}"


def export_parts(split):
    """The export parts of a split, by name: the workflow shards each holds."""
    groups = _export.part_groups(
        PLAN.shards(split),
        shard_size=PLAN.clips_per_shard(split),
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
