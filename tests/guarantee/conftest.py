"""Fixtures of the guarantee suite: a store of each kind on one FakeClock, and a report line."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from mpsflow.clock import Clock, FakeClock
from mpsflow.dedup.stores import IdempotencyStore, MemoryStore, RedisStore, SQLiteStore

STORES = ("memory", "sqlite", "redis")

StoreFactory = Callable[[str, Clock], IdempotencyStore]


@pytest.fixture
async def make_store(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    """``make_store(kind, clock)``: a fresh, empty store of that kind (closed at teardown).

    Stores made with the same kind share their data (two "processes" on one backend).
    """
    made: list[IdempotencyStore] = []
    memory: dict[int, MemoryStore] = {}

    def make(kind: str, clock: Clock) -> IdempotencyStore:
        store: IdempotencyStore
        if kind == "memory":
            store = memory.setdefault(id(clock), MemoryStore(clock=clock))
        elif kind == "sqlite":
            store = SQLiteStore(tmp_path / "idem.sqlite3", clock=clock)
        elif kind == "redis":
            store = RedisStore(request.getfixturevalue("redis_url"), clock=clock)
        else:
            raise ValueError(kind)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def report(name: str, counts: dict[str, int]) -> None:
    """One line per run, shown with ``-s`` (the closing note's table comes from these)."""
    print(f"\nGUARANTEE {name}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
