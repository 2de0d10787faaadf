"""What one cluster node can run: so that no job asks SLURM for more than any node has.

A SLURM job that asks for more CPUs or memory than any node of its partition has stays
pending for ever (``squeue`` reason ``PartitionConfig``), and Snakemake waits without a word.
A group job of several shards asks for the sum of what they need side by side. The workflow
therefore caps every job at one node's size (:class:`NodeLimits`): the CPUs through
Snakemake's ``--cores`` (which also caps what a group job sums), the memory through each
rule's ``mem_mb`` (:meth:`NodeLimits.mem`: at most the node's memory per CPU times the job's
threads, so that a group job that fits the node's CPUs fits its memory too).

The size comes from the config (``cluster.node_cpus``, ``cluster.node_mem_mb``) or, with
``auto`` (the default) on a machine where SLURM is set up, from ``sinfo`` once, in the main
Snakemake process: the largest node of the partition (the profile's ``slurm_partition``, or
the cluster's default one). The Snakemake process that runs a job inside its SLURM allocation
caps the same way at what the job was given (:func:`allocation_limits`), so its job steps
(``srun``) never ask for more than the allocation holds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError

__all__ = [
    "NodeLimits",
    "parse_sinfo",
    "ask_slurm",
    "slurm_configured",
    "node_limits",
    "allocation_limits",
]

#: Where SLURM's configuration is found when ``SLURM_CONF`` is not set.
SLURM_CONF_PATHS = ("/etc/slurm/slurm.conf", "/etc/slurm-llnl/slurm.conf")
SINFO_TIMEOUT = 30.0
#: What stands for a limit that is not known (no cap on that resource).
UNKNOWN = 1 << 40


@dataclass(frozen=True)
class NodeLimits:
    """CPUs and memory (MB) of the node a job must fit, and where they came from."""

    cpus: int
    mem_mb: int
    source: str = "config"

    def __post_init__(self) -> None:
        if self.cpus < 1 or self.mem_mb < 1:
            raise ValueError(f"node limits must be positive: {self.cpus} CPUs, {self.mem_mb} MB")

    def mem(self, want: int, threads: int = 1) -> int:
        """A job's memory request: ``want``, at most the node's memory and at most its
        memory per CPU times ``threads``."""
        if self.cpus >= UNKNOWN:  # the CPUs are not known: no per-CPU share
            return max(1, min(int(want), self.mem_mb))
        per_cpu = self.mem_mb * max(1, int(threads)) // self.cpus
        return max(1, min(int(want), self.mem_mb, per_cpu))

    def describe(self) -> str:
        return f"{self.cpus} CPUs, {self.mem_mb} MB ({self.source})"


def parse_sinfo(text: str, *, partition: str | None = None) -> tuple[int, int]:
    """The largest node (by CPUs, then memory) in ``sinfo -h -N -o '%P %c %m'`` output,
    of ``partition`` (or of the default partition, marked ``*``, when None).

    Raises
    ------
    ValueError
        When no node of that partition is listed.
    """
    nodes = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        part, cpus, mem = parts[0], parts[1], parts[2]
        default = part.endswith("*")
        part = part.rstrip("*")
        if (partition is None and not default) or (partition is not None and part != partition):
            continue
        try:
            nodes.append((int(cpus.rstrip("+")), int(mem.rstrip("+"))))
        except ValueError:
            continue
    if not nodes:
        where = f"partition {partition!r}" if partition else "the default partition"
        raise ValueError(f"sinfo lists no node in {where}")
    return max(nodes)


def slurm_configured(env: Mapping[str, str] | None = None) -> bool:
    """True where ``sinfo`` is on PATH and SLURM has a configuration (``SLURM_CONF``, or
    one of :data:`SLURM_CONF_PATHS`)."""
    env = os.environ if env is None else env
    if shutil.which("sinfo", path=env.get("PATH")) is None:
        return False
    conf = env.get("SLURM_CONF")
    return bool(conf and Path(conf).exists()) or any(Path(p).exists() for p in SLURM_CONF_PATHS)


def ask_slurm(
    partition: str | None = None,
    *,
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
) -> NodeLimits:
    """The largest node of ``partition`` (default: the cluster's default partition), from one
    ``sinfo`` call.

    Raises
    ------
    InputError
        One line saying what failed and which config keys to set instead.
    """
    cmd = ["sinfo", "-h", "-N", "-o", "%P %c %m"]
    if partition:
        cmd += ["-p", partition]
    hint = (
        "set cluster.node_cpus and cluster.node_mem_mb to the CPUs and memory (MB) of your "
        "nodes in your config (null: no cap)"
    )
    try:
        proc = run(cmd, capture_output=True, text=True, timeout=SINFO_TIMEOUT)
    except (OSError, subprocess.SubprocessError) as exc:
        raise InputError(
            f"cluster: cannot ask SLURM the size of its nodes ({exc}); {hint}"
        ) from None
    if proc.returncode != 0:
        err = " ".join((proc.stderr or "").split())[:200] or f"exit status {proc.returncode}"
        raise InputError(f"cluster: cannot ask SLURM the size of its nodes (sinfo: {err}); {hint}")
    try:
        cpus, mem = parse_sinfo(proc.stdout, partition=partition)
    except ValueError as exc:
        raise InputError(f"cluster: {exc}; {hint}") from None
    where = f"partition {partition}" if partition else "default partition"
    return NodeLimits(cpus=cpus, mem_mb=mem, source=f"sinfo, {where}")


def allocation_limits(env: Mapping[str, str] | None = None) -> NodeLimits | None:
    """Inside a SLURM job: the CPUs and memory it was given (``SLURM_CPUS_PER_TASK`` or
    ``SLURM_CPUS_ON_NODE``; ``SLURM_MEM_PER_NODE``, or ``SLURM_MEM_PER_CPU`` times the CPUs),
    so that the Snakemake process running the job asks its job steps for no more; None
    outside SLURM."""
    env = os.environ if env is None else env

    def num(key: str) -> int | None:
        v = env.get(key, "").split("(")[0].strip()
        return int(v) if v.isdigit() and int(v) > 0 else None

    cpus = num("SLURM_CPUS_PER_TASK") or num("SLURM_CPUS_ON_NODE")
    if cpus is None:
        return None
    mem = num("SLURM_MEM_PER_NODE")
    if mem is None and num("SLURM_MEM_PER_CPU"):
        mem = num("SLURM_MEM_PER_CPU") * cpus
    return NodeLimits(cpus=cpus, mem_mb=mem or 1 << 40, source="SLURM allocation")


def node_limits(
    cfg: Mapping[str, Any],
    *,
    partition: str | None = None,
    env: Mapping[str, str] | None = None,
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
) -> NodeLimits | None:
    """The node size jobs are capped at, from ``config['cluster']``.

    ``node_cpus`` and ``node_mem_mb``: numbers (used as they are), ``auto`` (asked from SLURM
    where it is set up, :func:`slurm_configured`; no cap elsewhere) or null (no cap). A key
    left ``auto`` while the other is a number takes the number and asks SLURM for the other.

    Raises
    ------
    InputError
        ``auto`` where SLURM is set up but ``sinfo`` fails or lists no node (one line).
    """
    want = {k: cfg.get(k, "auto") for k in ("node_cpus", "node_mem_mb")}
    if all(v is None for v in want.values()):
        return None
    asked = None
    if any(v == "auto" for v in want.values()):
        if not slurm_configured(env):
            if all(v in ("auto", None) for v in want.values()):
                return None
        else:
            asked = ask_slurm(partition, run=run)
    big = UNKNOWN

    def value(key: str, from_slurm: int | None) -> int:
        v = want[key]
        if v == "auto":
            return from_slurm if from_slurm is not None else big
        return big if v is None else int(v)

    cpus = value("node_cpus", asked.cpus if asked else None)
    mem = value("node_mem_mb", asked.mem_mb if asked else None)
    source = asked.source if asked else "config"
    if asked and all(v == "auto" for v in want.values()):
        source = asked.source
    elif asked:
        source = f"config and {asked.source}"
    return NodeLimits(cpus=cpus, mem_mb=mem, source=source)
