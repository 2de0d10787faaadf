"""audiosetflow.config: the schema as package data, defaults, typed sections, validation with
one-line errors and the coercion of ``--config`` strings, checked against Snakemake itself."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import jsonschema
import pytest
import yaml

from audiosetflow import config as C
from audiosetflow.config import ConfigError

REPO = Path(__file__).resolve().parent.parent
PACKAGE_SCHEMA = REPO / "src" / "audiosetflow" / "config.schema.yaml"
WORKFLOW_SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _snakemake_validate(cfg: dict) -> dict:
    """What the Snakefile did before: snakemake.utils.validate(config, schema)."""
    from snakemake.utils import validate

    validate(cfg, str(PACKAGE_SCHEMA))
    return cfg


def _command_line(config: dict, *entries: str) -> dict:
    """``config`` after Snakemake's ``--config ENTRIES`` (its own parser and merge)."""
    from snakemake.cli import parse_config
    from snakemake.utils import update_config

    config = copy.deepcopy(config)
    update_config(config, parse_config(list(entries)))
    return config


# --- the schema file --------------------------------------------------------------------------


def test_schema_is_a_valid_draft_2020_12_schema():
    s = C.schema()
    jsonschema.Draft202012Validator.check_schema(s)
    assert s == _load(PACKAGE_SCHEMA)
    s["properties"].clear()  # a copy: the module's schema is untouched
    assert C.schema()["properties"]


def test_workflow_schema_is_a_relative_link_to_the_package_schema():
    assert WORKFLOW_SCHEMA.is_symlink()
    assert not os.path.isabs(os.readlink(WORKFLOW_SCHEMA))
    assert WORKFLOW_SCHEMA.resolve() == PACKAGE_SCHEMA.resolve()


def test_schema_ships_in_the_wheel(tmp_path):
    """Built and installed without the repository, the package still finds its schema."""
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    for name in ("pyproject.toml", "README.md"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes((REPO / name).read_bytes())
    pkg = src / "src" / "audiosetflow"
    pkg.mkdir(parents=True)
    for f in (REPO / "src" / "audiosetflow").iterdir():
        if f.is_file():
            (pkg / f.name).write_bytes(f.read_bytes())
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w",
         str(tmp_path / "dist"), str(src)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("audiosetflow-*.whl")
    assert "audiosetflow/config.schema.yaml" in zipfile.ZipFile(wheel).namelist()
    target = tmp_path / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    code = "import audiosetflow.config as c; print(c.__file__, c.defaults('download')['retries'])"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(target)}, cwd=tmp_path,
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.split()  # fmt: skip
    assert Path(out[0]).is_relative_to(target) and out[1] == "3"


# --- defaults ---------------------------------------------------------------------------------


def test_defaults_of_a_section():
    d = C.defaults("download")
    assert d["retries"] == 3 and d["url_template"] == "https://www.youtube.com/watch?v={ytid}"
    assert d["js_runtimes"] == {} and d["ytdlp_options"] == {}
    assert C.defaults("demo") == {
        "enabled": False, "dir": "results/demo", "clips_per_class": 80, "eval_fraction": 0.25,
        "seed": 7,
    }  # fmt: skip
    d["retries"] = 99
    d["js_runtimes"]["x"] = 1  # a copy
    assert C.defaults("download")["retries"] == 3 and C.defaults("download")["js_runtimes"] == {}


def test_defaults_of_the_whole_config_fill_nested_sections():
    d = C.defaults()
    assert set(d) == set(C.schema()["properties"])
    assert d["labels"] == ["Music", "Speech"] and d["shard_size"] == 250
    assert d["features"] == C.defaults("features") and d["training"]["epochs"] == 30


def test_defaults_errors():
    with pytest.raises(KeyError, match="no section 'nope'"):
        C.defaults("nope")
    with pytest.raises(TypeError, match="not a mapping"):
        C.defaults("labels")


