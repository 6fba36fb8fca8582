"""Fixtures the dedup tests share: a fake clock, a MemoryStore on it, a silent server, another
process writing a SQLite file."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mpsflow.clock import FakeClock
from mpsflow.dedup.stores.memory import MemoryStore


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> MemoryStore:
    return MemoryStore(clock=clock)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback port that accepts connections and never answers (a hung Redis)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


_IN_COMPANY = """
import fcntl, os, sys
fd = os.open(os.path.realpath(sys.argv[1]) + "-writers", os.O_RDWR | os.O_CREAT, 0o644)
fcntl.lockf(fd, fcntl.LOCK_SH, 1, 1)
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def company() -> Iterator[Callable[[Path], Callable[[], None]]]:
    """``leave = company(path)``: another process says it writes the SQLite file ``path`` too
    (as a writer in company does, see ``mpsflow._sqlite_sharing``) until ``leave()`` or the end
    of the test."""
    processes: list[subprocess.Popen[str]] = []

    def end(process: subprocess.Popen[str]) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        if process.returncode is None:
            process.stdin.close()
            process.wait(timeout=30)
            process.stdout.close()

    def join(path: Path) -> Callable[[], None]:
        process = subprocess.Popen(
            [sys.executable, "-c", _IN_COMPANY, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        processes.append(process)
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"
        return lambda: end(process)

    yield join
    for process in processes:
        end(process)
