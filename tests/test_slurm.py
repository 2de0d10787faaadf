"""The SLURM profile (profiles/slurm) proven end to end against a real one-node SLURM cluster.

tests/slurm/cluster.py brings the cluster up on 127.0.0.1 (munge, MariaDB + slurmdbd,
slurmctld, slurmd; apt-get installs them first when missing) and waits for each daemon to be
ready. The small offline demo (config/demo.yaml, fewer clips, 2 epochs) then runs through the
profile, so that every non-local rule is a real sbatch job, and sacct is read back: every such
rule ran as a SLURM job of this run, the per-shard stages ran grouped, the rules' own resources
reached sbatch.

How one job is made to fail once: while the workflow runs, the test SIGKILLs the job step of
the first training job it sees running (``scancel --signal=KILL JOBID.0``: every process of the
step, as the kernel's OOM killer or a crashing node would). Nothing in the workflow, the profile
or the package knows about it. SLURM records that job FAILED; the profile's ``retries``
resubmit the rule as a new SLURM job, which completes, and the workflow finishes.

Every daemon is stopped by its PID file afterwards, also when a test fails or pytest is
terminated (SIGTERM). Needs root; skipped with the reason printed otherwise. Every Snakemake run
is wrapped in ``timeout`` (without accounting the plugin would poll forever). Run with -s to see
the sacct listing: ``python -m pytest tests/test_slurm.py -q -s``.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"

_spec = importlib.util.spec_from_file_location(
    "asf_local_slurm", Path(__file__).parent / "slurm" / "cluster.py"
)
cluster_mod = importlib.util.module_from_spec(_spec)
sys.modules["asf_local_slurm"] = cluster_mod
_spec.loader.exec_module(cluster_mod)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# The node has less memory than what the profile's group job of two shards asks for by default
# (2 x 2000 MB) and than training's 8000 MB: without the workflow's caps (audiosetflow.cluster)
# those jobs would stay pending for ever (PartitionConfig). Its CPUs are the machine's (a
# 1-CPU node runs every job one after the other: the test took over 7 minutes on a loaded
# machine); the CPU cap is checked by tests/test_cluster.py.
NODE_CPUS = None
NODE_MEM_MB = 2500
INSTALL_TIMEOUT = 600  # apt-get update + install (measured: about 20 s)
READY_TIMEOUT = 60  # per daemon (measured: 5 s at most)
RUN_TIMEOUT = 420  # one Snakemake run through the profile (measured: under 3 minutes)


def _log(msg: str) -> None:
    print(f"[test_slurm] {msg}", flush=True)


class _Terminated(BaseException):
    """SIGTERM while the cluster is up: unwinds through the fixture so the daemons stop."""


@pytest.fixture(scope="module")
def slurm():
    """A running local cluster for the module; stopped (by PID files) whatever happens."""
    reason = cluster_mod.skip_reason()
    if reason:
        _log(f"skipped: {reason}")
        pytest.skip(reason)
    # Short path: the MariaDB unix socket lives under it (108-byte limit).
    workdir = Path(tempfile.mkdtemp(prefix="asf-slurm-"))

    def on_term(signum, frame):
        raise _Terminated(f"signal {signum}")

    old_term = signal.signal(signal.SIGTERM, on_term)
    t0 = time.monotonic()
    try:
        with cluster_mod.local_slurm(
            workdir,
            install_timeout=INSTALL_TIMEOUT,
            ready_timeout=READY_TIMEOUT,
            cpus=NODE_CPUS,
            mem_mb=NODE_MEM_MB,
        ) as cluster:
            timings = ", ".join(f"{k} {v:.1f} s" for k, v in cluster.timings.items())
            _log(f"cluster up in {time.monotonic() - t0:.1f} s ({timings}); workdir {workdir}")
            yield cluster
    finally:
        signal.signal(signal.SIGTERM, old_term)
    # local_slurm's finaliser above stopped every daemon by its PID file.
    leftovers = [name for name, pid in cluster.pids.items() if cluster_mod.alive(pid)]
    shutil.rmtree(workdir, ignore_errors=True)
    assert not leftovers, f"daemons still running after stop: {leftovers}"


def _local_profile(dest: Path, cluster) -> Path:
    """profiles/slurm with its two EDIT placeholders filled in for the local cluster.

    This is what a user does: uncomment the partition and account lines and put in their
    values. Nothing else of the profile is changed.
    """
    text = PROFILE.read_text()
    for key, value in (
        ("slurm_partition", cluster.partition),
        ("slurm_account", cluster.account),
    ):
        placeholder = f'# {key}: "YOUR_{key.split("_")[1].upper()}"'
        assert text.count(placeholder) == 1, f"profile lost its placeholder {placeholder!r}"
        text = text.replace(placeholder, f'{key}: "{value}"')
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(text)
    original = yaml.safe_load(PROFILE.read_text())
    derived = yaml.safe_load(text)
    assert {k: v for k, v in derived.items() if k != "default-resources"} == {
        k: v for k, v in original.items() if k != "default-resources"
    }
    assert derived["default-resources"]["slurm_partition"] == cluster.partition
    return dest


def _snakemake(cluster, workdir: Path, profile: Path, *args: str, timeout: float = RUN_TIMEOUT):
    """Run Snakemake through the profile with ``timeout`` (the plugin can poll forever)."""
    cmd = [
        "timeout",
        "-k",
        "10",
        str(timeout),
        sys.executable,
        "-m",
        "snakemake",
        "--profile",
        str(profile),
        # profiles/default (local runs) would otherwise be applied on top and win.
        "--workflow-profile",
        "none",
        "--directory",
        str(workdir),
        # On a real cluster 20 s (the profile) spares the scheduler; here jobs take seconds.
        "--slurm-init-seconds-before-status-checks",
        "2",
        # nothing about the node's size: the workflow asks SLURM (cluster.node_cpus: auto)
        *args,
    ]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=workdir, env=cluster.env, capture_output=True, text=True)
    elapsed = time.monotonic() - t0
    with open(workdir / "snakemake.out", "a") as fh:
        fh.write(proc.stdout + proc.stderr)
    _log(f"snakemake exited {proc.returncode} after {elapsed:.1f} s")
    if proc.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({proc.returncode}, 124 = timeout):\n{proc.stderr[-6000:]}"
        )
    return proc, elapsed


class _StepKiller(threading.Thread):
    """SIGKILL the job step of the first running job whose comment starts with ``prefix``.

    Watches squeue (only jobs of ``workdir``) until a matching job's first step (``JOBID.0``,
    the `srun` that runs the rule inside the job) exists, then kills every process of that step
    with ``scancel --signal=KILL JOBID.0``; once only.
    """

    def __init__(self, cluster, workdir: Path, prefix: str) -> None:
        super().__init__(daemon=True)
        self.cluster, self.workdir, self.prefix = cluster, str(workdir), prefix
        self.stop = threading.Event()
        self.killed: str | None = None
        self.comment: str | None = None
        self.error: str | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                jobs = self.cluster.run(
                    "squeue", "-h", "-t", "RUNNING", "-o", "%i|%k|%Z", check=False
                )
                steps = set(self.cluster.run("squeue", "-h", "-s", "-o", "%i", check=False).split())
                for line in jobs.splitlines():
                    jobid, comment, wd = (part.strip() for part in line.split("|", 2))
                    if wd == self.workdir and comment.startswith(self.prefix):
                        if f"{jobid}.0" in steps and self._step_has_processes(jobid):
                            self.cluster.run("scancel", "--signal=KILL", f"{jobid}.0")
                            self.killed, self.comment = jobid, comment
                            _log(f"killed the step {jobid}.0 of SLURM job {jobid} ({comment})")
                            return
                time.sleep(0.2)
        except Exception as exc:  # reported by the test
            self.error = repr(exc)

    def _step_has_processes(self, jobid: str) -> bool:
        """True once processes of step 0 run on the node (``scontrol listpids``)."""
        out = self.cluster.run("scontrol", "listpids", jobid, check=False)
        return any(line.split()[2:3] == ["0"] for line in out.splitlines()[1:])


def _run_uuid(stderr: str) -> str:
    for line in stderr.splitlines():
        if "SLURM run ID:" in line:
            return line.split("SLURM run ID:")[1].strip()
    raise AssertionError("no 'SLURM run ID' in the Snakemake output")


def _sacct(cluster, run_uuid: str) -> list[dict[str, str]]:
    """Allocations (no steps) of the Snakemake run (its SLURM job name is the run ID)."""
    fields = ("jobid", "state", "exit", "comment", "partition", "account", "reqmem", "reqcpus")
    out = cluster.run(
        "sacct",
        "-a",
        "-X",
        "-P",
        "-n",
        "--starttime=now-1days",
        "--name",
        run_uuid,
        "--format=JobID,State,ExitCode,Comment,Partition,Account,ReqMem,ReqCPUS",
    )
    return [dict(zip(fields, line.split("|"), strict=True)) for line in out.splitlines()]


def _mb(reqmem: str) -> float:
    """sacct's ReqMem (``2500M``, ``2G``) in MB."""
    units = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
    return float(reqmem[:-1]) * units[reqmem[-1]] if reqmem[-1] in units else float(reqmem)


