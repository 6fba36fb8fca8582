"""Handler typing: ``@app.on(key)`` only accepts handlers of that key's result type, and
``status=`` only the statuses that key's results can have.

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
    ExtractBlindWatermarkTask,
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


@app.on("Transcode", status={"SUCCESS", "FAIL"}, name="finished-transcode")
async def finished(result: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
    pass


@app.on("ExtractBlindWatermark", status="WAITING")
async def watermark(task: ExtractBlindWatermarkTask, ctx: Context) -> None:
    pass


@app.on("Transcode", name="any-handler")
async def broad(result: object, ctx: Context) -> None:
    """A handler taking a supertype is fine (parameters are contravariant)."""


assert_type(transcode, Handler[MediaProcessTaskTranscodeResult])
assert_type(finished, Handler[MediaProcessTaskTranscodeResult])
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


def run_mypy(tmp_path: Path, source: str) -> tuple[str, set[int], list[str]]:
    """mypy --strict (the project's configuration) over ``source``: output, error lines, lines."""
    snippet = tmp_path / "snippet.py"
    snippet.write_text(textwrap.dedent(source))
    root = Path(__file__).resolve().parents[1]
    out, err, _status = mypy_api.run(
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
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert all(line.startswith(str(snippet)) for line in errors), out + err
    return out + err, {int(line.split(":")[1]) for line in errors}, snippet.read_text().splitlines()


@pytest.mark.slow
def test_mismatched_handlers_are_type_errors(tmp_path: Path) -> None:
    out, lines, source = run_mypy(tmp_path, BAD)

    def line_of(text: str) -> int:
        return next(i for i, line in enumerate(source, 1) if text in line)

    assert lines, out
    assert line_of("async def wrong_result") - 1 in lines or line_of("wrong_result") in lines
    assert line_of("async def wrong_event") - 1 in lines or line_of("wrong_event") in lines
    assert line_of("def sync_handler") - 1 in lines or line_of("sync_handler") in lines
    assert line_of("async def not_async") - 1 not in lines, out
    assert "MediaProcessTaskSnapshotByTimeOffsetResult" in out


STATUSES = """
from mpsflow import App, Context
from mpsflow.events import (
    ExtractBlindWatermarkTask,
    LiveStreamProcessErrorInfo,
    MediaProcessTaskTranscodeResult as Transcode,
    WorkflowTask,
)

app = App()
key: str = "Transcode"

def not_a_transcode(result: WorkflowTask) -> bool:
    return True

@app.on("Transcode", status="SUCESS")  # error: misspelt
async def misspelt(result: Transcode, ctx: Context) -> None: ...

@app.on("Transcode", status="FINISH")  # error: a task status, not a subtask's
async def task_status(result: Transcode, ctx: Context) -> None: ...

@app.on("Transcode", status={"SUCCESS", "FIAL"})  # error: one of them misspelt
async def one_misspelt(result: Transcode, ctx: Context) -> None: ...

@app.on("WorkflowTask", status="SUCCESS")  # error: a subtask status, not a task's
async def subtask_status(task: WorkflowTask, ctx: Context) -> None: ...

@app.on("ProcessEof", status="SUCCESS")  # error: live results have no Status
async def live(info: LiveStreamProcessErrorInfo, ctx: Context) -> None: ...

@app.on("Transcode", when=not_a_transcode)  # error: when takes another type
async def wrong_when(result: Transcode, ctx: Context) -> None: ...

@app.on("Transcode", status="SUCCESS")
async def success(result: Transcode, ctx: Context) -> None: ...

@app.on("Transcode", status={"SUCCESS", "FAIL"})
async def finished(result: Transcode, ctx: Context) -> None: ...

@app.on("Transcode", status=["PROCESSING"], when=lambda r: r.progress is not None)
async def progress(result: Transcode, ctx: Context) -> None: ...

@app.on("WorkflowTask", status="FINISH", failed=True)
async def alert(task: WorkflowTask, ctx: Context) -> None: ...

@app.on("ExtractBlindWatermark", status=("WAITING", "PROCESSING"))
async def watermark(task: ExtractBlindWatermarkTask, ctx: Context) -> None: ...

@app.on("ProcessEof", failed=True)
async def eof(info: LiveStreamProcessErrorInfo, ctx: Context) -> None: ...

@app.on(key, status="ANYTHING")  # a str key: checked at registration only
async def dynamic(result: object, ctx: Context) -> None: ...
"""


@pytest.mark.slow
def test_statuses_a_key_never_has_are_type_errors(tmp_path: Path) -> None:
    """Exactly the lines marked ``# error`` fail, each naming ``StatusOrWhenDoesNotFitKey``."""
    out, lines, source = run_mypy(tmp_path, STATUSES)
    marked = {i for i, line in enumerate(source, 1) if "# error" in line}
    assert lines == marked, out
    assert out.count('expected "StatusOrWhenDoesNotFitKey"') == len(marked), out


def test_on_takes_exactly_the_option_table() -> None:
    """``on``'s runtime keywords are ``ON_OPTIONS``, in order, with their defaults."""
    params = list(inspect.signature(Router.on).parameters.values())[2:]
    assert [(p.name, p.kind, p.default) for p in params] == [
        (o.name, inspect.Parameter.KEYWORD_ONLY, o.default) for o in ON_OPTIONS
    ]
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        Router().on("Transcode", colour="red")  # type: ignore[call-overload]
