"""The idempotency store protocol shared by the in-memory, SQLite and Redis stores, and the
words a store's failure is reported in."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Protocol, cast, runtime_checkable

from mpsflow.errors import StoreUnavailable

__all__ = [
    "DECLINED",
    "Claim",
    "ClaimState",
    "IdempotencyStore",
    "InPlaceStore",
    "defined_together",
    "describe_store",
    "in_place",
    "settles_in_place",
    "store_unavailable",
    "unavailable_message",
]

_PREFIX = "idempotency store "
_MAX_CAUSE = 300


class ClaimState(enum.Enum):
    """Result of trying to claim an effect record (scope + handler; see mpsflow.dedup.effects)."""

    CLAIMED = "claimed"
    """This caller owns the record now (no record, or an expired lease): run the handler."""
    IN_PROGRESS = "in_progress"
    """Another caller holds a live lease: do not run; wait or retry later."""
    COMPLETED = "completed"
    """Already done and not yet expired: skip the handler."""


@dataclass(frozen=True, slots=True)
class Claim:
    """What ``claim`` found or took."""

    state: ClaimState
    token: str = ""
    """Owner token for ``complete``/``release`` (compare-and-set), set when CLAIMED."""
    payload_hash: str = ""
    """Hash stored with the existing record (for conflict detection), when not CLAIMED."""
    expires_at: float = 0.0
    """Wall time the lease (IN_PROGRESS) or the record (COMPLETED) ends."""


@runtime_checkable
class IdempotencyStore(Protocol):
    """Atomic per-key claim / complete / release with leases and TTLs.

    Every method raises :class:`mpsflow.errors.StoreUnavailable` when the backend cannot be
    reached, so the caller retries the delivery later instead of running unclaimed.
    Times are wall-clock seconds (``time.time()`` scale) from the store's clock.

    A store may also define ``describe() -> str``, where it is in words that are safe to log
    (``redis://host:6379/0``, a file path; never a password): errors and log lines name the
    store with it (see :func:`describe_store`).

    A store whose methods never suspend (an in-process store) may set the class attribute
    ``settles_in_place = True``: callers then skip shielding ``complete``/``release`` from
    cancellation, which nothing could interrupt anyway. Such a store may also offer the
    synchronous twins of :class:`InPlaceStore` (``claim_now``, ``complete_now``,
    ``release_now``): :class:`~mpsflow.dedup.Idempotency` then calls them directly, with no
    coroutine per call (see :func:`in_place`). A store whose coroutines may suspend can offer
    twins too, by setting ``answers_in_place = True``: its twins answer when they can and
    decline otherwise (:data:`DECLINED`, None), and the caller then awaits the coroutine.
    """

    async def claim(
        self, key: str, *, lease_seconds: float, payload_hash: str, token: str = ""
    ) -> Claim:
        """Atomically take ``key`` as IN_PROGRESS unless a live record exists.

        ``token`` is the owner token to store (the store makes one when it is empty). A caller
        that chose it can release a claim whose answer it never got (the call failed after the
        store wrote it) as soon as the store answers again.
        """
        ...

    async def complete(self, key: str, token: str, *, ttl_seconds: float) -> bool:
        """Mark the caller's claim COMPLETED for ``ttl_seconds``; False if it lost the claim."""
        ...

    async def release(self, key: str, token: str) -> bool:
        """Delete the caller's IN_PROGRESS claim (after a failure); False if not the owner."""
        ...

    async def ping(self) -> bool:
        """True when the backend answers (used by readiness checks)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


DECLINED: Final = Claim(ClaimState.IN_PROGRESS, token="declined")
"""What ``claim_now`` answers when only ``claim`` can answer now (compare with ``is``)."""


class InPlaceStore(Protocol):
    """The synchronous twins of a store's coroutines (``MemoryStore``, ``SQLiteStore``).

    Each does what its coroutine does and raises what it raises; ``claim_now`` answers
    without allocating a :class:`Claim` for the common case. A dedup run whose twins all
    answer awaits nothing (see :func:`in_place`). The twins of a store that settles in place
    always answer; those of a store that ``answers_in_place`` may decline (:data:`DECLINED`
    from ``claim_now``, None from the others), having done nothing.
    """

    def claim_now(
        self, key: str, *, lease_seconds: float, payload_hash: str, token: str
    ) -> Claim | None:
        """``claim`` with the caller's (non-empty) ``token``: None when the caller now holds
        ``key`` (CLAIMED, until ``lease_seconds`` from now), else the live record's Claim
        (IN_PROGRESS or COMPLETED), or :data:`DECLINED`."""
        ...

    def complete_now(self, key: str, token: str, *, ttl_seconds: float) -> bool | None:
        """``complete``, synchronously; None when declined."""
        ...

    def release_now(self, key: str, token: str) -> bool | None:
        """``release``, synchronously; None when declined."""
        ...


_TWINS = (("claim", "claim_now"), ("complete", "complete_now"), ("release", "release_now"))


def settles_in_place(store: IdempotencyStore) -> bool:
    """True when ``store`` declares that its methods never suspend (see the protocol)."""
    return getattr(store, "settles_in_place", False) is True


def in_place(store: IdempotencyStore) -> InPlaceStore | None:
    """``store`` as an :class:`InPlaceStore` when its twins may stand in for its coroutines.

    That is when it settles or ``answers_in_place`` and each twin is defined by the same
    class as the coroutine it stands for, neither replaced on the instance: a subclass or a
    test double that overrides ``release`` alone (to fail it, say) is still called through
    ``release``. None otherwise: callers then await the coroutines.
    """
    answers = settles_in_place(store) or getattr(store, "answers_in_place", False) is True
    if not answers or not defined_together(store, _TWINS):
        return None
    return cast(InPlaceStore, store)


def defined_together(obj: object, pairs: Iterable[tuple[str, str]]) -> bool:
    """True when each pair of methods of ``obj`` is defined by one class, neither set on the
    instance: then the second of a pair (a synchronous twin) may stand in for the first.

    A subclass or a test double that overrides only one of them (``release``, say, to make it
    fail) is called through the one it overrides.
    """
    patched = getattr(obj, "__dict__", {})
    mro = type(obj).__mro__
    for first, second in pairs:
        if first in patched or second in patched:
            return False
        owner = _owner(mro, second)
        if owner is None or owner is not _owner(mro, first):
            return False
    return True


def _owner(mro: tuple[type, ...], name: str) -> type | None:
    """The class in ``mro`` that defines ``name`` (the one attribute lookup would find)."""
    return next((cls for cls in mro if name in vars(cls)), None)


def describe_store(store: object) -> str:
    """Where ``store`` is, safe to log: its ``describe()``, else its class name."""
    describe = getattr(store, "describe", None)
    if callable(describe):
        try:
            text = describe()
        except Exception:
            text = None
        if isinstance(text, str) and text:
            return text
    return type(store).__name__


def store_unavailable(
    description: str, cause: BaseException | str, *, secrets: tuple[str, ...] = ()
) -> StoreUnavailable:
    """The :class:`StoreUnavailable` a store raises: it names the store and the cause.

    ``idempotency store redis://127.0.0.1:6379/0 unavailable (ConnectionError: ...)``. Any of
    ``secrets`` found in the cause's text is masked; the cause stays the caller's to chain
    (``raise store_unavailable(...) from exc``).
    """
    if isinstance(cause, BaseException):
        detail = str(cause).strip()
        text = f"{type(cause).__name__}: {detail}" if detail else type(cause).__name__
    else:
        text = cause
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = " ".join(text.split())
    if len(text) > _MAX_CAUSE:
        text = text[: _MAX_CAUSE - 3] + "..."
    return StoreUnavailable(f"{_PREFIX}{description} unavailable ({text})")


def unavailable_message(exc: StoreUnavailable, store: object) -> str:
    """What to log about ``exc`` raised by ``store``: which store, and why.

    The message of a store built on :func:`store_unavailable` already says both; any other
    store's message is wrapped in the same words.
    """
    text = str(exc)
    if text.startswith(_PREFIX):
        return text
    cause = exc.__cause__
    reason = text or (type(cause).__name__ if cause is not None else "no reason given")
    return str(store_unavailable(describe_store(store), reason))