def _rules_of(comment: str) -> set[str]:
    """Rule names in the plugin's --comment: rule_NAME[_wildcards_...], groups GROUP_R1_R2."""
    name = comment.removeprefix("rule_").split("_wildcards_")[0]
    if name.startswith("shard_"):  # the group of profiles/slurm: shard_features_transcode_trim
        return set(name.removeprefix("shard_").split("_"))
    return {name}


DEMO_SMALL = {
    # 12 clips: one train and one eval shard -> 2 download jobs and one group job.
    "demo": {"clips_per_class": 4},
    "shard_size": 16,
    "training": {"epochs": 2, "patience": 1},
}


def test_cluster_is_up_and_bound_to_loopback(slurm):
    nodes = slurm.run("sinfo", "-h", "-N", "-o", "%N %P %T %c %m").split()
    assert nodes[:3] == ["localhost", f"{slurm.partition}*", "idle"], nodes
    clusters = slurm.run("sacctmgr", "-n", "-P", "list", "cluster", "format=cluster,controlhost")
    assert f"{slurm.cluster_name}|127.0.0.1" in clusters.split(), clusters
    assocs = slurm.run("sacctmgr", "-n", "-P", "list", "assoc", "format=account,user")
    assert f"{slurm.account}|root" in assocs.split(), assocs
    listening = cluster_mod.listening_addresses(slurm.pids.values())
    _log(f"listening TCP sockets of the daemons: {sorted(listening)}")
    assert listening, "no daemon listens at all"
    assert {addr for addr, _ in listening} == {"127.0.0.1"}, listening
    assert len(listening) == 3  # slurmdbd, slurmctld, slurmd; MariaDB and munged: unix only


