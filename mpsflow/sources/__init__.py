"""Sources feed deliveries into the pipeline and settle them (see the delivery contract)."""

from mpsflow.sources.base import PullSource, Source
from mpsflow.sources.file import FileSource
from mpsflow.sources.inprocess import InProcessSource, Settled
from mpsflow.sources.memory import MemorySource
from mpsflow.sources.runtime import Consumer, DeadLetterPath, SourceRuntime

__all__ = [
    "Consumer",
    "DeadLetterPath",
    "FileSource",
    "InProcessSource",
    "MemorySource",
    "PullSource",
    "Settled",
    "Source",
    "SourceRuntime",
]
