"""A one-node SLURM cluster on 127.0.0.1 for tests: munge, MariaDB, slurmdbd, slurmctld, slurmd.

Everything the cluster writes (configuration, state, spool, logs, sockets, PID files, the MariaDB
data directory, the munge key) lives under one work directory; nothing under /etc is touched and
no daemon listens on anything but 127.0.0.1 (MariaDB listens on a unix socket only). The daemons
run as root in the foreground of child processes and are stopped by their PID files.

Use from Python::

    with local_slurm(Path("/tmp/asf-slurm")) as cluster:
        subprocess.run(["sbatch", "--wrap", "true"], env=cluster.env)

or by hand (``up`` leaves the cluster running, ``down`` stops it)::

    python tests/slurm/cluster.py up /tmp/asf-slurm
    export SLURM_CONF=/tmp/asf-slurm/etc/slurm.conf
    python tests/slurm/cluster.py down /tmp/asf-slurm

Needs the Debian packages in ``PACKAGES`` (``install()`` puts them in with apt-get, as root).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("slurm-wlm", "slurmdbd", "munge", "mariadb-server")
BINARIES = (
    "munged",
    "munge",
    "unmunge",
    "mungekey",
    "mariadbd",
    "mariadb-install-db",
    "mariadb-admin",
    "slurmdbd",
    "slurmctld",
    "slurmd",
    "sbatch",
    "sacct",
    "sacctmgr",
    "sinfo",
    "squeue",
    "scancel",
    "scontrol",
)
SBIN = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")

CLUSTER_NAME = "asflocal"
PARTITION = "debug"
ACCOUNT = "asftest"
NODE = "localhost"

# SLURM 22.05 clients talk to munged over the compiled-in socket when they connect to slurmdbd
# (AuthInfo=socket=... is not honoured there), so munged listens on the default socket.
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")

# Clients inside jobs: snakemake-executor-plugin-slurm-jobstep 0.6.1 drops SLURM_CONF from the
# environment of the `srun` it runs inside each job, so srun must find the configuration without
# it. slurmd therefore runs "configless" (it fetches slurm.conf from slurmctld) and links its
# cache to /run/slurm/conf, where SLURM 22.05 clients look when /etc/slurm/slurm.conf is absent.
RUN_SLURM_CONF = Path("/run/slurm/conf")
# Environment variable carried by the daemons and all job processes, used to find leftovers.
MARKER = "ASF_LOCAL_SLURM"

# Daemons in start order; they are stopped in the reverse order.
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")


def _which(name: str) -> str | None:
    path = os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(SBIN)
    return shutil.which(name, path=path)


def missing_binaries() -> list[str]:
    """Return the names in ``BINARIES`` that are not installed."""
    return [b for b in BINARIES if _which(b) is None]


def skip_reason() -> str | None:
    """Return why this machine cannot run the cluster, or None when it can.

    The cluster needs root (the daemons and apt-get) and Debian's apt-get when packages are
    missing.
    """
    if os.geteuid() != 0:
        return "a local SLURM cluster needs root (daemons run as root; apt-get installs them)"
    if missing_binaries() and _which("apt-get") is None:
        return f"SLURM/munge/MariaDB are missing ({', '.join(missing_binaries())}) and no apt-get"
    return None


def install(*, timeout: float = 900.0) -> float:
    """Install ``PACKAGES`` with apt-get when any binary is missing; return the seconds spent.

    Services are never started by the packages' maintainer scripts: a ``policy-rc.d`` that
    denies starts is put in place for the install when the machine has none.

    Raises
    ------
    RuntimeError
        When apt-get fails or runs past ``timeout`` seconds (update and install together).
    """
    if not missing_binaries():
        return 0.0
    t0 = time.monotonic()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    policy = Path("/usr/sbin/policy-rc.d")
    added_policy = False
    if not policy.exists():
        policy.write_text("#!/bin/sh\n# added by tests/slurm/cluster.py for apt-get\nexit 101\n")
        policy.chmod(0o755)
        added_policy = True
    try:
        for cmd in (
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES],
        ):
            left = timeout - (time.monotonic() - t0)
            try:
                proc = subprocess.run(
                    cmd, env=env, capture_output=True, text=True, timeout=max(left, 1)
                )
            except subprocess.TimeoutExpired as exc:
                raise RuntimeError(f"{' '.join(cmd)} ran past {timeout:.0f} s") from exc
            if proc.returncode != 0:
                raise RuntimeError(
                    f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}"
                    f"\n{proc.stderr[-3000:]}"
                )
    finally:
        if added_policy:
            policy.unlink(missing_ok=True)
    still = missing_binaries()
    if still:
        raise RuntimeError(f"apt-get install finished but these are missing: {still}")
    return time.monotonic() - t0


def _free_ports(n: int) -> list[int]:
    """Return ``n`` distinct TCP ports free on 127.0.0.1 right now."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _real_memory_mb() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 2048


