# Stage 6: one multi-label CNN (a sigmoid output per label) streamed from the feature shards,
# evaluated by mAP on the eval split, and compared with the per-label binary models.
# Needs from common.smk: RES, ENV, LABEL_SLUGS, feature_shards(split), multilabel_param,
# ontology_input, labels_param; from train.smk: the train rule (the binary models' scores).


# results/models/multilabel.pt etc. also match the train rule's {label} patterns.
ruleorder: train_multilabel > train


rule train_multilabel:
    input:
        train_features=lambda wildcards: feature_shards("train"),
        eval_features=lambda wildcards: feature_shards("eval"),
        ontology=ontology_input,
        # a pretrained start (model.init) and teacher predictions (multilabel.teacher), if set
        pretrained=lambda wildcards: (
            [config["model"]["init"]] if config["model"]["init"] else []
        ),
        teacher=lambda wildcards: [
            p
            for p in (
                config["multilabel"]["teacher"]["path"],
                config["multilabel"]["teacher"]["index"],
            )
            if p
        ],
    output:
        model=f"{RES}/models/multilabel.pt",
        metrics=f"{RES}/metrics/multilabel.json",
        table=report(
            f"{RES}/metrics/multilabel.tsv",
            caption="../report/multilabel_table.rst",
            category="4. Multi-label model",
        ),
        scores=f"{RES}/metrics/multilabel_scores.tsv",
        ap_plot=report(
            f"{RES}/plots/multilabel/label_ap.png",
            caption="../report/multilabel_ap.rst",
            category="4. Multi-label model",
        ),
        history_plot=report(
            f"{RES}/plots/multilabel/map_history.png",
            caption="../report/multilabel_history.rst",
            category="4. Multi-label model",
        ),
    log:
        f"{RES}/logs/train_multilabel.log",
    benchmark:
        f"{RES}/benchmarks/train_multilabel.tsv"
    conda:
        ENV
    threads: config["training"]["threads"]
    resources:
        mem_mb=node_mem(4000),
        gpu=config["training"]["gpus"],
    params:
        labels=multilabel_param,
        compare_mids=lambda wildcards: _smk.report_param(
            [label_info(s)["mid"] for s in LABEL_SLUGS]
        ),
        multilabel=report_config("multilabel"),
        training=report_config("training"),
        model=report_config("model"),
        features=report_config("features"),
        sample_rate=config["audio"]["sample_rate"],
        clip_seconds=config["audio"]["clip_seconds"],
        seed=config["selection"]["seed"],
        use_eval=bool(config["metadata"].get("eval_segments")),
    script:
        "../../scripts/train_multilabel.py"


rule multilabel_compare:
    input:
        multilabel=rules.train_multilabel.output.scores,
        binary=expand(f"{RES}/metrics/{{label}}_scores.tsv", label=LABEL_SLUGS),
    output:
        report(
            f"{RES}/metrics/multilabel_compare.tsv",
            caption="../report/multilabel_compare.rst",
            category="4. Multi-label model",
        ),
    log:
        f"{RES}/logs/multilabel_compare.log",
    benchmark:
        f"{RES}/benchmarks/multilabel_compare.tsv"
    localrule: True
    conda:
        ENV
    params:
        labels=labels_param,
    script:
        "../../scripts/multilabel_compare.py"