# --- section ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Download:
    retries: int = -1
    margin: float = -1.0
    retry_permanent: bool = True
    proxy: str = "unset"
    js_runtimes: Mapping[str, Any] = dataclasses.field(default_factory=lambda: {"x": 1})
    not_in_schema: int = 42


@dataclasses.dataclass(frozen=True)
class _Types:
    i: int = 0
    f: float = 0.0
    b: bool = False
    s: str = ""
    t: tuple[str, ...] = ()
    pair: tuple[int, float] = (0, 0.0)
    lst: list[int] = dataclasses.field(default_factory=list)
    d: dict = dataclasses.field(default_factory=dict)
    opt: float | None = None
    lit: Literal["auto", "cpu"] = "auto"
    anything: Any = None


def test_section_takes_missing_values_from_the_schema_not_the_dataclass():
    got = C.section(_Download, {"margin": 2, "unknown_key": 1}, "download")
    assert got == _Download(
        retries=3, margin=2.0, retry_permanent=False, proxy="", js_runtimes={}, not_in_schema=42
    )
    assert isinstance(got.margin, float)
    assert C.section(_Download, None, "download") == C.section(_Download, {}, "download")


def test_section_overrides_win_and_are_converted():
    got = C.section(_Download, {"retries": 5, "not_in_schema": 1}, "download", not_in_schema="7")
    assert got.retries == 5 and got.not_in_schema == 7
    with pytest.raises(TypeError, match="no field 'nope'"):
        C.section(_Download, {}, "download", nope=1)
    with pytest.raises(TypeError, match="dataclass"):
        C.section(dict, {}, "download")
    with pytest.raises(KeyError):
        C.section(_Download, {}, "nope")


@pytest.mark.parametrize(
    ("field", "value", "want"),
    [
        ("i", "12", 12),
        ("i", 3.0, 3),
        ("i", "1e3", 1000),
        ("f", 2, 2.0),
        ("f", "1e-3", 0.001),
        ("b", "yes", True),
        ("b", "False", False),
        ("b", 0, False),
        ("s", 5, "5"),
        ("s", None, ""),
        ("t", ["mfcc", "zcr"], ("mfcc", "zcr")),
        ("t", None, ()),
        ("pair", ["1", "2.5"], (1, 2.5)),
        ("lst", ("1", 2), [1, 2]),
        ("d", None, {}),
        ("opt", None, None),
        ("opt", "80", 80.0),
        ("lit", "cpu", "cpu"),
        ("anything", [1, "x"], [1, "x"]),
    ],
)
def test_section_converts_to_the_annotated_type(field, value, want):
    # "audio" only has keys _Types does not know: every value below comes from cfg
    got = getattr(C.section(_Types, {field: value}, "audio"), field)
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize(
    ("field", "value"),
    [("i", "abc"), ("i", 2.5), ("i", True), ("f", "x"), ("b", "maybe"), ("b", 2), ("s", [1]),
     ("t", "mfcc"), ("pair", [1]), ("d", [1]), ("lit", "gpu"), ("i", None)],
)  # fmt: skip
def test_section_conversion_errors_name_the_key(field, value):
    with pytest.raises(ConfigError, match=rf"^config: audio\.{field}: cannot use "):
        C.section(_Types, {field: value}, "audio")


def test_section_error_names_an_override_by_its_name():
    with pytest.raises(ConfigError, match=r"^config: i: cannot use 'x' as int"):
        C.section(_Types, {}, "audio", i="x")


def _dataclass(module: str, name: str) -> type:
    return getattr(importlib.import_module(module), name)


# Every dataclass built from a config section, with the values it takes from other sections.
# A dataclass default that differs from the schema's is a second copy drifting: fix one.
SECTION_DATACLASSES = [
    ("audiosetflow.demo", "DemoSpec", "demo", {}),
    # FeatureParams.sample_rate: audio.sample_rate defaults to null, the rate of the front-end
    ("audiosetflow.audio.features", "FeatureParams", "features", {}),
    ("audiosetflow.acquisition.download", "DownloadConfig", "download", {}),
    ("audiosetflow.learning.training", "TrainSettings", "training", {"seed": "selection"}),
    ("audiosetflow.learning.labelsets", "MultilabelSettings", "multilabel", {}),
    ("audiosetflow.learning.labelsets", "ModelSettings", "model", {}),
]


