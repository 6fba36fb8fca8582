"""The HTTP source's protections: body size, slow clients, backpressure, draining, TLS."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import anyio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mpsflow.sources.http import HttpSource
from tests.blocking import blocking_handler
from tests.sources.http_app import base_url, make_app, posted, records, seed_like, serve

LIMIT = 4096


def blocking_app() -> tuple[Any, anyio.Event, anyio.Event]:
    """An app whose handler signals ``entered`` and then waits for ``release``."""
    app, _ = make_app()
    release = anyio.Event()
    entered = blocking_handler(app, release)
    return app, entered, release


# -- body size ---------------------------------------------------------------------------------


async def test_oversize_with_content_length_is_413_before_reading() -> None:
    app, dead = make_app()
    async with posted(app, b"x" * (LIMIT * 64), max_body_size=LIMIT) as response:
        assert response.status == 413
        assert (await response.json())["code"] == 413
    assert records(dead) == []
    assert app.metrics.snapshot()["deliveries"] == {}  # type: ignore[attr-defined]


async def test_oversize_chunked_is_413_while_reading() -> None:
    app, _ = make_app()

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b"y" * 1024

    async with posted(app, chunks(), max_body_size=LIMIT) as response:
        assert response.request_info.headers.get("Transfer-Encoding") == "chunked"
        assert response.status == 413


async def test_app_body_limit_is_the_default() -> None:
    app, _ = make_app(max_body_size=LIMIT)
    async with serve(app) as source, aiohttp.ClientSession() as session:
        async with session.post(source.url, data=b"z" * (LIMIT + 1)) as response:
            assert response.status == 413
        async with session.post(source.url, data=seed_like()) as response:
            assert response.status == 200


# -- slow clients ------------------------------------------------------------------------------


async def test_slow_client_gets_408_and_the_connection_closed() -> None:
    app, _ = make_app()
    async with serve(app, read_timeout=0.2) as source:
        assert source.address is not None
        host, port = source.address
        head = (
            f"POST {source.path} HTTP/1.1\r\nHost: {host}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        ).encode()
        received = b""
        with anyio.fail_after(10):
            async with await anyio.connect_tcp(host, port) as stream:
                await stream.send(head + b'{"EventType": "Wor')  # ... and then nothing more
                try:
                    while True:
                        received += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    pass  # the server closed the connection
    assert received.startswith(b"HTTP/1.1 408 ")
    assert b"Connection: close" in received
    assert source.in_flight == 0


# -- backpressure ------------------------------------------------------------------------------


async def test_full_in_flight_gets_503_with_retry_after() -> None:
    app, entered, release = blocking_app()
    statuses: list[int] = []
    async with serve(app, max_in_flight=1) as source, aiohttp.ClientSession() as session:

        async def first() -> None:
            async with session.post(source.url, data=seed_like("t-1")) as response:
                statuses.append(response.status)

        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await entered.wait()
            assert source.in_flight == 1
            async with session.post(source.url, data=seed_like("t-2")) as response:
                assert response.status == 503
                assert response.headers["Retry-After"] == "1"
            async with session.get(base_url(source) + "/healthz") as response:
                assert response.status == 200  # health checks are not held up by the limit
            release.set()
    assert statuses == [200]


# -- graceful shutdown -------------------------------------------------------------------------


async def test_stop_lets_in_flight_requests_finish() -> None:
    app, entered, release = blocking_app()
    source = HttpSource(port=0)
    answer: dict[str, Any] = {}
    async with aiohttp.ClientSession() as session:

        async def post() -> None:
            async with session.post(source.url, data=seed_like()) as response:
                answer["status"] = response.status
                answer["body"] = await response.json()

        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(app.run, source, handle_signals=False))
            await source.wait_serving()
            tg.start_soon(post)
            await entered.wait()
            app.stop()
            release.set()
    assert answer == {"status": 200, "body": {"code": 0}}
    assert source.in_flight == 0
    assert source.draining


async def test_draining_is_not_ready_and_refuses_new_callbacks() -> None:
    app, _ = make_app()
    source = HttpSource(port=0, drain_delay=60.0)
    stop = anyio.Event()
    async with app, aiohttp.ClientSession() as session, anyio.create_task_group() as tg:
        tg.start_soon(source.run, app.source_runtime(stop))
        await source.wait_serving()
        async with session.get(base_url(source) + "/readyz") as response:
            assert response.status == 200
        stop.set()
        async with session.get(base_url(source) + "/readyz") as response:
            assert response.status == 503
            assert (await response.json())["reason"] == "draining"
        async with session.post(source.url, data=seed_like()) as response:
            assert response.status == 503
            assert response.headers["Connection"] == "close"
        tg.cancel_scope.cancel()  # cut the drain delay short; the source still cleans up
    assert source.draining


async def test_readyz_is_503_until_the_app_has_started() -> None:
    app, _ = make_app()
    source = HttpSource(port=0)
    stop = anyio.Event()
    async with aiohttp.ClientSession() as session, anyio.create_task_group() as tg:
        tg.start_soon(source.run, app.source_runtime(stop))
        await source.wait_serving()
        async with session.get(base_url(source) + "/readyz") as response:
            assert response.status == 503
            assert (await response.json())["reason"] == "app not started"
        async with session.get(base_url(source) + "/healthz") as response:
            assert response.status == 200
        stop.set()


async def test_source_can_serve_again_after_a_stop() -> None:
    for _ in range(2):
        app, _ = make_app()
        async with posted(app, seed_like()) as response:
            assert response.status == 200


async def test_a_given_socket_is_served_and_left_open() -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    try:
        for task in ("t-1", "t-2"):  # served twice: each run serves a duplicate
            app, _ = make_app()
            async with (
                serve(app, sock=sock) as source,
                aiohttp.ClientSession() as session,
                session.post(f"http://127.0.0.1:{port}{source.path}", data=seed_like(task)) as r,
            ):
                assert source.address == ("127.0.0.1", port)
                assert r.status == 200
        assert sock.fileno() != -1
    finally:
        sock.close()


async def test_reuse_port_lets_two_sources_share_a_port() -> None:
    first_app, _ = make_app()
    second_app, _ = make_app()
    async with serve(first_app, reuse_port=True) as first:
        assert first.address is not None
        async with (
            serve(second_app, port=first.address[1], reuse_port=True) as second,
            aiohttp.ClientSession() as session,
            session.post(second.url, data=seed_like()) as response,
        ):
            assert second.address == first.address
            assert response.status == 200


# -- TLS ---------------------------------------------------------------------------------------


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_with_cert_and_key_files(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    app, _ = make_app()
    client_ssl = ssl.create_default_context(cafile=str(cert))
    async with serve(app, certfile=cert, keyfile=key) as source, aiohttp.ClientSession() as session:
        assert source.url.startswith("https://")
        async with session.post(source.url, data=seed_like(), ssl=client_ssl) as response:
            assert response.status == 200
            assert await response.json() == {"code": 0}
