"""What the HTTP source answers, and how it reads a body on aiohttp's path.

:func:`respond` is the only place where an outcome becomes a status code: the pipeline speaks
in domain words (:class:`~mpsflow.delivery.Cause`), and the JSON path of a malformed body
travels as ``Outcome.path``, never inside the reason.

=================================  =========================================================
outcome (settlement, cause)        response
=================================  =========================================================
acked                              200 ``{"code":0}``
dead-lettered (Reject, exhausted)  200 ``{"code":0}``: recorded, MPS need not resend it
dead-lettered, ``MALFORMED``       400 ``{"code":400,"error":…,"path":"$.X"}``
dead-lettered, ``TOO_LARGE``       413
body over the limit at the door    413, not read and not recorded (``Content-Length`` or
                                   the bytes read so far are over ``max_body_size``)
rejected, ``UNAUTHENTICATED``      401, never retried by the pipeline
rejected otherwise                 400
retry, ``ERROR``/``TIMEOUT``       500 with ``Retry-After``
retry otherwise (busy, deferred)   503 with ``Retry-After``
=================================  =========================================================

Also here: the JSON error bodies, a body read with its size and pace limits
(:func:`read_body`), and ``/metrics`` (:func:`metrics_response`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Final

import anyio
import msgspec
from aiohttp import StreamReader, web

from mpsflow.delivery import Cause, Outcome, Settlement
from mpsflow.observability.prometheus import CONTENT_TYPE, format_family, render_metrics
from mpsflow.sources._http_server import Answer, Connections

__all__ = [
    "ACCEPTED",
    "SHUTTING_DOWN",
    "error_answer",
    "json_response",
    "metrics_response",
    "read_body",
    "respond",
    "web_response",
]

_JSON = "application/json"
_OK_BODY = b'{"code":0}'
_SERVER_ERRORS = frozenset({Cause.ERROR, Cause.TIMEOUT})
"""Causes answered 500 when retried (the others 503)."""
_ENCODER = msgspec.json.Encoder()


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    """The body did not arrive in time, or arrives below the minimum rate (the message)."""


async def _close_with(request: web.BaseRequest, response: web.Response) -> web.StreamResponse:
    """Send ``response`` now and close the connection (no lingering for a stalled client).

    A peer already gone gets nothing: the connection is closed all the same.
    """
    response.force_close()
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:
        pass  # the peer went away (aiohttp: "Cannot write to closing transport")
    finally:
        request.protocol.force_close()
    return response


def json_response(status: int, body: bytes) -> web.Response:
    return web.Response(status=status, body=body, content_type=_JSON)


def error_answer(
    status: int, message: str, *, path: str = "", headers: dict[str, str] | None = None
) -> Answer:
    payload: dict[str, object] = {"code": status, "error": message}
    if path:
        payload["path"] = path
    return Answer(status, _ENCODER.encode(payload), headers)


def web_response(answer: Answer) -> web.Response:
    """``answer`` as aiohttp's response."""
    status, body, headers, close = answer
    response = web.Response(status=status, body=body, content_type=_JSON, headers=headers)
    if close:
        response.force_close()
    return response


ACCEPTED: Final = Answer(200, _OK_BODY)
"""200 ``{"code":0}``: processed, recorded, or (with an inbox) durable there."""
SHUTTING_DOWN: Final = Answer(
    503,
    _ENCODER.encode({"code": 503, "error": "shutting down"}),
    {"Retry-After": "1"},
    close=True,
)


def respond(outcome: Outcome) -> Answer:
    """Express the pipeline's outcome as the delivery contract's HTTP answer (see the table;
    the ``X-Request-Id`` of every answer is added where requests come in)."""
    settlement = outcome.settlement
    cause = outcome.cause
    if settlement is Settlement.ACK:
        return ACCEPTED
    if settlement is Settlement.RETRY:
        status = 500 if cause in _SERVER_ERRORS else 503
        retry_after = {"Retry-After": str(max(1, math.ceil(outcome.retry_after)))}
        return error_answer(status, outcome.reason or "retry later", headers=retry_after)
    if cause is Cause.TOO_LARGE:
        status = 413
    elif cause is Cause.MALFORMED:
        status = 400
    elif settlement is Settlement.DEAD_LETTERED:
        return ACCEPTED  # recorded: MPS need not send it again
    elif cause is Cause.UNAUTHENTICATED:
        status = 401
    else:
        status = 400  # rejected by middleware: never retried
    return error_answer(status, outcome.reason or "rejected", path=outcome.path)