@pytest.mark.parametrize(
    ("module", "name", "section", "elsewhere"),
    SECTION_DATACLASSES,
    ids=[row[1] for row in SECTION_DATACLASSES],
)
def test_dataclass_defaults_equal_schema_defaults(module, name, section, elsewhere):
    cls = _dataclass(module, name)
    plain = cls()
    overrides = {f: C.defaults(sec)[f] for f, sec in elsewhere.items()}
    from_schema = C.section(cls, {}, section, **overrides)
    shared = [f.name for f in dataclasses.fields(cls) if f.name in C.defaults(section)]
    assert shared, f"{name} has no field in config section {section!r}"
    for f in [*shared, *elsewhere]:
        assert getattr(plain, f) == getattr(from_schema, f), (
            f"{name}.{f} defaults to {getattr(plain, f)!r}, the schema to "
            f"{getattr(from_schema, f)!r}"
        )
    assert plain == from_schema


def test_from_config_of_demo_and_features_use_the_schema(monkeypatch):
    from audiosetflow.audio.features import FeatureParams
    from audiosetflow.demo import DemoSpec

    fake = copy.deepcopy(C._schema())
    fake["properties"]["demo"]["properties"]["seed"]["default"] = 99
    fake["properties"]["features"]["properties"]["n_mels"]["default"] = 40
    monkeypatch.setattr(C, "_schema", lambda: fake)
    assert DemoSpec.from_config({"enabled": True, "dir": "x"}).seed == 99
    assert DemoSpec.from_config({"seed": "5"}).seed == 5
    p = FeatureParams.from_config({"threads": 2, "n_fft": "1024"}, sample_rate=16000)
    assert (p.n_mels, p.n_fft, p.sample_rate) == (40, 1024, 16000)


# --- validate ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overlays",
    [[], ["config.yaml"], ["config.yaml", "config/demo.yaml"]],
    ids=["empty", "config.yaml", "demo"],
)
def test_validate_fills_defaults_like_snakemake(overlays):
    from snakemake.utils import update_config

    cfg: dict = {}
    for name in overlays:
        update_config(cfg, _load(REPO / name))
    cfg["download"] = {"retries": 1}  # a section given in part
    cfg.pop("audio", None)  # a section not given at all
    want = _snakemake_validate(copy.deepcopy(cfg))
    # then audio.sample_rate null becomes the rate of the front-end (librosa: 22050)
    want["audio"]["sample_rate"] = 22050
    got = C.validate(cfg)
    assert got is cfg and got == want
    assert got["download"]["url_template"] == "https://www.youtube.com/watch?v={ytid}"
    assert got["audio"] == {**C.defaults("audio"), "sample_rate": 22050}


