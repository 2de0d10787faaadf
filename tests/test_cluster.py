"""No job asks for more than one node has (audiosetflow.cluster): the node's size from the
config or from sinfo, memory per job capped so that a group job fitting the node's CPUs fits
its memory. The real SLURM run is tests/test_slurm.py."""

from __future__ import annotations

import os
import stat

import pytest

from audiosetflow.cluster import (
    NodeLimits,
    allocation_limits,
    node_limits,
    parse_sinfo,
    slurm_configured,
)
from audiosetflow.errors import InputError

SINFO = """\
batch* 2 3000
batch* 2 3000
batch* 8 16000
gpu 32 256000
"""


def test_parse_sinfo_takes_the_largest_node_of_the_partition():
    assert parse_sinfo(SINFO) == (8, 16000)  # the default partition (marked *)
    assert parse_sinfo(SINFO, partition="gpu") == (32, 256000)
    assert parse_sinfo(SINFO, partition="batch") == (8, 16000)
    with pytest.raises(ValueError, match="no node in partition 'big'"):
        parse_sinfo(SINFO, partition="big")


def test_memory_is_capped_per_cpu_so_that_a_group_fits_the_node():
    node = NodeLimits(cpus=2, mem_mb=3000)
    assert node.mem(1000) == 1000
    assert node.mem(2000) == 1500  # two such jobs side by side (2 CPUs) fit 3000 MB
    assert node.mem(8000, threads=2) == 3000
    assert node.mem(8000, threads=4) == 3000
    big = NodeLimits(cpus=64, mem_mb=256000)
    assert big.mem(8000, threads=2) == 8000 and big.mem(2000) == 2000
    with pytest.raises(ValueError):
        NodeLimits(cpus=0, mem_mb=10)
    # memory known, CPUs not (node_cpus null): capped at the node's memory, no per-CPU share
    from audiosetflow.cluster import node_limits

    mem_only = node_limits({"node_cpus": None, "node_mem_mb": 64000})
    assert mem_only.mem(8000, 4) == 8000 and mem_only.mem(100000) == 64000


def _fake_sinfo(tmp_path, body: str) -> dict[str, str]:
    """A `sinfo` on PATH (a shell script) and a SLURM_CONF that exists."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "sinfo"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=x\n")
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "SLURM_CONF": str(conf)}


def test_node_limits_from_config_sinfo_or_none(tmp_path, monkeypatch):
    empty = {"PATH": str(tmp_path / "nothing")}
    assert not slurm_configured(empty)
    # no SLURM here: auto is no cap; numbers are used as they are
    assert node_limits({"node_cpus": "auto", "node_mem_mb": "auto"}, env=empty) is None
    assert node_limits({"node_cpus": None, "node_mem_mb": None}, env=empty) is None
    got = node_limits({"node_cpus": 4, "node_mem_mb": 8000}, env=empty)
    assert (got.cpus, got.mem_mb) == (4, 8000)
    # SLURM set up: auto asks sinfo (a real process), of the partition given
    env = _fake_sinfo(
        tmp_path,
        'if [ "$5" = "-p" ]; then echo "$6 3 5000"; else printf "%s" "' + SINFO + '"; fi\n',
    )
    monkeypatch.setenv("PATH", env["PATH"])
    assert slurm_configured(env)
    got = node_limits({"node_cpus": "auto", "node_mem_mb": "auto"}, env=env)
    assert (got.cpus, got.mem_mb) == (8, 16000) and "sinfo" in got.source
    got = node_limits({"node_cpus": "auto", "node_mem_mb": "auto"}, env=env, partition="small")
    assert (got.cpus, got.mem_mb) == (3, 5000)
    got = node_limits({"node_cpus": 1, "node_mem_mb": "auto"}, env=env)
    assert (got.cpus, got.mem_mb) == (1, 16000)


def test_sinfo_that_fails_is_one_line_saying_what_to_set(tmp_path, monkeypatch):
    env = _fake_sinfo(
        tmp_path, 'echo "slurm_load_partitions: Unable to contact slurm controller" >&2\nexit 1\n'
    )
    monkeypatch.setenv("PATH", env["PATH"])
    with pytest.raises(InputError) as err:
        node_limits({"node_cpus": "auto", "node_mem_mb": "auto"}, env=env)
    msg = str(err.value)
    assert "\n" not in msg and "Unable to contact slurm controller" in msg
    assert "set cluster.node_cpus and cluster.node_mem_mb" in msg
    # numbers for both: sinfo is not asked
    got = node_limits({"node_cpus": 2, "node_mem_mb": 1000}, env=env)
    assert (got.cpus, got.mem_mb) == (2, 1000)


def test_inside_a_job_the_allocation_is_the_cap():
    assert allocation_limits({}) is None
    got = allocation_limits({"SLURM_CPUS_PER_TASK": "2", "SLURM_MEM_PER_NODE": "3000"})
    assert (got.cpus, got.mem_mb) == (2, 3000)
    got = allocation_limits({"SLURM_CPUS_ON_NODE": "4", "SLURM_MEM_PER_CPU": "500"})
    assert (got.cpus, got.mem_mb) == (4, 2000)