async def read_body(
    request: web.BaseRequest,
    limit: int,
    id_header: dict[str, str],
    *,
    read_timeout: float,
    min_rate: float,
    min_rate_grace: float,
) -> bytes | web.StreamResponse:
    """The whole body of a request aiohttp's protocol serves, or the error response (413,
    408, 400) that replaces it (``id_header``: the ``X-Request-Id`` of the answers written
    here, which close the connection at once). See :func:`_read_paced` for the timing."""
    length = request.content_length
    if length is not None and length > limit:
        return web_response(error_answer(413, f"body larger than {limit} bytes"))
    content = request.content
    if (
        request.version >= (1, 1)
        and request.headers.get("Expect", "").lower() == "100-continue"
        and not content.is_eof()
    ):  # aiohttp's low-level server does not answer it: the sender waits for it
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    try:
        if content.is_eof():  # everything arrived with the headers: no timer needed
            body = await content.read()
        else:
            body = await _read_paced(content, limit, read_timeout, min_rate, min_rate_grace)
    except _TooLarge:
        return web_response(error_answer(413, f"body larger than {limit} bytes"))
    except _TooSlow as exc:
        return await _close_with(
            request, web_response(error_answer(408, str(exc), headers=id_header))
        )
    except (web.RequestPayloadError, ConnectionError, asyncio.IncompleteReadError):
        answer = error_answer(400, "incomplete request body", headers=id_header)
        return await _close_with(request, web_response(answer))
    if len(body) > limit:
        return web_response(error_answer(413, f"body larger than {limit} bytes"))
    return body


async def _read_paced(
    content: StreamReader, limit: int, read_timeout: float, min_rate: float, min_rate_grace: float
) -> bytes:
    """The body, at most ``limit`` bytes, arriving within ``read_timeout`` and at
    ``min_rate`` after ``min_rate_grace`` (else :class:`_TooSlow`).

    Before each wait for more, the deadline is the earlier of the end of ``read_timeout``
    and the moment the bytes received so far fall below the minimum rate: ``start + grace
    + received / min_rate``. One timer per wait, on the event loop's clock.
    """
    start = anyio.current_time()
    end = start + read_timeout
    rate = min_rate
    grace = start + min_rate_grace
    chunks: list[bytes] = []
    size = 0
    while True:
        deadline = min(end, grace + size / rate) if rate > 0 else end
        with anyio.CancelScope(deadline=deadline) as scope:
            chunk = await content.readany()
        if scope.cancelled_caught:
            if deadline >= end:
                raise _TooSlow(f"request body not received in {read_timeout:g}s")
            raise _TooSlow(f"request body slower than {rate:g} bytes/s")
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)


def metrics_response(
    metrics: object,
    responses: Mapping[int, int],
    connections: Connections | None,
    inbox_size: int | None,
    inbox_caught_up: float | None,
) -> web.Response:
    """``/metrics``: the app's ``metrics`` in Prometheus' text form, then the source's own
    families (answers by status code, connections, the inbox's size when known, and when
    this process's consumer of a queue inbox last caught up); 404 when the metrics have no
    Prometheus form. Nothing here waits for the inbox: a slow queue never slows a scrape."""
    text = render_metrics(metrics)
    if text is None:
        return web_response(error_answer(404, "this app's metrics have no Prometheus form"))
    samples: dict[tuple[tuple[str, str], ...], float] = {
        (("code", str(code)),): float(n) for code, n in sorted(responses.items())
    }
    own = format_family(
        "mpsflow_http_callback_responses",
        "counter",
        "Responses on the callback path, by status code.",
        samples,
    )
    own += _connection_metrics(connections)
    if inbox_size is not None:
        own += format_family(
            "mpsflow_inbox_items",
            "gauge",
            "Notifications in the inbox: answered 200, not settled yet (every process"
            " sharing the inbox sees the same count).",
            {(): float(inbox_size)},
        )
    if inbox_caught_up is not None:
        own += format_family(
            "mpsflow_inbox_last_caught_up_timestamp_seconds",
            "gauge",
            "When this process last took everything waiting in the inbox queue (a receive got"
            " fewer messages than it asked for; Unix time, 0 before the first): time() minus"
            " this is how long it has been behind. The queue's count is in its console.",
            {(): inbox_caught_up},
        )
    response = web.Response(body=text + own.encode())
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


def _connection_metrics(connections: Connections | None) -> str:
    """``/metrics``' families of this process's connection counts (not combined across
    ``--workers``); ``""`` before the server has connections to count."""
    if connections is None:
        return ""
    families = (
        ("open_connections", "gauge", "Connections open now", connections.open),
        (
            "refused_connections",
            "counter",
            "Connections refused: too many open from their peer address",
            connections.refused,
        ),
        (
            "header_timeouts",
            "counter",
            "Connections closed with 408: a request head not received in time",
            connections.header_timeouts,
        ),
        (
            "malformed_requests",
            "counter",
            "Requests that could not be parsed, answered 400 and closed",
            connections.malformed_requests,
        ),
    )
    return "".join(
        format_family(f"mpsflow_http_{name}", kind, f"{text} (this process).", {(): value})
        for name, kind, text, value in families
    )