def test_validate_does_not_share_defaults_between_configs():
    a, b = C.validate({}), C.validate({})
    a["download"]["js_runtimes"]["node"] = {}
    a["labels"].append("Vehicle")
    assert b["download"]["js_runtimes"] == {} and b["labels"] == ["Music", "Speech"]
    assert C.defaults("download")["js_runtimes"] == {}


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"download": {"retires": 1}},
         "config: unknown key 'download.retires' (did you mean 'retries'?)"),
        ({"retires": 1},
         "config: unknown key 'retires' (did you mean 'download.retries'? on the command line: "
         "--config 'download={retries: ...}')"),
        ({"lables": ["Music"]}, "config: unknown key 'lables' (did you mean 'labels'?)"),
        ({"metadata": {"dirr": "x", "foo": 1}},
         "config: unknown key 'metadata.dirr' (did you mean 'dir'?); also unknown: 'metadata.foo'"),
        ({"zzzzzz": 1}, "config: unknown key 'zzzzzz' (known at the top level: metadata, labels,"),
        ({"download": {"retries": "abc"}},
         "config: download.retries: 'abc' is not of type 'integer'"),
        ({"selection": {"max_positives": "many"}},
         "config: selection.max_positives: 'many' is not of type 'integer' or 'null'"),
        ({"download": {"retries": -1}},
         "config: download.retries: -1 is less than the minimum of 0"),
        ({"download": {"url_template": "http://x"}},
         "config: download.url_template: 'http://x' does not match"),
        ({"training": {"device": "gpu"}},
         "config: training.device: 'gpu' is not one of ['auto', 'cpu', 'cuda']"),
        ({"training": {"extra_channels": ["mfcc", "pitch"]}},
         "config: training.extra_channels[1]: 'pitch' is not one of"),
        ({"labels": []}, "config: labels: [] should be non-empty"),
        ({"labels": "Music"}, "config: labels: 'Music' is not of type 'array'"),
        ({"download": None}, "config: download: None is not of type 'object'"),
        ({"download": {"retries": "abc", "margin": "x"}},
         "config: download.retries: 'abc' is not of type 'integer' (and 1 more problem)"),
        ({"model": {"init": "Cnn14_mAP=0.431.pth"}},
         "config: model.init loads a CNN14 checkpoint: set model.arch: cnn14"),
        ({"model": {"arch": "cnn14", "freeze_trunk": True}},
         "config: model.freeze_trunk needs model.init (a pretrained trunk)"),
    ],
)  # fmt: skip
def test_validate_errors_are_one_line_naming_the_key(cfg, message):
    with pytest.raises(ConfigError) as info:
        C.validate(cfg)
    text = str(info.value)
    assert "\n" not in text and len(text) < 260
    assert text.startswith(message), text


def test_validate_error_on_a_long_value_stays_short():
    with pytest.raises(ConfigError) as info:
        C.validate({"download": ["x" * 1000]})
    assert len(str(info.value)) <= 200 and "\n" not in str(info.value)


def test_validate_rejects_a_non_mapping():
    with pytest.raises(ConfigError, match="must be a mapping"):
        C.validate(["x"])


# --- coercion of --config values --------------------------------------------------------------


def test_snakemake_passes_nested_config_as_a_mapping_of_strings():
    """What Snakemake 9 does with --config, which validate() has to deal with."""
    base = {"download": {"retries": 3, "url_template": "x{ytid}"}, "labels": ["A"]}
    cfg = _command_line(
        base, "download={retries: 0, proxy: null}", "labels=[Music, Speech]", "shard_size=10",
        "selection={max_positives: null}", "demo={enabled: true}", "cluster=True",
    )  # fmt: skip
    # deep-merged into the section from the config files; nested scalars stay strings
    assert cfg["download"] == {"retries": "0", "proxy": "null", "url_template": "x{ytid}"}
    assert cfg["labels"] == ["Music", "Speech"] and cfg["shard_size"] == 10
    assert cfg["selection"] == {"max_positives": "null"} and cfg["demo"] == {"enabled": "true"}
    assert cfg["cluster"] is True  # a top-level True/False is a bool
    # a value YAML cannot read stays a string and replaces the whole section
    assert _command_line(base, "download={retries: 0")["download"] == "{retries: 0"


