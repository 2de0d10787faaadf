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
