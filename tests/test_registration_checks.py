"""Registration catches mistakes: status filters a key never has, handlers that cannot be awaited
as ``handler(result, ctx)``. Each fails at ``@app.on`` with one line saying what to write."""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock

import pytest

from mpsflow import App, ConfigurationError, Context, Router
from mpsflow.events import EVENT_KEYS, LIVE_KEYS, SUBTASK_KEYS
from mpsflow.events.statuses import STATUSES
from mpsflow.sinks.memory import MemorySink
from mpsflow.testing import TestClient, build_notification, media_result

ROOT = Path(__file__).resolve().parents[1]


async def handler(result: Any, ctx: Context) -> None:
    pass


def register(key: str, **options: Any) -> None:
    """``@Router().on(key, **options)`` on a well-formed handler (dynamic: checked at runtime)."""
    on: Callable[..., Callable[[Any], Any]] = Router().on
    on(key, **options)(handler)


# --- status filters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "status", "message"),
    [
        (
            "Transcode",
            "SUCESS",
            "unknown status 'SUCESS' for Transcode: did you mean 'SUCCESS'? "
            "(Transcode results have SUCCESS, FAIL, PROCESSING)",
        ),
        (
            "Transcode",
            "success",
            "unknown status 'success' for Transcode: did you mean 'SUCCESS'? "
            "(Transcode results have SUCCESS, FAIL, PROCESSING)",
        ),
        (
            "Transcode",
            "FINISH",
            "unknown status 'FINISH' for Transcode (Transcode results have SUCCESS, FAIL, "
            "PROCESSING)",
        ),
        (
            "WorkflowTask",
            "FINISHED",
            "unknown status 'FINISHED' for WorkflowTask: did you mean 'FINISH'? "
            "(WorkflowTask events have PROCESSING, FINISH)",
        ),
        (
            "ExtractBlindWatermark",
            "WAIT",
            "unknown status 'WAIT' for ExtractBlindWatermark: did you mean 'WAITING'? "
            "(ExtractBlindWatermark events have WAITING, PROCESSING, FINISH)",
        ),
        (
            "AiContentReview.Porn",
            {"SUCCESS", "FIAL"},
            "unknown status 'FIAL' for AiContentReview.Porn: did you mean 'FAIL'? "
            "(AiContentReview.Porn results have SUCCESS, FAIL, PROCESSING)",
        ),
        (
            "ProcessEof",
            "SUCCESS",
            "status= never matches ProcessEof: ProcessEof results have no Status "
            "(filter with ok=, failed= or when= instead)",
        ),
        (
            "CoverBySnapshot",
            "SUCCESS",
            "status= never matches CoverBySnapshot: CoverBySnapshot results have no Status "
            "(filter with ok=, failed= or when= instead)",
        ),
        ("Transcode", set(), "status= for Transcode is empty, so the handler would never run"),
        ("Transcode", 1, "status= takes a status or a collection of statuses, not 1"),
    ],
)
def test_a_status_the_key_never_has_fails_at_registration(
    key: str, status: Any, message: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        register(key, status=status)
    assert str(raised.value) == message


@pytest.mark.parametrize("key", sorted({*EVENT_KEYS, *SUBTASK_KEYS, *LIVE_KEYS}))
def test_every_status_of_every_key_registers(key: str) -> None:
    for status in STATUSES[key]:
        register(key, status=status)
    if STATUSES[key]:
        register(key, status=set(STATUSES[key]))
        register(key, status=list(STATUSES[key]))
    register(key)  # and no filter at all


def test_the_app_checks_when_decorating_and_the_router_too() -> None:
    app = App()
    with pytest.raises(ConfigurationError, match="did you mean 'SUCCESS'"):
        app.on("Transcode", status="SUCESS")
    router = Router()
    with pytest.raises(ConfigurationError, match="did you mean 'FINISH'"):
        router.on("WorkflowTask", status="FINSH")


def shipped_filters() -> list[tuple[str, str, object]]:
    """Every literal ``.on("Key", status=...)`` in the examples and the README's Python blocks."""
    sources = [(str(p.relative_to(ROOT)), p.read_text()) for p in (ROOT / "examples").rglob("*.py")]
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    sources += [(f"README.md block {i}", block) for i, block in enumerate(blocks)]
    found = []
    for where, text in sources:
        for node in ast.walk(ast.parse(text)):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            status = next((k.value for k in node.keywords if k.arg == "status"), None)
            if node.func.attr == "on" and node.args and status is not None:
                found.append((where, ast.literal_eval(node.args[0]), ast.literal_eval(status)))
    return found


def test_the_shipped_examples_filters_register() -> None:
    """The examples' and the README's handlers (``FINISH`` events, ``SUCCESS`` subtasks)."""
    filters = shipped_filters()
    assert any(where == "examples/app.py" for where, _, _ in filters)
    assert any(where.startswith("README.md") for where, _, _ in filters)
    for _where, key, status in filters:
        register(key, status=status)


async def test_a_checked_filter_still_routes() -> None:
    app = App(dead_letters=MemorySink())
    got: list[str | None] = []

    @app.on("Transcode", status={"SUCCESS", "PROCESSING"})
    async def on_transcode(result: Any, ctx: Context) -> None:
        got.append(result.status)

    body = build_notification(
        media_results=[
            media_result("Transcode"),
            media_result("Transcode", status="FAIL"),
            media_result("Transcode", status="PROCESSING"),
        ]
    )
    async with TestClient(app) as client:
        assert (await client.send(body)).acked
    assert sorted(got, key=str) == ["PROCESSING", "SUCCESS"]


# --- handler shape ------------------------------------------------------------------------


def plain(result: Any, ctx: Context) -> None:
    pass


async def one_param(result: Any) -> None:
    pass


async def no_params() -> None:
    pass


async def extra_required(result: Any, ctx: Any, retries: int) -> None:
    pass


async def keyword_required(result: Any, ctx: Context, *, sink: str) -> None:
    pass


class SyncCallable:
    def __call__(self, result: Any, ctx: Context) -> None:
        pass


@pytest.mark.parametrize(
    ("func", "message"),
    [
        (
            plain,
            "handler plain must be 'async def plain(result, ctx)': it is a plain def",
        ),
        (
            lambda result, ctx: None,
            "handler <lambda> must be 'async def handler(result, ctx)': it is a lambda, "
            "which cannot be async",
        ),
        (
            one_param,
            "handler one_param must be 'async def one_param(result, ctx)': "
            "it takes 1 parameter, needs 2 (result, ctx)",
        ),
        (
            no_params,
            "handler no_params must be 'async def no_params(result, ctx)': "
            "it takes 0 parameters, needs 2 (result, ctx)",
        ),
        (
            extra_required,
            "handler extra_required must be 'async def extra_required(result, ctx)': "
            "it also requires retries; give extra parameters defaults",
        ),
        (
            keyword_required,
            "handler keyword_required must be 'async def keyword_required(result, ctx)': "
            "it also requires sink; give extra parameters defaults",
        ),
        (
            functools.partial(extra_required, 1, 2),
            "handler extra_required must be 'async def extra_required(result, ctx)': "
            "it takes 1 parameter, needs 2 (result, ctx)",
        ),
        (
            SyncCallable(),
            "handler SyncCallable() must have 'async def __call__(self, result, ctx)': "
            "its __call__ is a plain def",
        ),
    ],
)
def test_a_handler_that_cannot_be_awaited_with_result_and_ctx_fails(
    func: Callable[..., Any], message: str
) -> None:
    app = App()
    decorate: Callable[[Any], Any] = app.on("Transcode")
    with pytest.raises(ConfigurationError) as raised:
        decorate(func)
    assert str(raised.value) == message
    assert app.handlers == ()


async def with_options(result: Any, ctx: Context, *, label: str = "x", **extra: Any) -> None:
    pass


async def three(prefix: str, result: Any, ctx: Context) -> None:
    pass


async def anything(*args: Any) -> None:
    pass


class AsyncCallable:
    async def __call__(self, result: Any, ctx: Context) -> None:
        pass


class Handlers:
    async def on_transcode(self, result: Any, ctx: Context) -> None:
        pass


def forwarding(func: Callable[[Any, Context], Awaitable[None]]) -> Any:
    """A decorator whose wrapper is a plain def returning the coroutine (``functools.wraps``)."""

    @functools.wraps(func)
    def wrapper(result: Any, ctx: Context) -> Awaitable[None]:
        return func(result, ctx)

    return wrapper


@pytest.mark.parametrize(
    "func",
    [
        handler,
        with_options,
        functools.partial(three, "p"),
        anything,
        AsyncCallable(),
        Handlers().on_transcode,
        forwarding(handler),
        AsyncMock(),
    ],
    ids=lambda f: getattr(f, "__name__", type(f).__name__),
)
def test_async_handlers_of_every_shape_register(func: Callable[..., Any]) -> None:
    app = App()
    decorate: Callable[[Any], Any] = app.on("Transcode", name="h")
    assert decorate(func) is func
    assert [spec.func for spec in app.handlers] == [func]