def test_validate_coerces_command_line_strings():
    cfg = _command_line(
        C.validate(_load(REPO / "config.yaml")),
        "download={retries: 0, backoff_initial: 1e-1, retry_permanent: yes, proxy: null}",
        "selection={max_positives: null, negatives_per_positive: 2}",
        "training={gpus: 1, extra_channels: [zcr], learning_rate: .01}",
        "features={example_clips: [abc]}",
        "demo={enabled: true}",
        "label_quality={min_ratio: 0}",
    )
    C.validate(cfg)
    d = cfg["download"]
    assert (d["retries"], d["backoff_initial"], d["retry_permanent"]) == (0, 0.1, True)
    assert d["proxy"] == "null"  # the schema allows a string: it stays one
    assert d["url_template"] == "https://www.youtube.com/watch?v={ytid}"  # merged, not replaced
    assert cfg["selection"]["max_positives"] is None
    assert cfg["selection"]["negatives_per_positive"] == 2
    t = cfg["training"]
    assert (t["gpus"], t["extra_channels"], t["learning_rate"]) == (1, ["zcr"], 0.01)
    assert cfg["features"]["example_clips"] == ["abc"] and cfg["demo"]["enabled"] is True
    assert cfg["label_quality"]["min_ratio"] == 0


def test_coerce_reads_arrays_and_leaves_bad_strings_for_validate():
    cfg = {"labels": "[Music, Speech]", "shard_size": "ten", "download": {"margin": "1.5"}}
    assert C.coerce(cfg) is cfg
    assert cfg == {"labels": ["Music", "Speech"], "shard_size": "ten", "download": {"margin": 1.5}}


def test_a_section_given_as_a_string_asks_for_an_overlay():
    cfg = _command_line(C.validate({}), "download={retries: 0")
    with pytest.raises(ConfigError) as info:
        C.validate(cfg)
    text = str(info.value)
    assert text.startswith("config: download: got the string '{retries: 0' where a mapping")
    assert "--configfile my.yaml" in text and "\n" not in text


# --- real Snakemake runs ----------------------------------------------------------------------


def _snakemake(root: Path, *args: str, snakefile: Path = REPO / "Snakefile", target: str = "all"):
    cmd = [
        sys.executable, "-m", "snakemake", target, "-n", "--snakefile", str(snakefile),
        "--directory", str(root), "--cores", "4", *args,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), *sys.path])}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=300, env=env)


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--config", "retires=1"], "config: unknown key 'retires' (did you mean 'download."),
        (["--config", "download={retries: abc}"],
         "config: download.retries: 'abc' is not of type 'integer'"),
        (["--config", "download={retries: 0"], "config: download: got the string"),
        ([], "config: unknown key 'download.retires' (did you mean 'retries'?)"),
    ],
    ids=["config-typo", "config-type", "config-unparsable", "overlay-typo"],
)  # fmt: skip
def test_snakemake_config_error_is_short_and_names_the_key(tmp_path, args, expect):
    overlay = tmp_path / "my.yaml"
    overlay.write_text("download:\n  retires: 1\n" if not args else "{}\n")
    proc = _snakemake(tmp_path, "--configfile", str(REPO / "config.yaml"), str(overlay), *args)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert expect in out, out
    assert len(out.splitlines()) < 20, out
    assert "Failed validating" not in out and "additionalProperties" not in out


