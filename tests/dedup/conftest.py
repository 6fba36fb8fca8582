"""Fixtures the dedup tests share: a fake clock, and a MemoryStore on it."""

from __future__ import annotations

import pytest

from mpsflow.clock import FakeClock
from mpsflow.dedup.stores.memory import MemoryStore


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> MemoryStore:
    return MemoryStore(clock=clock)
