"""The conda route, as far as it can be checked without conda (not installed here): the two
environment files, their agreement with pyproject.toml, and what Snakemake does with the
per-rule environment under ``--sdm conda`` (with a stand-in ``conda`` command that records what
it is asked to build and, like conda, runs the pip section from the env file's folder)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import REPO

import audiosetflow
from audiosetflow.smk import PROJECT_VARIABLE

ROOT_ENV = REPO / "environment.yml"
RULE_ENV = REPO / "workflow" / "envs" / "audiosetflow.yaml"
POST_DEPLOY = RULE_ENV.with_name("audiosetflow.post-deploy.sh")
SRC = str(Path(audiosetflow.__file__).resolve().parents[1])


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _expand(extra: str, extras: dict[str, list[str]]) -> list[str]:
    """The requirements of an extra with its self-references (``audiosetflow[x]``) expanded."""
    out = []
    for req in extras[extra]:
        m = re.fullmatch(r"audiosetflow\[([a-z,]+)\]", req)
        out += [r for e in m.group(1).split(",") for r in _expand(e, extras)] if m else [req]
    return out


def _env(path: Path) -> tuple[list[str], list[str]]:
    """(conda packages, pip requirements) of an environment file."""
    env = yaml.safe_load(path.read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = [r for d in env["dependencies"] if isinstance(d, dict) for r in d.get("pip", [])]
    return conda, pip


def test_rule_env_lists_the_packages_dependencies_and_no_path():
    project = _pyproject()
    conda, pip = _env(RULE_ENV)
    want = project["dependencies"] + _expand("workflow", project["optional-dependencies"])
    assert pip == want  # same strings, same order: base, train, workflow
    # nothing that resolves against a folder: Snakemake builds it from .snakemake/conda/
    for req in pip + conda:
        assert not re.match(r"(-e|--editable|-r|\.|/|~|file:|git\+)", req), req
        assert "/" not in req and "$" not in req, req
    py = next(c for c in conda if c.startswith("python"))
    assert py == "python=" + project["requires-python"].removeprefix(">=")
    build = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    assert set(build) <= set(conda)  # the post-deploy builds the package without isolation
    assert {"ffmpeg>=6", "pip"} <= set(conda)


def test_root_env_installs_the_project_with_the_workflow_extra():
    """The env a person creates (``conda env create -f environment.yml``), where Snakemake
    runs: conda runs its pip section in the file's folder, the project."""
    conda, pip = _env(ROOT_ENV)
    assert pip == ["-e .[workflow]"]
    assert "workflow" in _pyproject()["optional-dependencies"]
    assert _env(RULE_ENV)[0][:3] == conda[:3]  # same python and ffmpeg as the rules get
    assert yaml.safe_load(ROOT_ENV.read_text())["name"] == "audiosetflow"


def test_every_rule_runs_in_the_rule_env():
    common = (REPO / "workflow" / "rules" / "common.smk").read_text()
    env = re.search(r'^ENV = "([^"]+)"$', common, re.M).group(1)
    assert (REPO / "workflow" / "rules" / env).resolve() == RULE_ENV
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for rule in re.split(r"^rule ", smk.read_text(), flags=re.M)[1:]:
            if "script:" in rule or "shell:" in rule:
                assert re.search(r"^    conda:\n        ENV$", rule, re.M), (smk, rule[:40])