def test_snakemake_nested_config_merges_into_the_section_and_reaches_params(tmp_path):
    """--config 'download={retries: 0}' on top of the demo config: the value arrives as an int
    in the download rule's params, the demo's other download keys are kept, and a nested
    'training={threads: 3}' becomes the train jobs' threads."""
    wrapper = tmp_path / "Snakefile"
    wrapper.write_text(
        f"include: {str(REPO / 'Snakefile')!r}\n"
        "import json, sys\n"
        "print('DOWNLOAD_CFG=' + json.dumps(DOWNLOAD_CFG), file=sys.stderr)\n"
        "print('TRAINING=' + json.dumps(config['training']), file=sys.stderr)\n"
    )
    proc = _snakemake(
        tmp_path, "--configfile", str(REPO / "config.yaml"), str(REPO / "config/demo.yaml"),
        "--config", "download={retries: 0}", "training={threads: 3}", snakefile=wrapper,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    lines = {k: v for k, _, v in (ln.partition("=") for ln in out.splitlines()) if v}
    download, training = json.loads(lines["DOWNLOAD_CFG"]), json.loads(lines["TRAINING"])
    assert download["retries"] == 0 and isinstance(download["retries"], int)
    assert download["backoff_initial"] == 0.1  # config/demo.yaml
    assert "cooldown" not in download  # a pacing key: read from the config, not a param
    assert download["url_template"].startswith("file://")
    assert training["threads"] == 3 and training["epochs"] == 20  # config/demo.yaml kept
    train_jobs = out.split("rule train:")[1:]
    assert len(train_jobs) == 2 and all("threads: 3" in job for job in train_jobs)


# --- secrets --------------------------------------------------------------------------------------


def test_redact_config_hides_secrets_and_keeps_the_rest():
    from audiosetflow.config import REDACTED, redact_config, restore_secrets, validate

    cfg = validate(
        {
            "download": {
                "proxy": "socks5://user:pa%40ss@127.0.0.1:1080",
                "cookies": "/home/me/cookies.txt",
                "url_template": "https://mirror.example/{ytid}?api_key=K3Y&x=1",
                "ytdlp_options": {
                    "password": "pw",
                    "username": "me",
                    "videopassword": "vpw",
                    "cookiesfrombrowser": ["firefox", "default"],
                    "http_headers": {"Authorization": "Bearer T", "X-Auth-Token": "T2",
                                     "Cookie": "SID=1", "Accept-Language": "en"},
                    "extractor_args": {"youtube": {"player_client": ["web"]}},
                },
            },
            "labels": ["Music"],
        }
    )  # fmt: skip
    before = copy.deepcopy(cfg)
    out = redact_config(cfg)
    assert cfg == before  # the config itself keeps its values
    d = out["download"]
    assert d["proxy"] == f"socks5://{REDACTED}@127.0.0.1:1080"
    assert d["cookies"] == REDACTED
    assert d["url_template"] == f"https://mirror.example/{{ytid}}?api_key={REDACTED}&x=1"
    y = d["ytdlp_options"]
    assert {k: y[k] for k in ("password", "username", "videopassword", "cookiesfrombrowser")} == {
        k: REDACTED for k in ("password", "username", "videopassword", "cookiesfrombrowser")
    }  # fmt: skip
    assert y["http_headers"] == {"Authorization": REDACTED, "X-Auth-Token": REDACTED,
                                 "Cookie": REDACTED, "Accept-Language": "en"}  # fmt: skip
    assert y["extractor_args"] == {"youtube": {"player_client": ["web"]}}
    # everything else as it was; an empty secret stays empty (shows "not set")
    assert {k: v for k, v in out.items() if k != "download"} == {
        k: v for k, v in cfg.items() if k != "download"
    }  # fmt: skip
    assert redact_config(validate({}))["download"]["cookies"] == ""
    assert "pw" not in repr(out) and "T2" not in repr(out) and "pa%40ss" not in repr(out)
    # a job that gets the redacted settings takes the secrets back from the config
    shown = {**out["download"], "url_template": "file:///demo/{ytid}"}
    assert restore_secrets(shown, cfg["download"]) == {
        **cfg["download"], "url_template": "file:///demo/{ytid}"
    }  # fmt: skip


def test_report_param_is_escaped_json_of_the_same_data():
    import json
    import pickle

    from audiosetflow.smk import ReportDict, report_param

    value = {"name": "Dog</script><img src=x onerror=alert(1)>&\"'\x07", "n": [1, 2]}
    p = report_param(value)
    assert isinstance(p, ReportDict) and p == value
    for text in (str(p), repr(p), f"{p}"):  # what the report and Snakemake's metadata show
        assert not set("<>&") & set(text)
        assert json.loads(text) == value
    back = pickle.loads(pickle.dumps(p, protocol=4))  # how a script gets its params
    assert back == value and str(back) == str(p)
    assert str(report_param([("Bird", 0.5)])) == '[["Bird", 0.5]]'
    with pytest.raises(TypeError):
        report_param("text")
