"""API keys for signing CMQ requests: permanent keys, SCF-injected temporary keys, refreshing ones.

Temporary (STS) credentials add a ``Token`` parameter that is signed like any other
(CMQ API 2.0 common parameters, cloud.tencent.com/document/product/406/5883; the ``Token`` of
the SDK's ``supportTmpKey`` branch). The client asks its provider for a credential before every
request attempt, so a provider that refreshes is honoured without reconnecting.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import anyio

from mpsflow.clock import Clock, SystemClock
from mpsflow.errors import ConfigurationError

__all__ = [
    "Credential",
    "CredentialProvider",
    "EnvironmentCredentials",
    "RefreshingCredentials",
    "StaticCredentials",
]


@dataclass(frozen=True, slots=True, repr=False)
class Credential:
    """A SecretId/SecretKey pair, with the session token and expiry of temporary keys.

    The key and the token never show in ``repr`` or ``str``.
    """

    secret_id: str
    secret_key: str
    token: str | None = None
    expires_at: float | None = None
    """Unix time after which the key stops working (temporary keys only)."""

    def __repr__(self) -> str:
        token = ", token=<hidden>" if self.token else ""
        return f"Credential(secret_id={self.secret_id!r}, secret_key=<hidden>{token})"


@runtime_checkable
class CredentialProvider(Protocol):
    """Hands out the credential to sign the next request with."""

    async def get_credential(self) -> Credential:
        """Return a credential that is valid now."""
        ...


class StaticCredentials:
    """Always the same credential (permanent API keys)."""

    def __init__(self, credential: Credential) -> None:
        self._credential = credential

    async def get_credential(self) -> Credential:
        return self._credential

    def __repr__(self) -> str:
        return f"StaticCredentials({self._credential!r})"


class EnvironmentCredentials:
    """The keys SCF injects for the function's role, read afresh on every request.

    ``TENCENTCLOUD_SECRETID``, ``TENCENTCLOUD_SECRETKEY`` and (for role keys)
    ``TENCENTCLOUD_SESSIONTOKEN`` (Tencent Cloud SCF docs, "Environment variables": the built-in
    variables that carry the run role's keys). Reading them each time picks up keys the runtime
    rotates between warm invocations.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    async def get_credential(self) -> Credential:
        secret_id = self._environ.get("TENCENTCLOUD_SECRETID", "")
        secret_key = self._environ.get("TENCENTCLOUD_SECRETKEY", "")
        if not secret_id or not secret_key:
            raise ConfigurationError(
                "TENCENTCLOUD_SECRETID and TENCENTCLOUD_SECRETKEY must both be set"
            )
        token = self._environ.get("TENCENTCLOUD_SESSIONTOKEN") or None
        return Credential(secret_id, secret_key, token)

    def __repr__(self) -> str:
        return "EnvironmentCredentials()"


class RefreshingCredentials:
    """Caches a temporary credential from ``fetch`` and fetches a new one before it expires.

    A credential is replaced once ``clock.time()`` reaches ``expires_at - refresh_before``;
    one without ``expires_at`` is kept for good. Concurrent callers share a single fetch.
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[Credential]],
        *,
        refresh_before: float = 300.0,
        clock: Clock | None = None,
    ) -> None:
        self._fetch = fetch
        self._refresh_before = refresh_before
        self._clock = clock or SystemClock()
        self._current: Credential | None = None
        self._lock = anyio.Lock()

    def _fresh(self) -> Credential | None:
        current = self._current
        if current is None:
            return None
        if current.expires_at is None:
            return current
        if self._clock.time() >= current.expires_at - self._refresh_before:
            return None
        return current

    async def get_credential(self) -> Credential:
        current = self._fresh()
        if current is not None:
            return current
        async with self._lock:
            current = self._fresh()
            if current is None:
                current = await self._fetch()
                self._current = current
            return current

    def invalidate(self) -> None:
        """Drop the cached credential so the next request fetches a new one."""
        self._current = None

    def __repr__(self) -> str:
        return f"RefreshingCredentials(current={self._current!r})"
