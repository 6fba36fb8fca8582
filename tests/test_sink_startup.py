"""A sink that cannot start stops the app as the dead-letter sink does: a ``StartupError`` whose
one line names the sink and what to do, and exit 3 with that line from ``mpsflow run``."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from mpsflow import App
from mpsflow.errors import ConfigurationError, StartupError
from mpsflow.sinks.jsonl import JsonlSink
from mpsflow.sinks.memory import MemorySink
from tests.cli.test_run import run_mpsflow

EXIT_STARTUP = 3


async def test_a_sink_whose_path_is_a_directory_stops_the_start(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.jsonl"
    path.mkdir()
    app = App(dead_letters=tmp_path / "dead.jsonl")
    app.sink("catalogue", JsonlSink(path))
    with pytest.raises(StartupError) as caught:
        async with app:
            pytest.fail("started")
    assert str(caught.value) == (
        f"sink 'catalogue' cannot write {path}: it is a directory, not a file: move it away,"
        " or give its JsonlSink another path"
    )
    assert not app.started


async def test_a_sink_under_a_regular_file_says_which_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    app = App(dead_letters=tmp_path / "dead.jsonl")
    app.sink("catalogue", JsonlSink(blocker / "catalogue.jsonl"))
    with pytest.raises(StartupError) as caught:
        async with app:
            pytest.fail("started")
    message = str(caught.value)
    assert message.startswith(f"sink 'catalogue' cannot write {blocker}/catalogue.jsonl: ")
    assert message.endswith(
        f": make {blocker} a writable directory (the app creates missing ones), or give its"
        " JsonlSink a path that is"
    )


async def test_a_dead_letter_path_that_is_a_directory_says_so(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    path.mkdir()
    app = App(dead_letters=path)
    app.sink("memory", MemorySink())
    with pytest.raises(StartupError) as caught:
        async with app:
            pytest.fail("started")
    assert str(caught.value) == (
        f"the dead-letter sink cannot write {path}: it is a directory, not a file: move it"
        " away, or give App(dead_letters=…) another path"
    )


@pytest.mark.parametrize("path", [".", "/", "dead-letters/"])
def test_a_dead_letter_path_that_names_a_folder_is_refused_by_the_app(path: str) -> None:
    """Refused where the app is made (``mpsflow run`` says so in one line, exit 2), naming the
    option, not with pathlib's ValueError about a name derived from it."""
    with pytest.raises(ConfigurationError) as caught:
        App(dead_letters=path)
    assert str(caught.value).startswith(f"App(dead_letters=…): {path!r} ")


QUICKSTART_APP = """
from mpsflow import App
from mpsflow.sinks.jsonl import JsonlSink

app = App()
app.sink("catalogue", JsonlSink("catalogue.jsonl"))
"""


@pytest.mark.parametrize(
    ("directory", "what", "give"),
    [
        ("catalogue.jsonl", "sink 'catalogue'", "its JsonlSink"),
        ("mpsflow-dead-letters.jsonl", "the dead-letter sink", "App(dead_letters=…)"),
    ],
)
@pytest.mark.parametrize("workers", ["1", "2"])
async def test_mpsflow_run_exits_3_with_one_line(
    tmp_path: Path, directory: str, what: str, give: str, workers: str
) -> None:
    (tmp_path / "sinkapp.py").write_text(QUICKSTART_APP)
    (tmp_path / directory).mkdir()
    with anyio.fail_after(60):  # before the fix, --workers 2 restarted its workers forever
        code, out, err = await run_mpsflow(
            tmp_path, "run", "sinkapp:app", "--http", "127.0.0.1:0", "--workers", workers
        )
    assert code == EXIT_STARTUP, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert errors == [
        f"mpsflow run: error: {what} cannot write {directory}: it is a directory, not a file:"
        f" move it away, or give {give} another path"
    ]
    assert out == ""