@dataclass
class Cluster:
    """A running local cluster: its paths, the environment for SLURM clients, timings."""

    workdir: Path
    env: dict[str, str]
    partition: str = PARTITION
    account: str = ACCOUNT
    cluster_name: str = CLUSTER_NAME
    cpus: int = 1
    memory_mb: int = 1024
    timings: dict[str, float] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def slurm_conf(self) -> Path:
        return self.workdir / "etc" / "slurm.conf"

    def run(self, *cmd: str, timeout: float = 30.0, check: bool = True) -> str:
        """Run a SLURM client command against this cluster and return its stdout."""
        proc = subprocess.run(
            list(cmd), env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def sacct(self, *extra: str) -> str:
        """Return ``sacct`` for all jobs of today, one line per allocation (no steps)."""
        return self.run(
            "sacct",
            "-a",
            "-X",
            "--starttime=now-1days",
            "--format=JobID,JobName%36,Partition,Account,State,ExitCode,Elapsed,ReqCPUS,ReqMem,"
            "Comment%50",
            *extra,
        )


def _write_configs(workdir: Path, ports: dict[str, int], cpus: int, mem_mb: int) -> None:
    etc = workdir / "etc"
    for d in ("etc", "log", "run", "state", "spool", "munge", "mysql", "mysql-data"):
        (workdir / d).mkdir(parents=True, exist_ok=True)
    (etc / "slurm.conf").write_text(
        f"""# Generated by tests/slurm/cluster.py: one node, everything on 127.0.0.1.
ClusterName={CLUSTER_NAME}
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ports["slurmctld"]}
SlurmdPort={ports["slurmd"]}
SlurmUser=root
SlurmdUser=root
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
SlurmctldParameters=enable_configless
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation={workdir}/state
SlurmdSpoolDir={workdir}/spool/slurmd-%n
SlurmctldPidFile={workdir}/run/slurmctld.pid
SlurmdPidFile={workdir}/run/slurmd.pid
SlurmctldLogFile={workdir}/log/slurmctld.log
SlurmdLogFile={workdir}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={ports["slurmdbd"]}
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
InactiveLimit=0
KillWait=5
MinJobAge=300
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=60
MessageTimeout=10
NodeName={NODE} NodeAddr=127.0.0.1 NodeHostname={NODE} CPUs={cpus} RealMemory={mem_mb} \
State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
"""
    )
    dbd = etc / "slurmdbd.conf"
    dbd.write_text(
        f"""# Generated by tests/slurm/cluster.py. MariaDB is reached over its unix socket
# (MYSQL_UNIX_PORT in slurmdbd's environment).
AuthType=auth/munge
CommunicationParameters=NoInAddrAny
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={ports["slurmdbd"]}
SlurmUser=root
PidFile={workdir}/run/slurmdbd.pid
LogFile={workdir}/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
"""
    )
    dbd.chmod(0o600)  # slurmdbd refuses a slurmdbd.conf readable by others


class _Daemons:
    """Start daemons in the foreground of child processes; stop them by PID file."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.started: list[tuple[str, Path, subprocess.Popen]] = []
        self.state_file = workdir / "run" / "daemons.json"

    def start(
        self, name: str, cmd: list[str], pidfile: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        log = open(self.workdir / "log" / f"{name}.stdout", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            cmd,
            env=self.env if env is None else env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.started.append((name, pidfile, proc))
        self._save()
        return proc

    def _save(self) -> None:
        self.state_file.write_text(
            json.dumps([{"name": n, "pidfile": str(p), "pid": pr.pid} for n, p, pr in self.started])
        )

    def check_alive(self) -> None:
        for name, _, proc in self.started:
            if proc.poll() is not None:
                tail = _tail(self.workdir / "log" / f"{name}.stdout")
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop_all(self, timeout: float = 15.0) -> list[str]:
        """Stop every started daemon (reverse order) by PID file; return what was done."""
        done = []
        for name, pidfile, proc in reversed(self.started):
            done.append(_stop_one(name, pidfile, proc.pid, timeout=timeout))
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
        self.started.clear()
        self._save()
        return done


def listening_addresses(pids) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket (IPv4 and IPv6) held by ``pids``."""
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with contextlib.suppress(OSError), open(table) as fh:
            for line in fh.readlines()[1:]:
                cols = line.split()
                if cols[3] != "0A" or cols[9] not in inodes:  # 0A: LISTEN
                    continue
                hexaddr, hexport = cols[1].split(":")
                raw = bytes.fromhex(hexaddr)
                if width == 8:
                    addr = socket.inet_ntop(socket.AF_INET, raw[::-1])
                else:  # four little-endian 32-bit words
                    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                    addr = socket.inet_ntop(socket.AF_INET6, words)
                found.add((addr, int(hexport, 16)))
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    return _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cmd_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _stop_one(name: str, pidfile: Path, fallback_pid: int | None, *, timeout: float) -> str:
    """SIGTERM the PID in ``pidfile`` (else ``fallback_pid``), SIGKILL after ``timeout`` s."""
    pid = None
    if pidfile.exists():
        with contextlib.suppress(ValueError, OSError):
            pid = int(pidfile.read_text().split()[0])
    source = "pidfile"
    if pid is None or not _alive(pid) or name not in _cmd_of(pid):
        pid, source = fallback_pid, "child pid"
    if pid is None or not _alive(pid):
        return f"{name}: not running"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return f"{name}: pid {pid} ({source}) stopped by SIGTERM"
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return f"{name}: pid {pid} ({source}) killed by SIGKILL after {timeout:.0f} s"


def _sweep_job_processes(workdir: Path) -> list[int]:
    """SIGKILL leftover processes of this cluster's jobs (slurmstepd and job scripts).

    They are found by ``ASF_LOCAL_SLURM=<workdir>`` in their environment, which only processes
    started by this cluster's daemons (slurmstepd inherits slurmd's environment) or by clients
    given ``Cluster.env`` (sbatch --export=ALL) carry. The calling process and its ancestors
    are spared.
    """
    spare = set()
    pid = os.getpid()
    while pid > 1:
        spare.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            break
    marker = f"{MARKER}={workdir}".encode()
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in spare:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
    return killed


def _unlink_run_conf(workdir: Path) -> list[str]:
    """Remove slurmd's /run/slurm/conf link when it points into ``workdir``."""
    link = RUN_SLURM_CONF
    if link.is_symlink() and str(Path(os.readlink(link))).startswith(str(workdir)):
        link.unlink()
        return [f"removed {link}"]
    return []


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return f"({path} not readable)"


def _wait(what: str, probe, timeout: float, daemons: _Daemons, logs: list[Path]) -> float:
    """Call ``probe()`` until it returns truthy; return seconds waited; raise on timeout."""
    t0 = time.monotonic()
    last = None
    while time.monotonic() - t0 < timeout:
        daemons.check_alive()
        try:
            if probe():
                return time.monotonic() - t0
        except (subprocess.SubprocessError, OSError, RuntimeError) as exc:
            last = exc
        time.sleep(0.25)
    tails = "\n".join(f"--- {p}\n{_tail(p)}" for p in logs)
    raise RuntimeError(f"{what} not ready after {timeout:.0f} s (last error: {last})\n{tails}")


def _ok(cmd: list[str], env: dict[str, str], timeout: float = 10.0) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def start(
    workdir: Path,
    *,
    ready_timeout: float = 60.0,
    cpus: int | None = None,
    mem_mb: int | None = None,
) -> tuple[Cluster, _Daemons]:
    """Start the cluster under ``workdir``; on any failure stop what was started and raise.

    ``cpus`` and ``mem_mb`` declare the node's size to SLURM (default: this machine's CPUs
    and its memory less 512 MB); a smaller node than the machine is allowed."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o755)
    cpus = cpus or os.cpu_count() or 1
    mem_mb = mem_mb or max(_real_memory_mb() - 512, 512)
    ports = dict(zip(("slurmctld", "slurmd", "slurmdbd"), _free_ports(3), strict=True))
    _write_configs(workdir, ports, cpus, mem_mb)
    slurm_conf = workdir / "etc" / "slurm.conf"
    mysql_sock = workdir / "mysql" / "mysqld.sock"
    munge_sock = MUNGE_SOCKET
    path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN])
    env = dict(
        os.environ,
        PATH=path,
        SLURM_CONF=str(slurm_conf),
        MYSQL_UNIX_PORT=str(mysql_sock),
        **{MARKER: str(workdir)},
    )
    for key in list(env):  # a surrounding SLURM job must not leak into this cluster
        if key.startswith(("SLURM_", "SBATCH_", "SALLOC_", "SRUN_")) and key != "SLURM_CONF":
            del env[key]
    cluster = Cluster(workdir=workdir, env=env, cpus=cpus, memory_mb=mem_mb)
    daemons = _Daemons(workdir, env)
    log = workdir / "log"
    if Path("/etc/slurm/slurm.conf").exists():
        raise RuntimeError(
            "/etc/slurm/slurm.conf exists: job steps would use it instead of this cluster's"
        )
    t_all = time.monotonic()
    try:
        # munge: our own key, socket, PID file, seed and log under workdir.
        t0 = time.monotonic()
        key = workdir / "munge" / "munge.key"
        if not key.exists():
            subprocess.run(
                ["mungekey", "--create", f"--keyfile={key}"], env=env, check=True, timeout=30
            )
        key.chmod(0o600)
        if _ok(["munge", "-n", "-S", str(munge_sock)], env).returncode == 0:
            raise RuntimeError(
                f"a munged not started here already answers on {munge_sock}; stop it first"
            )
        munge_sock.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        daemons.start(
            "munged",
            [
                "munged",
                "--foreground",
                "--force",
                f"--socket={munge_sock}",
                f"--key-file={key}",
                f"--pid-file={workdir / 'run' / 'munged.pid'}",
                f"--log-file={log / 'munged.log'}",
                f"--seed-file={workdir / 'munge' / 'munged.seed'}",
            ],
            workdir / "run" / "munged.pid",
        )

        def munge_ok() -> bool:
            cred = _ok(["munge", "-n", "-S", str(munge_sock)], env)
            if cred.returncode != 0:
                return False
            back = subprocess.run(
                ["unmunge", "-S", str(munge_sock)],
                input=cred.stdout,
                env=env,
                capture_output=True,
                text=True,
                timeout=10,
            )
            return back.returncode == 0

        _wait("munged", munge_ok, ready_timeout, daemons, [log / "munged.log"])
        cluster.timings["munged"] = time.monotonic() - t0

        # MariaDB: unix socket only (--skip-networking), root authenticates by socket.
        t0 = time.monotonic()
        datadir = workdir / "mysql-data"
        if not (datadir / "mysql").is_dir():
            proc = subprocess.run(
                [
                    "mariadb-install-db",
                    "--no-defaults",
                    "--user=root",
                    f"--datadir={datadir}",
                    "--auth-root-authentication-method=socket",
                    "--skip-test-db",
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"mariadb-install-db failed:\n{proc.stdout}\n{proc.stderr}")
        daemons.start(
            "mariadbd",
            [
                "mariadbd",
                "--no-defaults",
                "--user=root",
                f"--datadir={datadir}",
                f"--socket={mysql_sock}",
                f"--pid-file={workdir / 'run' / 'mariadbd.pid'}",
                f"--log-error={log / 'mariadbd.log'}",
                "--skip-networking",
                "--innodb-buffer-pool-size=64M",
                "--innodb-lock-wait-timeout=900",
            ],
            workdir / "run" / "mariadbd.pid",
        )
        _wait(
            "mariadbd",
            lambda: _ok(["mariadb-admin", f"--socket={mysql_sock}", "ping"], env).returncode == 0,
            ready_timeout,
            daemons,
            [log / "mariadbd.log"],
        )
        cluster.timings["mariadbd"] = time.monotonic() - t0

        # slurmdbd: creates its tables on first start; ready when sacctmgr answers.
        t0 = time.monotonic()
        daemons.start("slurmdbd", ["slurmdbd", "-D"], workdir / "run" / "slurmdbd.pid")
        _wait(
            "slurmdbd",
            lambda: _ok(["sacctmgr", "-n", "-P", "list", "cluster"], env).returncode == 0,
            ready_timeout,
            daemons,
            [log / "slurmdbd.log"],
        )
        # Register the cluster and the test account before slurmctld connects.
        out = cluster.run("sacctmgr", "-n", "-P", "list", "cluster", "format=cluster")
        if CLUSTER_NAME not in out.split():
            cluster.run("sacctmgr", "-i", "add", "cluster", CLUSTER_NAME)
        out = cluster.run("sacctmgr", "-n", "-P", "list", "account", "format=account")
        if ACCOUNT not in out.split():
            cluster.run("sacctmgr", "-i", "add", "account", ACCOUNT, f"cluster={CLUSTER_NAME}")
            cluster.run(
                "sacctmgr",
                "-i",
                "add",
                "user",
                "root",
                f"account={ACCOUNT}",
                f"cluster={CLUSTER_NAME}",
            )
        cluster.timings["slurmdbd"] = time.monotonic() - t0

        # slurmctld: ready when it answers and has registered with slurmdbd.
        t0 = time.monotonic()
        daemons.start(
            "slurmctld",
            ["slurmctld", "-D", "-i", "-f", str(slurm_conf)],
            workdir / "run" / "slurmctld.pid",
        )

        def ctld_registered() -> bool:
            if _ok(["scontrol", "ping"], env).returncode != 0:
                return False
            out = cluster.run(
                "sacctmgr", "-n", "-P", "list", "cluster", "format=cluster,controlhost"
            )
            return any(
                line.split("|")[0] == CLUSTER_NAME and line.split("|")[1]
                for line in out.splitlines()
                if "|" in line
            )

        _wait("slurmctld", ctld_registered, ready_timeout, daemons, [log / "slurmctld.log"])
        cluster.timings["slurmctld"] = time.monotonic() - t0

        # slurmd: -N localhost, since the machine's hostname is not a node name.
        t0 = time.monotonic()
        slurmd_env = {k: v for k, v in env.items() if k != "SLURM_CONF"}
        daemons.start(
            "slurmd",
            ["slurmd", "-D", "-N", NODE, "--conf-server", f"127.0.0.1:{ports['slurmctld']}"],
            workdir / "run" / "slurmd.pid",
            env=slurmd_env,
        )
        _wait(
            "slurmd (node idle)",
            lambda: (
                (RUN_SLURM_CONF / "slurm.conf").exists()
                and cluster.run("sinfo", "-h", "-N", "-o", "%N %T").split()[1:2] == ["idle"]
            ),
            ready_timeout,
            daemons,
            [log / "slurmd.log", log / "slurmctld.log"],
        )
        cluster.timings["slurmd"] = time.monotonic() - t0
        cluster.timings["bring_up"] = time.monotonic() - t_all
        cluster.pids = {name: proc.pid for name, _, proc in daemons.started}
    except BaseException:
        stop(cluster, daemons)
        raise
    return cluster, daemons


def stop(cluster: Cluster, daemons: _Daemons, *, timeout: float = 15.0) -> list[str]:
    """Cancel jobs, stop every daemon by PID file, kill leftover job processes."""
    report = []
    names = [n for n, _, _ in daemons.started]
    if "slurmctld" in names:
        with contextlib.suppress(Exception):
            cluster.run("scancel", "--user=root", timeout=10, check=False)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if not cluster.run("squeue", "-h", timeout=10, check=False).strip():
                    break
                time.sleep(0.5)
    report.extend(daemons.stop_all(timeout=timeout))
    report.extend(_unlink_run_conf(cluster.workdir))
    swept = _sweep_job_processes(cluster.workdir)
    if swept:
        report.append(f"killed leftover job processes: {swept}")
    return report


@contextlib.contextmanager
def local_slurm(
    workdir: Path,
    *,
    install_timeout: float = 900.0,
    ready_timeout: float = 60.0,
    cpus: int | None = None,
    mem_mb: int | None = None,
) -> Iterator[Cluster]:
    """Install (when needed), start and wait for a one-node cluster; always stop it after.

    Parameters
    ----------
    workdir
        Directory for everything the cluster writes. Keep it short: the munge and MariaDB unix
        socket paths under it must stay below 108 bytes.
    install_timeout
        Seconds allowed for apt-get update + install when packages are missing.
    ready_timeout
        Seconds allowed for each daemon to become ready.
    cpus, mem_mb
        The node's size as SLURM sees it (default: the machine's).

    Yields
    ------
    Cluster
        ``env`` is the environment for SLURM clients (``SLURM_CONF`` set); ``timings`` holds
        seconds for ``install``, each daemon and ``bring_up``.
    """
    t_install = install(timeout=install_timeout)
    cluster, daemons = start(Path(workdir), ready_timeout=ready_timeout, cpus=cpus, mem_mb=mem_mb)
    cluster.timings["install"] = t_install
    try:
        yield cluster
    finally:
        for line in stop(cluster, daemons):
            print(f"[local_slurm] {line}", file=sys.stderr)


def _down_from_state(workdir: Path) -> list[str]:
    """Stop daemons recorded under ``workdir`` by an earlier ``up`` (by their PID files)."""
    workdir = Path(workdir).resolve()
    state = workdir / "run" / "daemons.json"
    entries = json.loads(state.read_text()) if state.exists() else []
    if not entries:  # fall back on the PID files alone
        entries = [
            {"name": n, "pidfile": str(workdir / "run" / f"{n}.pid"), "pid": None} for n in DAEMONS
        ]
    env = dict(os.environ, SLURM_CONF=str(workdir / "etc" / "slurm.conf"))
    with contextlib.suppress(Exception):
        subprocess.run(["scancel", "--user=root"], env=env, timeout=10, capture_output=True)
    report = [
        _stop_one(e["name"], Path(e["pidfile"]), e["pid"], timeout=15) for e in reversed(entries)
    ]
    report.extend(_unlink_run_conf(workdir))
    swept = _sweep_job_processes(workdir)
    if swept:
        report.append(f"killed leftover job processes: {swept}")
    if state.exists():
        state.write_text("[]")
    return report


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("up", "down", "install"):
        print("usage: cluster.py up|down|install WORKDIR", file=sys.stderr)
        return 2
    cmd, workdir = argv[0], Path(argv[1])
    if cmd == "install":
        print(f"install: {install():.1f} s")
    elif cmd == "up":
        print(f"install: {install():.1f} s")
        cluster, _ = start(workdir)
        # The daemons were started in new sessions; they outlive this process.
        print(json.dumps({k: round(v, 2) for k, v in cluster.timings.items()}))
        print(f"export SLURM_CONF={cluster.slurm_conf}")
        print(f"stop with: {sys.executable} {__file__} down {workdir}")
    else:
        for line in _down_from_state(workdir):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
