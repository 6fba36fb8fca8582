"""pytest fixtures: a real ``redis-server`` on loopback, flushed per test, and restartable.

* ``redis_process`` (session): the :class:`RedisServer` child process, persistence off.
* ``redis_server`` (session): its URL.
* ``redis_url`` (function): the same URL after ``FLUSHALL`` (and after restarting the server
  if an earlier test left it stopped).
* ``redis_spawn`` (function): starts private servers a test may stop and restart (store-down
  tests), so the shared one is never disturbed; all are stopped at teardown.

``redis-server`` must be on PATH (Debian package ``redis-server``); without it these fixtures
fail with instructions instead of skipping.
"""

from __future__ import annotations

import collections
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

__all__ = ["RedisServer", "redis_process", "redis_server", "redis_spawn", "redis_url"]

_READY_LINE = b"Ready to accept connections"
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0
_PORT_ATTEMPTS = 5


class RedisServer:
    """One ``redis-server`` child on 127.0.0.1, without persistence.

    The port is chosen on the first :meth:`start` and kept across :meth:`stop` / :meth:`start`,
    so clients can reconnect to the same URL after a restart.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.host = "127.0.0.1"
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._output: collections.deque[bytes] = collections.deque(maxlen=50)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def socket_url(self) -> str:
        """The same server on its Unix socket (``unix://…/redis.sock?db=0``)."""
        return f"unix://{self.socket}?db=0"

    @property
    def socket(self) -> Path:
        return self.workdir / "redis.sock"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server (on a fresh free port the first time) and wait until it answers."""
        if self.running:
            return
        if self.port:
            self._launch(self.port)
            return
        for attempt in range(_PORT_ATTEMPTS):
            port = _free_port()
            try:
                self._launch(port)
            except RuntimeError:
                if attempt == _PORT_ATTEMPTS - 1:
                    raise
                continue
            self.port = port
            return

    def stop(self) -> None:
        """Shut the server down (SIGTERM, no save) and wait for it to exit."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a paused server would not see SIGTERM
            process.terminate()
            try:
                process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._join_reader()

    def pause(self) -> None:
        """Stop the process (SIGSTOP): connections hang, data stays, as in a stalled host."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server go on (SIGCONT); it then runs the commands that queued up."""
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def _launch(self, port: int) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "redis-server is not on PATH. Run the project's test setup first "
                "(it installs Debian's redis-server: apt-get install -y redis-server).",
                pytrace=False,
            )
        command = [
            binary,
            "--bind", self.host,
            "--port", str(port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--logfile", "",
            "--loglevel", "notice",
        ]  # fmt: skip
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        ready = threading.Event()
        self._output.clear()
        self._reader = threading.Thread(
            target=self._read_output, args=(process, ready), name=f"redis-{port}", daemon=True
        )
        self._reader.start()
        if not ready.wait(_START_TIMEOUT) or process.poll() is not None or not _pings(port):
            if process.poll() is None:
                process.kill()
            process.wait()
            self._join_reader()
            log = b"\n".join(self._output).decode(errors="replace")
            raise RuntimeError(f"redis-server did not start on port {port}:\n{log}")
        self._process = process

    def _read_output(self, process: subprocess.Popen[bytes], ready: threading.Event) -> None:
        stream = process.stdout
        assert stream is not None
        with stream:
            for line in stream:
                self._output.append(line.rstrip())
                if _READY_LINE in line:
                    ready.set()
        ready.set()  # EOF: the process exited; the caller sees it has.

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(_STOP_TIMEOUT)
            self._reader = None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _flushall(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
        sock.sendall(b"FLUSHALL\r\n")
        reply = sock.recv(64)
    if not reply.startswith(b"+OK"):
        raise RuntimeError(f"FLUSHALL failed: {reply!r}")


@pytest.fixture(scope="session")
def redis_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The shared redis-server of this test session."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(redis_process: RedisServer) -> str:
    """URL of the shared redis-server (``redis://127.0.0.1:<port>/0``)."""
    return redis_process.url


@pytest.fixture
def redis_url(redis_process: RedisServer) -> str:
    """URL of the shared redis-server, emptied with FLUSHALL for this test."""
    redis_process.start()
    _flushall(redis_process.port)
    return redis_process.url


@pytest.fixture
def redis_spawn(tmp_path: Path) -> Iterator[Callable[[], RedisServer]]:
    """A factory of private, started redis-servers that the test may stop and restart."""
    servers: list[RedisServer] = []

    def spawn() -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(servers)}")
        server.workdir.mkdir()
        servers.append(server)
        server.start()
        return server

    try:
        yield spawn
    finally:
        for server in servers:
            server.stop()
