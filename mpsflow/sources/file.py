"""A file source: JSON-lines files, ``.json`` files, or folders of them (backfills, replays)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from mpsflow.clock import Clock
from mpsflow.delivery import Delivery
from mpsflow.sources.inprocess import InProcessSource

__all__ = ["FileSource", "iter_notification_files"]

_LINE_SUFFIXES = (".jsonl", ".ndjson")


def iter_notification_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Expand folders (sorted, ``*.json``/``*.jsonl``/``*.ndjson``) and keep files as given."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(path.iterdir()):
                if child.is_file() and child.suffix in (".json", *_LINE_SUFFIXES):
                    yield child
        elif path.is_file():
            yield path
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")


class FileSource(InProcessSource):
    """Reads notifications lazily from files and folders and ends when all are settled.

    A ``.json`` file holds one notification (pretty-printed is fine); a ``.jsonl``/``.ndjson``
    file holds one per line (blank lines skipped). Each delivery's id is ``path:line``.
    Retries happen in process; exhausted ones go to the app's dead-letter sink as usual.
    Files are read once per source object: running the same object again after a stop
    resumes where it stopped (what the shutdown timeout cut off first, see
    :class:`~mpsflow.sources.inprocess.InProcessSource`); a new ``FileSource`` reads the
    files from the start.
    """

    def __init__(
        self,
        *paths: str | os.PathLike[str],
        name: str = "file",
        max_in_flight: int = 64,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(name=name, max_in_flight=max_in_flight, clock=clock)
        self.files = list(iter_notification_files(paths))

    def _more(self) -> Iterator[Delivery]:
        for path in self.files:
            if path.suffix in _LINE_SUFFIXES:
                with path.open("rb") as lines:
                    for number, line in enumerate(lines, 1):
                        body = line.strip()
                        if body:
                            yield Delivery(body, source=self.name, id=f"{path}:{number}")
            else:
                yield Delivery(path.read_bytes(), source=self.name, id=str(path))
