"""A training job's heap (audiosetflow.learning.heap): freed memory leaves the process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Small blocks, one kept in 64: glibc keeps the freed ones in its heap (the kept blocks pin
# it), so the process stays as large as at its peak until the free pages are handed back.
_FRAGMENTED = """
import sys
from audiosetflow.learning.heap import release_memory
def anon():
    return int(open("/proc/self/status").read().split("RssAnon:")[1].split()[0]) // 1024
keep, drop = [], []
for i in range(50_000):
    (keep if i % 64 == 63 else drop).append(bytearray(4000))
del drop
before = anon()
done = release_memory() if sys.argv[1] == "release" else None
print(before, anon(), done)
"""


def _run(mode: str) -> tuple[int, int, str]:
    out = subprocess.run(
        [sys.executable, "-c", _FRAGMENTED, mode], capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"},
    ).stdout.split()  # fmt: skip
    return int(out[0]), int(out[1]), out[2]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_release_memory_hands_freed_heap_pages_back():
    kept_before, kept_after, _ = _run("keep")
    before, after, done = _run("release")
    if done == "False":
        pytest.skip("this C library has no malloc_trim")
    assert kept_before > 150 and kept_after > 150  # 200 MB allocated, 3 MB of it kept
    assert before > 150 and after < before - 120, (before, after)


def test_bounded_heap_puts_pyarrow_on_the_system_allocator():
    code = (
        "import pyarrow as pa\n"
        "from audiosetflow.learning.heap import bounded_heap\n"
        "bounded_heap()\n"
        "print(pa.default_memory_pool().backend_name)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(REPO / "src")})  # fmt: skip
    assert out.stdout.strip() == "system"


# Started as a script (as Snakemake starts an adapter): counts its starts in a file, asks for
# the flat heap, then allocates, touches and frees a 24-MiB block three times and prints its
# anonymous RSS after the last free, against before the first allocation. glibc's default
# serves a block of that size from its heap once one was freed (the mmap threshold follows the
# largest block freed), and keeps it there after the free; under FLAT_TUNABLES every such
# block is a mapping of its own, unmapped by free.
_FLAT_SCRIPT = """
import ctypes, os, sys
with open(sys.argv[1], "a") as f:
    f.write(f"{os.getpid()} {os.environ.get('GLIBC_TUNABLES', '-')}\\n")
from audiosetflow.learning.heap import flat_heap
msg = flat_heap(enabled=sys.argv[2] == "on")
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def anon():
    return int(open("/proc/self/status").read().split("RssAnon:")[1].split()[0]) // 1024
base = anon()
for _ in range(3):
    p = libc.malloc(24 << 20)
    ctypes.memset(p, 1, 24 << 20)
    libc.free(p)
print(os.getpid(), anon() - base, msg, sep="|")
"""

_glibc = pytest.mark.skipif(
    __import__("platform").libc_ver()[0] != "glibc" or not Path("/proc/self/status").exists(),
    reason="glibc's tunables, read from /proc (Linux with glibc)",
)


def _flat(tmp_path: Path, mode: str, env: dict[str, str] | None = None) -> tuple[list, list]:
    script, starts = tmp_path / "job.py", tmp_path / f"starts-{mode}.txt"
    script.write_text(_FLAT_SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script), str(starts), mode], capture_output=True, text=True,
        check=True, env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", **(env or {})},
    ).stdout.strip().split("|")  # fmt: skip
    return [ln.split(" ", 1) for ln in starts.read_text().splitlines()], out


@_glibc
def test_flat_heap_starts_the_job_again_once_and_freed_blocks_leave(tmp_path):
    from audiosetflow.learning.heap import FLAT_TUNABLES

    starts, (pid, kept_mb, msg) = _flat(tmp_path, "on")
    # one restart, in place: the same process id, the second start under the tunables
    assert starts == [[pid, "-"], [pid, FLAT_TUNABLES]]
    assert msg == f"heap: GLIBC_TUNABLES={FLAT_TUNABLES} (training.flat_memory)"
    assert int(kept_mb) < 4, kept_mb  # the 24-MiB blocks went back when freed

    starts, (pid, kept_mb, msg) = _flat(tmp_path, "off")
    assert starts == [[pid, "-"]] and msg.endswith("(training.flat_memory: false)")
    assert int(kept_mb) >= 20, kept_mb  # glibc's default kept the last block in its heap


@_glibc
def test_flat_heap_leaves_a_users_own_tunables_alone(tmp_path):
    own = "glibc.malloc.arena_max=2"
    starts, (pid, _, msg) = _flat(tmp_path, "on", env={"GLIBC_TUNABLES": own})
    assert starts == [[pid, own]]  # not started again
    assert msg == f"heap: GLIBC_TUNABLES={own} from the environment, left as it is"
