"""What the benchmarks need around the processes they measure: ports, pinning and CPU time.

Servers and load generators run in processes of their own, pinned to a CPU core with
``taskset`` when there is one, and are measured by the CPU time they use (Linux ``/proc``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

__all__ = ["cpu_seconds", "free_port", "pin", "pinned"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(core: int | None, command: list[str]) -> list[str]:
    """``command`` run on CPU ``core`` with ``taskset`` (as is without a core or taskset)."""
    if core is None or shutil.which("taskset") is None:
        return command
    return ["taskset", "-c", str(core), *command]


def pin(pid: int, core: int | None) -> bool:
    """Move the running process ``pid`` and all its threads to CPU ``core`` (``taskset -a -p``).

    For processes started by code that does not pin them. False when there is nothing to do
    (no core, no taskset) or taskset refused.
    """
    if core is None or shutil.which("taskset") is None:
        return False
    command = ["taskset", "-a", "-p", "-c", str(core), str(pid)]
    return subprocess.run(command, capture_output=True, check=False).returncode == 0


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
