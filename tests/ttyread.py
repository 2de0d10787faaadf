"""Run a command with its stderr on a real pseudo-terminal (for the progress-bar tests)."""

from __future__ import annotations

import os
import pty
import subprocess


def run_on_tty(cmd: list[str], *, env: dict, timeout: float) -> tuple[int, str, bytes]:
    """Run ``cmd`` with stdout on a pipe and stderr on a pty; return (exit status, stdout,
    every byte the terminal received)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    tty = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        tty += chunk
    out = proc.stdout.read().decode()
    code = proc.wait(timeout=timeout)
    os.close(master)
    return code, out, tty