def test_demo_workflow_on_slurm_with_a_killed_job_resubmitted(slurm, tmp_path):
    """The small offline demo through the profile; one training job is killed once."""
    work = tmp_path / "demo"
    work.mkdir()
    small = work / "small.yaml"
    small.write_text(yaml.safe_dump(DEMO_SMALL))
    profile = _local_profile(tmp_path / "profile", slurm)
    config_args = [
        "--snakefile",
        str(REPO / "Snakefile"),
        "--configfile",
        str(REPO / "config.yaml"),
        str(REPO / "config" / "demo.yaml"),
        str(small),
    ]
    killer = _StepKiller(slurm, work, "rule_train_")
    killer.start()
    try:
        proc, elapsed = _snakemake(slurm, work, profile, *config_args)
    finally:
        killer.stop.set()
        killer.join(timeout=10)
    out = proc.stdout + proc.stderr
    run_uuid = _run_uuid(proc.stderr)
    _log(f"sacct for run {run_uuid}:\n{slurm.sacct('--name', run_uuid)}")
    rows = _sacct(slurm, run_uuid)
    by_id = {r["jobid"]: r for r in rows}
    assert killer.error is None, killer.error
    assert killer.killed, "no training job was seen running, so none was killed"

    # Every SLURM job Snakemake submitted is in sacct under this run, in the profile's
    # partition and account; no other job is.
    submitted = set(re.findall(r"has been submitted with SLURM jobid (\d+)", out))
    assert submitted == set(by_id), (submitted, sorted(by_id))
    assert all(r["partition"] == slurm.partition for r in rows), rows
    assert all(r["account"] == slurm.account for r in rows), rows

    # Every non-local rule ran as a SLURM job; local rules did not.
    remote_rules = set(re.findall(r"^\s*rule (\w+):", out, flags=re.M))
    local_rules = set(re.findall(r"^\s*localrule (\w+):", out, flags=re.M))
    in_sacct = set().union(*(_rules_of(r["comment"]) for r in rows))
    assert remote_rules == in_sacct, (remote_rules, in_sacct)
    assert {"download", "transcode", "trim", "features", "train", "metrics_summary"} <= in_sacct
    assert {"all", "aggregate"} <= local_rules and not local_rules & in_sacct, local_rules

    # The per-shard stages ran grouped: one SLURM job for both shards (group-components 4).
    shards = sorted((work / "results" / "features").rglob("*.parquet"))
    downloads = [r for r in rows if r["comment"].startswith("rule_download_")]
    groups = [r for r in rows if r["comment"] == "rule_shard_features_transcode_trim"]
    assert len(shards) == len(downloads) == 2, (shards, downloads)
    assert len(groups) == 1, groups

    # The workflow asked SLURM for the node's size once and capped every job at it: no job
    # asked for more CPUs or memory than the node has (the group job of two shards included).
    assert (
        f"every job fits one node: {slurm.cpus} CPUs, {slurm.memory_mb} MB "
        f"(sinfo, partition {slurm.partition})" in proc.stderr
    ), proc.stderr[-3000:]
    for r in rows:
        assert int(r["reqcpus"]) <= slurm.cpus and _mb(r["reqmem"]) <= slurm.memory_mb, r
    assert _mb(groups[0]["reqmem"]) <= slurm.memory_mb < 2 * 2000, groups
    # The rules' own resources reached sbatch (capped only by the node's size).
    train_cpus = min(2, slurm.cpus)  # training.threads in config.yaml
    for r in rows:
        if r["comment"].startswith("rule_train_"):
            assert r["reqmem"] == f"{min(8000, slurm.memory_mb)}M", r
            assert r["reqcpus"] == str(train_cpus), r
        elif r["comment"].startswith("rule_download_"):
            assert (r["reqmem"], r["reqcpus"]) == ("1000M", "1"), r

    # The killed job: FAILED in SLURM, resubmitted as a new SLURM job that COMPLETED.
    killed = by_id[killer.killed]
    assert killed["state"] == "FAILED", killed
    same = sorted(
        (r for r in rows if r["comment"] == killer.comment), key=lambda r: int(r["jobid"])
    )
    assert [r["state"] for r in same] == ["FAILED", "COMPLETED"], same
    assert same[0]["jobid"] == killer.killed
    assert "Trying to restart job" in out
    assert all(r["state"] == "COMPLETED" for r in rows if r is not killed), rows

    # ... and the workflow finished.
    assert "steps (100%) done" in out
    summary = work / "results" / "metrics" / "summary.tsv"
    assert summary.exists() and (work / "results" / "models" / "music.pt").exists()
    _log(f"demo workflow: {len(rows)} SLURM jobs (one killed and resubmitted) in {elapsed:.1f} s")

    # A second run finds nothing to do and submits nothing.
    again, _ = _snakemake(slurm, work, profile, *config_args, timeout=120)
    assert "Nothing to be done" in again.stderr, again.stderr[-2000:]
    assert "has been submitted" not in again.stdout + again.stderr
