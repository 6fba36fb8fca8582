"""What the benchmarks need around the processes they measure: ports, pinning and CPU time.

Servers and load generators run in processes of their own, pinned to a CPU core with
``taskset`` when there is one, and are measured by the CPU time they use (Linux ``/proc``).
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

__all__ = ["cpu_seconds", "free_port", "pinned"]


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


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
