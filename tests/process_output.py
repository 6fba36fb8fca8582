"""Run ``python -m mpsflow`` as a child process and wait for its output lines (no sleeps)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
from anyio.streams.text import TextReceiveStream

__all__ = ["Output", "child_process", "mpsflow_process"]


class Output:
    """Lines of a process's stream, collected as they come; wait for matching ones."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._changed = anyio.Event()

    async def collect(self, stream: anyio.abc.ByteReceiveStream) -> None:
        pending = ""
        async for text in TextReceiveStream(stream):
            pending += text
            *complete, pending = pending.split("\n")
            self.lines.extend(complete)
            self._changed.set()
            self._changed = anyio.Event()
        if pending:
            self.lines.append(pending)

    async def wait_for_all(self, pattern: re.Pattern[str], count: int) -> list[re.Match[str]]:
        """The first ``count`` matches of ``pattern``, waiting (up to 30 s) for them."""
        with anyio.fail_after(30):
            while True:
                matches = [m for line in self.lines if (m := pattern.search(line))]
                if len(matches) >= count:
                    return matches[:count]
                await self._changed.wait()

    async def wait_for(self, pattern: re.Pattern[str]) -> re.Match[str]:
        """The first match of ``pattern``, waiting (up to 30 s) for it."""
        [match] = await self.wait_for_all(pattern, 1)
        return match

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@asynccontextmanager
async def child_process(
    argv: list[str], cwd: Path, env: Mapping[str, str]
) -> AsyncIterator[tuple[anyio.abc.Process, Output]]:
    """``argv`` in a session of its own, stdout+stderr collected, whatever is left killed.

    At the end whatever is left of that session (the process and any worker it forked,
    even after a failed test) is killed.
    """
    process = await anyio.open_process(
        argv,
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    output = Output()
    async with process, anyio.create_task_group() as tg:
        assert process.stdout is not None
        tg.start_soon(output.collect, process.stdout)
        try:
            yield process, output
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


@asynccontextmanager
async def mpsflow_process(
    cwd: Path, env: Mapping[str, str], *args: str
) -> AsyncIterator[tuple[anyio.abc.Process, Output]]:
    """``python -m mpsflow ARGS`` with ResourceWarnings as errors; stdout+stderr collected.

    It runs in a session of its own, and at the end whatever is left of that session (the
    process and any worker it forked, even after a failed test) is killed.
    """
    argv = [sys.executable, "-W", "error::ResourceWarning", "-m", "mpsflow", *args]
    async with child_process(argv, cwd, env) as (process, output):
        yield process, output
