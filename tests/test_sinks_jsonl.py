"""JsonlSink and read_jsonl: record kinds, fsync policies, rotation, torn lines, errors."""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path

import msgspec
import pytest

from mpsflow.errors import DecodeError, SinkError
from mpsflow.sinks.channel import SinkChannel
from mpsflow.sinks.jsonl import JsonlSink, read_jsonl


class _Struct(msgspec.Struct):
    task: str
    ok: bool


@dataclasses.dataclass
class _Data:
    task: str
    size: int


def _sizes(directory: Path) -> dict[str, int]:
    """File name -> size for every file in ``directory``."""
    return {file.name: file.stat().st_size for file in directory.iterdir()}


PRETTY = b'{\n  "EventType": "WorkflowTask",\n  "Note": "line\\nbreak"\n}\n'


async def test_every_record_kind_becomes_one_line(tmp_path: Path) -> None:
    path = tmp_path / "out" / "records.jsonl"
    sink = JsonlSink(path)
    await sink.start()
    await sink.send([{"a": 1}, _Struct("t1", True), _Data("t2", 3), PRETTY, "text"])
    await sink.close()
    lines = path.read_bytes().splitlines()
    assert len(lines) == 5
    assert list(read_jsonl(path)) == [
        {"a": 1},
        {"task": "t1", "ok": True},
        {"task": "t2", "size": 3},
        {"EventType": "WorkflowTask", "Note": "line\nbreak"},
        "text",
    ]


async def test_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "dl.jsonl"
    for n in range(2):
        sink = JsonlSink(path)
        await sink.start()
        await sink.send([{"n": n}])
        await sink.close()
    assert list(read_jsonl(path)) == [{"n": 0}, {"n": 1}]


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the thread of every real fsync the sink makes."""
    calls: list[str] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(threading.current_thread().name)
        real(fd)

    monkeypatch.setattr("mpsflow.sinks.jsonl.os.fsync", counting)
    return calls


@pytest.mark.parametrize(("policy", "expected"), [("always", 4), ("batch", 2), ("never", 0)])
async def test_fsync_policies(
    tmp_path: Path, fsyncs: list[str], policy: str, expected: int
) -> None:
    sink = JsonlSink(tmp_path / "f.jsonl", fsync=policy)  # type: ignore[arg-type]
    await sink.start()
    await sink.send([{"n": 1}, {"n": 2}, {"n": 3}])
    await sink.send([{"n": 4}])
    assert len(fsyncs) == expected
    await sink.close()
    assert len(list(read_jsonl(tmp_path / "f.jsonl"))) == 4


async def test_file_work_runs_off_the_event_loop_thread(tmp_path: Path, fsyncs: list[str]) -> None:
    sink = JsonlSink(tmp_path / "f.jsonl", fsync="always")
    await sink.start()
    await sink.send([{"n": 1}])
    await sink.close()
    assert fsyncs
    assert threading.current_thread().name not in fsyncs


async def test_rotation_by_size_keeps_the_newest_files(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    record_line = len(msgspec.json.encode({"n": 10})) + 1
    sink = JsonlSink(path, rotate_bytes=3 * record_line, keep=2)
    await sink.start()
    await sink.send([{"n": n} for n in range(10, 20)])
    await sink.send([{"n": 20}])
    await sink.close()
    assert _sizes(tmp_path).keys() == {"r.jsonl", "r.jsonl.1", "r.jsonl.2"}
    assert max(_sizes(tmp_path).values()) <= 3 * record_line
    assert [r["n"] for r in read_jsonl(path)] == [19, 20]
    assert [r["n"] for r in read_jsonl(path, rotated=True)] == list(range(13, 21))


async def test_a_record_larger_than_rotate_bytes_gets_its_own_file(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    sink = JsonlSink(path, rotate_bytes=16, keep=3)
    await sink.start()
    await sink.send([{"n": 1}, {"blob": "x" * 40}, {"n": 2}])
    await sink.close()
    assert list(read_jsonl(path, rotated=True)) == [{"n": 1}, {"blob": "x" * 40}, {"n": 2}]
    assert list(read_jsonl(path)) == [{"n": 2}]


async def test_keep_zero_discards_old_files(tmp_path: Path) -> None:
    path = tmp_path / "k.jsonl"
    sink = JsonlSink(path, rotate_bytes=10, keep=0)
    await sink.start()
    await sink.send([{"n": 1}, {"n": 2}])
    await sink.close()
    assert list(_sizes(tmp_path)) == ["k.jsonl"]
    assert list(read_jsonl(path)) == [{"n": 2}]


def test_read_jsonl_skips_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"n": 1}\n\n{"n": 2}\n{"n": 3, "cut')
    assert list(read_jsonl(path)) == [{"n": 1}, {"n": 2}]


def test_read_jsonl_refuses_a_corrupt_line_in_the_middle(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"n": 1}\n{"n": \n{"n": 3}\n')
    reader = read_jsonl(path)
    assert next(reader) == {"n": 1}
    with pytest.raises(DecodeError, match=r"c\.jsonl:2") as caught:
        next(reader)
    assert caught.value.path == "$[1]"


async def test_start_cuts_a_torn_tail_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "crash.jsonl"
    path.write_bytes(b'{"n": 1}\n{"n": 2, "torn')
    sink = JsonlSink(path)
    await sink.start()
    await sink.send([{"n": 3}])
    await sink.close()
    assert path.read_bytes() == b'{"n": 1}\n{"n":3}\n'


async def test_start_finishes_a_complete_last_line(tmp_path: Path) -> None:
    path = tmp_path / "nonl.jsonl"
    path.write_bytes(b'{"n": 1}\n{"n": 2}')
    sink = JsonlSink(path)
    await sink.start()
    await sink.send([{"n": 3}])
    await sink.close()
    assert [r["n"] for r in read_jsonl(path)] == [1, 2, 3]


async def test_unencodable_record_fails_permanently_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    sink = JsonlSink(path)
    await sink.start()
    with pytest.raises(SinkError, match="record 1") as caught:
        await sink.send([{"ok": 1}, object()])
    with pytest.raises(SinkError, match="record 0"):
        await sink.send([b"{not json"])
    await sink.close()
    assert not caught.value.transient
    assert path.read_bytes() == b""


async def test_unwritable_path_is_a_permanent_error(tmp_path: Path) -> None:
    directory = tmp_path / "a-directory"
    directory.mkdir()
    sink = JsonlSink(directory)
    with pytest.raises(SinkError) as caught:
        await sink.start()
    assert not caught.value.transient


async def test_as_a_dead_letter_sink_behind_a_channel(tmp_path: Path) -> None:
    path = tmp_path / "deadletters.jsonl"
    async with SinkChannel(JsonlSink(path), batch_size=4, max_delay=0) as channel:
        receipts = [await channel.submit({"id": i}) for i in range(10)]
        for receipt in receipts:
            await receipt.wait()
    assert [r["id"] for r in read_jsonl(path)] == list(range(10))


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="fsync"):
        JsonlSink("x.jsonl", fsync="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rotate_bytes"):
        JsonlSink("x.jsonl", rotate_bytes=0)
    with pytest.raises(ValueError, match="keep"):
        JsonlSink("x.jsonl", keep=-1)
    assert "x.jsonl" in repr(JsonlSink("x.jsonl"))
