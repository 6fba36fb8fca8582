"""Sources feed deliveries into the pipeline and settle them (see the delivery contract)."""

from mpsflow.sources.base import Consumer, PullSource, Source
from mpsflow.sources.file import FileSource
from mpsflow.sources.inprocess import InProcessSource, Settled
from mpsflow.sources.memory import MemorySource

__all__ = [
    "Consumer",
    "FileSource",
    "InProcessSource",
    "MemorySource",
    "PullSource",
    "Settled",
    "Source",
]
