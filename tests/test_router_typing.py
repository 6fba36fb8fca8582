"""Handler typing: ``@app.on(key)`` only accepts handlers of that key's result type.

The positive half is checked by ``mypy --strict`` over this file in CI (``assert_type``); the
negative half runs mypy on snippets that must fail, and checks the errors it reports.
"""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path

import pytest
from mypy import api as mypy_api
from typing_extensions import assert_type

from mpsflow import App, Context, Router
from mpsflow._typed_on import Handler
from mpsflow.events import (
    AiContentReviewResult,
    AiReviewTaskPornResult,
    LiveStreamAiReviewResultInfo,
    LiveStreamProcessErrorInfo,
    MediaProcessTaskTranscodeResult,
    WorkflowTask,
)
from mpsflow.handler_options import ON_OPTIONS

app = App()


@app.on("Transcode", status="SUCCESS")
async def transcode(result: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
    pass


@app.on("WorkflowTask", failed=True)
async def workflow(task: WorkflowTask, ctx: Context) -> None:
    pass


@app.on("AiContentReview", when=lambda r: r.type == "Porn")
async def review(result: AiContentReviewResult, ctx: Context) -> None:
    pass


@app.on("AiContentReview.Porn")
async def porn(result: AiReviewTaskPornResult, ctx: Context) -> None:
    pass


@app.on("ProcessEof")
async def eof(info: LiveStreamProcessErrorInfo, ctx: Context) -> None:
    pass


@app.on("AiReviewResult")
async def live_review(info: LiveStreamAiReviewResultInfo, ctx: Context) -> None:
    pass


@app.on("Transcode", name="any-handler")
async def broad(result: object, ctx: Context) -> None:
    """A handler taking a supertype is fine (parameters are contravariant)."""


assert_type(transcode, Handler[MediaProcessTaskTranscodeResult])
assert_type(workflow, Handler[WorkflowTask])
assert_type(eof, Handler[LiveStreamProcessErrorInfo])


def test_registered_handlers_match_their_keys() -> None:
    keys = {spec.name.rsplit(".", 1)[-1]: spec.key for spec in app.handlers}
    assert keys["transcode"] == "Transcode"
    assert keys["eof"] == "ProcessEof"
    assert keys["any-handler"] == "Transcode"


BAD = """
from mpsflow import App, Context
from mpsflow.events import MediaProcessTaskSnapshotByTimeOffsetResult, WorkflowTask

app = App()

@app.on("Transcode")
async def wrong_result(result: MediaProcessTaskSnapshotByTimeOffsetResult, ctx: Context) -> None:
    pass

@app.on("EditMediaTask")
async def wrong_event(task: WorkflowTask, ctx: Context) -> None:
    pass

@app.on("Transcode")
async def not_async(result: object, ctx: Context) -> None: ...

@app.on("Transcode")
def sync_handler(result: object, ctx: Context) -> None:
    pass
"""


@pytest.mark.slow
def test_mismatched_handlers_are_type_errors(tmp_path: Path) -> None:
    snippet = tmp_path / "bad_handlers.py"
    snippet.write_text(textwrap.dedent(BAD))
    root = Path(__file__).resolve().parents[1]
    out, err, status = mypy_api.run(
        [
            "--strict",
            "--no-incremental",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--config-file",
            str(root / "pyproject.toml"),
            str(snippet),
        ]
    )
    assert status == 1, out + err
    errors = [line for line in out.splitlines() if ": error:" in line]
    lines = {int(line.split(":")[1]) for line in errors}
    source = snippet.read_text().splitlines()

    def line_of(text: str) -> int:
        return next(i for i, line in enumerate(source, 1) if text in line)

    assert line_of("async def wrong_result") - 1 in lines or line_of("wrong_result") in lines
    assert line_of("async def wrong_event") - 1 in lines or line_of("wrong_event") in lines
    assert line_of("def sync_handler") - 1 in lines or line_of("sync_handler") in lines
    assert line_of("async def not_async") - 1 not in lines, out
    assert "MediaProcessTaskSnapshotByTimeOffsetResult" in out


def test_on_takes_exactly_the_option_table() -> None:
    """``on``'s runtime keywords are ``ON_OPTIONS``, in order, with their defaults."""
    params = list(inspect.signature(Router.on).parameters.values())[2:]
    assert [(p.name, p.kind, p.default) for p in params] == [
        (o.name, inspect.Parameter.KEYWORD_ONLY, o.default) for o in ON_OPTIONS
    ]
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        Router().on("Transcode", colour="red")  # type: ignore[call-overload]
