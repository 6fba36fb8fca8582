"""How a dev server listens: one aiohttp runner on a socket bound first, so a port in use is a
:class:`~mpsflow.errors.StartupError` saying what to do before anything is set up."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from mpsflow._listen import listen

__all__ = ["start_runner"]


async def start_runner(
    handle: Callable[[web.Request], Awaitable[web.StreamResponse]],
    host: str,
    port: int,
    *,
    max_request_bytes: int,
    handler_cancellation: bool = False,
) -> tuple[web.AppRunner, tuple[str, int]]:
    """Serve every path and method with ``handle`` on ``host:port`` (0 picks a free port);
    the runner (``cleanup()`` stops it) and the address it listens on."""
    app = web.Application(client_max_size=max_request_bytes)
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=5.0,
        handler_cancellation=handler_cancellation,
    )
    sock = listen(host, port, port_option="--port")
    await runner.setup()
    site = web.SockSite(runner, sock)
    try:
        await site.start()
    except BaseException:
        sock.close()
        await runner.cleanup()
        raise
    return runner, (host, int(runner.addresses[0][1]))