def test_post_deploy_script_installs_from_the_named_project_not_the_working_directory(tmp_path):
    log = tmp_path / "python.log"
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    _write_exe(fake_bin / "python", f'#!/bin/sh\necho "$PWD|$*" >> "{log}"\n')
    elsewhere = tmp_path / ".snakemake" / "conda"  # where Snakemake keeps its copy
    elsewhere.mkdir(parents=True)
    copy = elsewhere / "0123abcd.post-deploy.sh"
    shutil.copy(POST_DEPLOY, copy)
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}", PROJECT_VARIABLE: str(REPO)}
    r = subprocess.run(["sh", str(copy)], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    cwd, args = log.read_text().strip().split("|")
    assert args.split() == ["-m", "pip", "install", "--no-deps", "--no-build-isolation",
                            "--disable-pip-version-check", "-e", str(REPO)]  # fmt: skip
    # without the variable it stops with one line, before installing anything
    for value in ("", str(tmp_path)):
        log.unlink(missing_ok=True)
        env[PROJECT_VARIABLE] = value
        r = subprocess.run(["sh", str(copy)], cwd=elsewhere, env=env, capture_output=True,
                           text=True)  # fmt: skip
        assert r.returncode != 0 and not log.exists()
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and PROJECT_VARIABLE in lines[0]


def _write_exe(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


# A stand-in for conda: enough of `conda info/--version/config` for Snakemake's checks, and
# `conda env create --file F --prefix P`, which records the request and, as conda does, runs
# the pip section from F's folder (a local path that is no Python project fails, as with pip).
# P/bin/python records what the post-deploy script asks of it.
FAKE_CONDA = """\
#!{python}
import json, os, sys
from pathlib import Path
import yaml

args = sys.argv[1:]
root = Path(__file__).resolve().parent.parent
if args == ["info", "--json"]:
    print(json.dumps({{"conda_prefix": str(root), "platform": "linux-64"}}))
elif args == ["--version"]:
    print("conda 24.7.1")
elif args[:2] == ["config", "--get"]:
    print(json.dumps({{"get": {{"channel_priority": "strict"}}}}))
elif args[:1] == ["clean"]:
    pass
elif args[:2] == ["env", "create"]:
    file = Path(args[args.index("--file") + 1].strip('"'))
    prefix = Path(args[args.index("--prefix") + 1].strip('"'))
    env = yaml.safe_load(file.read_text())
    pip = [r for d in env["dependencies"] if isinstance(d, dict) for r in d.get("pip", [])]
    with open(root / "requests.jsonl", "a") as f:
        f.write(json.dumps({{"file": str(file), "prefix": str(prefix), "pip": pip}}) + "\\n")
    for req in pip:
        local = req.removeprefix("-e ").split("[")[0]
        if local.startswith((".", "/")):
            where = (file.parent / local).resolve()
            if not (where / "pyproject.toml").exists():
                sys.exit(f"ERROR: file://{{where}} does not appear to be a Python project")
    (prefix / "bin").mkdir(parents=True)
    py = prefix / "bin" / "python"
    py.write_text('#!/bin/sh\\necho "$PWD|$*" >> "{{}}"\\n'.format(root / "python.log"))
    py.chmod(0o755)
else:
    sys.exit(f"fake conda: unsupported {{args}}")
"""


@pytest.fixture
def fake_conda(tmp_path) -> Path:
    root = tmp_path / "fakeconda"
    (root / "bin").mkdir(parents=True)
    _write_exe(root / "bin" / "conda", FAKE_CONDA.format(python=sys.executable))
    (root / "bin" / "activate").write_text('export PATH="$1/bin:$PATH"\nexport CONDA_PREFIX="$1"\n')
    return root


def _snakemake(workdir: Path, fake: Path, *args: str, snakefile: Path = REPO / "Snakefile"):
    env = {**os.environ, "PATH": f"{fake / 'bin'}:{os.environ['PATH']}",
           "PYTHONPATH": SRC}  # fmt: skip
    env.pop(PROJECT_VARIABLE, None)
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile),
           "--directory", str(workdir), "--configfile", str(REPO / "config.yaml"),
           str(REPO / "config" / "demo.yaml"), "--cores", "1", "--sdm", "conda",
           "--conda-create-envs-only", *args]  # fmt: skip
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)


def test_sdm_conda_builds_one_env_in_dot_snakemake_and_installs_the_project(tmp_path, fake_conda):
    """``snakemake --sdm conda`` run from another folder (``--directory``): one env for every
    rule, built from a copy in .snakemake/conda/ that resolves nothing against a folder, then
    the post-deploy script installs the package from the project, by its absolute path."""
    work = tmp_path / "run"
    work.mkdir()
    r = _snakemake(work, fake_conda)
    assert r.returncode == 0, r.stderr[-3000:]
    requests = [json.loads(ln) for ln in (fake_conda / "requests.jsonl").read_text().splitlines()]
    assert len(requests) == 1
    (req,) = requests
    conda_dir = work / ".snakemake" / "conda"
    assert Path(req["file"]).parent == conda_dir
    assert Path(req["file"]).read_text() == RULE_ENV.read_text()
    assert Path(req["prefix"]).parent == conda_dir
    assert "Running post-deploy script" in r.stderr
    ((cwd, args),) = [ln.split("|") for ln in (fake_conda / "python.log").read_text().splitlines()]
    assert Path(cwd) == work
    assert args.split()[-2:] == ["-e", str(REPO.resolve())]
    # built once: a second run finds it
    again = _snakemake(work, fake_conda)
    assert (
        again.returncode == 0 and len((fake_conda / "requests.jsonl").read_text().splitlines()) == 1
    )


def test_the_old_env_file_fails_where_snakemake_builds_it(tmp_path, fake_conda):
    """What the issue reported: ``pip: -e .`` resolves in .snakemake/conda/, not the project.
    (The stand-in conda resolves pip paths from the env file's folder, as conda does.)"""
    project = tmp_path / "project"
    skip = shutil.ignore_patterns(".git", "results", ".snakemake", "__pycache__", ".venv")
    shutil.copytree(REPO, project, ignore=skip)
    (project / "workflow" / "envs" / "audiosetflow.yaml").write_text(
        textwrap.dedent(
            """\
            channels: [conda-forge]
            dependencies:
              - python=3.11
              - pip
              - pip:
                  - -e .
            """
        )
    )
    work = tmp_path / "run"
    work.mkdir()
    r = _snakemake(work, fake_conda, snakefile=project / "Snakefile")
    assert r.returncode != 0
    assert "does not appear to be a Python project" in r.stderr
    assert str(work / ".snakemake" / "conda") in r.stderr
