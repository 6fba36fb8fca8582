"""Readiness: may this process take traffic now, and if not, why not.

An app is ready once it has started and every readiness check (an async ``() -> bool``, e.g.
the dedup store's ``ping``) passes within a few seconds. Sources that answer probes (the HTTP
source's ``/readyz``) ask through a :data:`ReadinessProbe` they are handed, never the app.
``App.run`` starts only when its dedup store answers (:func:`require_store`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import anyio

from mpsflow._sqlite_connections import directory_problem
from mpsflow.dedup.stores.base import (
    IdempotencyStore,
    describe_store,
    store_unavailable,
    unavailable_message,
)
from mpsflow.errors import StartupError, StoreUnavailable

__all__ = [
    "CHECK_TIMEOUT",
    "READY",
    "Readiness",
    "ReadinessCheck",
    "ReadinessProbe",
    "always_ready",
    "probe",
    "require_store",
]

_log = logging.getLogger("mpsflow.observability.health")

CHECK_TIMEOUT = 5.0
"""Seconds one readiness check may take before it counts as failed."""


@dataclass(frozen=True, slots=True)
class Readiness:
    """Whether to take traffic now; ``reason`` says why not (log-safe)."""

    ready: bool
    reason: str = ""


READY = Readiness(True)

ReadinessCheck = Callable[[], Awaitable[bool]]
"""One async check (the store answers, …): True when it passes."""

ReadinessProbe = Callable[[], Awaitable[Readiness]]
"""The whole answer: started and every check passing, or the first reason why not."""


async def always_ready() -> Readiness:
    """The probe of a runtime that has nothing to check."""
    return READY


async def probe(
    checks: Iterable[ReadinessCheck], *, started: bool = True, within: float = CHECK_TIMEOUT
) -> Readiness:
    """Not ready before ``started``, nor while a check fails, raises or takes over ``within``
    seconds; the reason names the first check that failed."""
    if not started:
        return Readiness(False, "app not started")
    for check in checks:
        if not await _passes(check, within):
            name = getattr(check, "__qualname__", type(check).__name__)
            return Readiness(False, f"readiness check failed: {name}")
    return READY


async def _passes(check: ReadinessCheck, within: float) -> bool:
    try:
        with anyio.fail_after(within):
            return bool(await check())
    except Exception:
        _log.warning("readiness check %r failed", check, exc_info=True)
        return False


_PROBE_KEY = "mpsflow:startup-check"
"""A key no claim uses: releasing it with a token nobody holds changes nothing."""


async def require_store(store: IdempotencyStore, *, within: float = CHECK_TIMEOUT) -> None:
    """Raise :class:`~mpsflow.errors.StartupError` naming ``store`` and the cause unless it
    answers a ping within ``within`` seconds."""
    try:
        with anyio.fail_after(within):
            if await store.ping():
                return
            # ping says only "no": a harmless call that fails the store's way says why
            await store.release(_PROBE_KEY, "-")
        problem = f"idempotency store {describe_store(store)} does not answer a ping"
    except StoreUnavailable as exc:
        refusal = directory_problem(
            exc, "the idempotency store", "give it a file path (--dedup PATH)", "dedup.sqlite3"
        )
        if refusal is not None:  # "--dedup ." : the folder is fine, the path is not a file
            raise StartupError(refusal) from None
        problem = unavailable_message(exc, store)
    except TimeoutError:
        problem = f"idempotency store {describe_store(store)} did not answer within {within:g}s"
    except Exception as exc:
        problem = str(store_unavailable(describe_store(store), exc))
    advice = "check its password" if _refused_login(problem) else "start it or fix its address"
    raise StartupError(f"{problem}: {advice} (dedup cannot run without it)")


_LOGIN_REFUSALS = ("NOAUTH", "WRONGPASS", "AuthenticationError", "invalid password")
"""How a store says it refused the credentials (Redis' error codes, redis-py's exception)."""


def _refused_login(problem: str) -> bool:
    return any(refusal in problem for refusal in _LOGIN_REFUSALS)
