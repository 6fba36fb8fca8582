"""pytest fixtures: the local CMQ-compatible server (in process or as a subprocess) and a client.

Every server listens on a free loopback port and accepts the key pair of ``cmq_credential``.
``cmq_server_factory`` starts servers with any :class:`CmqServer` options (a ``FakeClock``, a
data file, ...) and stops them all at teardown; ``cmq_server_process`` runs
``python -m mpsflow.devservers.cmq --port 0`` and reads the URL it prints. ``silent_cmq`` is
an endpoint that takes connections and never answers, and counts them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import pytest

from mpsflow.devservers.cmq import CmqServer
from mpsflow.tencentcloud.cmq.client import CmqClient
from mpsflow.tencentcloud.cmq.credentials import Credential

__all__ = [
    "CMQ_SECRET_ID",
    "CMQ_SECRET_KEY",
    "CmqServerFactory",
    "CmqServerProcess",
    "CmqServerProcessFactory",
    "SilentEndpoint",
    "cmq_client",
    "cmq_credential",
    "cmq_server",
    "cmq_server_factory",
    "cmq_server_process",
    "silent_cmq",
]

CMQ_SECRET_ID = "AKIDmpsflowTESTKEY0000000000000001"
CMQ_SECRET_KEY = "mpsflow-test-secret-key-0001"
_ROOT = Path(__file__).resolve().parents[2]


class CmqServerFactory(Protocol):
    """Starts a :class:`CmqServer` on 127.0.0.1:0; ``credentials`` defaults to the test pair."""

    async def __call__(
        self, *, credentials: Mapping[str, str] | list[Credential] | None = None, **options: Any
    ) -> CmqServer: ...


@pytest.fixture
def cmq_credential() -> Credential:
    """The SecretId/SecretKey every test server accepts."""
    return Credential(CMQ_SECRET_ID, CMQ_SECRET_KEY)


@pytest.fixture
async def cmq_server_factory() -> AsyncIterator[CmqServerFactory]:
    """Start servers with custom options; all are stopped at teardown."""
    servers: list[CmqServer] = []

    async def start(
        *, credentials: Mapping[str, str] | list[Credential] | None = None, **options: Any
    ) -> CmqServer:
        server = CmqServer(credentials or {CMQ_SECRET_ID: CMQ_SECRET_KEY}, **options)
        servers.append(server)
        await server.start("127.0.0.1", 0)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def cmq_server(cmq_server_factory: CmqServerFactory) -> CmqServer:
    """A running server on the real clock with default settings."""
    return await cmq_server_factory()


@pytest.fixture
async def cmq_client(cmq_server: CmqServer, cmq_credential: Credential) -> AsyncIterator[CmqClient]:
    """A client of ``cmq_server`` with the test credential."""
    async with CmqClient(cmq_server.url, cmq_credential) as client:
        yield client


class CmqServerProcess:
    """``python -m mpsflow.devservers.cmq`` running in a child process."""

    def __init__(self, args: list[str]) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "mpsflow.devservers.cmq", "--host", "127.0.0.1"]
        command += ["--port", "0", "--secret-id", CMQ_SECRET_ID, "--secret-key", CMQ_SECRET_KEY]
        self.process = subprocess.Popen(
            [*command, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "listening on " not in line:
            self.stop()
            raise RuntimeError(f"the CMQ server did not start: {line!r}")
        self.url = line.rsplit("listening on ", 1)[1].strip()

    def stop(self) -> int:
        """Send SIGTERM, wait for the exit, and return the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        return status


class CmqServerProcessFactory(Protocol):
    """Starts the server CLI with extra arguments."""

    def __call__(self, *args: str) -> CmqServerProcess: ...


@pytest.fixture
def cmq_server_process() -> Iterator[CmqServerProcessFactory]:
    """Start ``python -m mpsflow.devservers.cmq`` processes; any still running stop at teardown."""
    started: list[CmqServerProcess] = []

    def start(*args: str) -> CmqServerProcess:
        server = CmqServerProcess(list(args))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


class SilentEndpoint:
    """A loopback port whose connections the kernel accepts into the listen backlog, where
    nothing ever reads or answers them (a VPC-internal address seen from outside)."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.url = f"http://127.0.0.1:{listener.getsockname()[1]}"

    def connections(self) -> int:
        """How many connections were made since the last call (taken off the backlog)."""
        self.listener.setblocking(False)
        count = 0
        while True:
            try:
                connection, _ = self.listener.accept()
            except BlockingIOError:
                return count
            connection.close()
            count += 1


@pytest.fixture
def silent_cmq() -> Iterator[SilentEndpoint]:
    """An endpoint that takes connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(32)
        yield SilentEndpoint(listener)
