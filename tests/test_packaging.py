"""The sdist and the wheel: the LICENSE ships in both, the base dependencies are the package
alone's, the rest are extras. Built offline with the installed setuptools, from a copy."""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile

import pytest
from conftest import REPO


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} < 77 (PEP 639 license fields)")
    work = tmp_path_factory.mktemp("pkg")
    src = work / "project"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(REPO / "src", src / "src", ignore=skip)
    out = work / "dist"
    code = (
        "import sys; from setuptools import build_meta as b; "
        "d = sys.argv[1]; s = b.build_sdist(d); w = b.build_wheel(d); print('BUILT', s, w)"
    )
    r = subprocess.run([sys.executable, "-c", code, str(out)], cwd=src, capture_output=True,
                       text=True, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    sdist, wheel = r.stdout.rsplit("BUILT ", 1)[1].split()
    return out / sdist, out / wheel


def test_license_is_mit_and_ships_in_sdist_and_wheel(dists):
    sdist, wheel = dists
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 audiosetflow contributors\n")
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"] == "MIT"
    with zipfile.ZipFile(wheel) as z:
        lic = [n for n in z.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
        assert lic and z.read(lic[0]).decode() == text
        meta_name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(z.read(meta_name))
        assert "audiosetflow/__main__.py" in z.namelist()
    with tarfile.open(sdist) as t:
        top = sdist.name.removesuffix(".tar.gz")
        assert t.extractfile(f"{top}/LICENSE").read().decode() == text
    assert meta["License-Expression"] == "MIT"
    base = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
    assert not [r for r in base if r.startswith(("snakemake", "yt-dlp", "librosa", "matplotlib"))]
    assert any(r.startswith("torch") for r in base)
    assert set(meta.get_all("Provides-Extra")) == {"train", "workflow", "test", "export", "hdf5"}
