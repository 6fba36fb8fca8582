"""Idempotency stores: one protocol, three backends (memory, SQLite, Redis).

``RedisStore`` is imported on first use, so this package works without the optional
``redis`` dependency; without it, using ``RedisStore`` raises ``ModuleNotFoundError`` saying
``pip install 'mpsflow[redis]'``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mpsflow.dedup.stores.base import Claim, ClaimState, IdempotencyStore
from mpsflow.dedup.stores.memory import MemoryStore
from mpsflow.dedup.stores.sqlite import SQLiteStore

if TYPE_CHECKING:
    from mpsflow.dedup.stores.redis import RedisStore

__all__ = [
    "Claim",
    "ClaimState",
    "IdempotencyStore",
    "MemoryStore",
    "RedisStore",
    "SQLiteStore",
]


def __getattr__(name: str) -> Any:
    if name == "RedisStore":
        from mpsflow.dedup.stores.redis import RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
