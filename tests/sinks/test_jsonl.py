"""JsonlSink and read_jsonl: record kinds, fsync policies, rotation, torn lines, errors."""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path

import msgspec
import pytest

from mpsflow.errors import DecodeError, SinkError
from mpsflow.sinks.jsonl import JsonlSink, read_jsonl
from tests.sinks.peers import send_once


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


@pytest.mark.parametrize(
    ("before", "after", "kept"),
    [
        (b'{"n": 1}\n{"n": 2, "torn', b'{"n": 1}\n{"n":3}\n', [1, 3]),
        (b'{"n": 1}\n{"n": 2}', b'{"n": 1}\n{"n": 2}\n{"n":3}\n', [1, 2, 3]),
    ],
    ids=["cuts-a-torn-tail", "finishes-a-complete-last-line"],
)
async def test_start_repairs_the_last_line_before_appending(
    tmp_path: Path, before: bytes, after: bytes, kept: list[int]
) -> None:
    path = tmp_path / "crash.jsonl"
    path.write_bytes(before)
    sink = JsonlSink(path)
    await sink.start()
    await sink.send([{"n": 3}])
    await sink.close()
    assert path.read_bytes() == after
    assert [r["n"] for r in read_jsonl(path)] == kept


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


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="fsync"):
        JsonlSink("x.jsonl", fsync="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rotate_bytes"):
        JsonlSink("x.jsonl", rotate_bytes=0)
    with pytest.raises(ValueError, match="keep"):
        JsonlSink("x.jsonl", keep=-1)
    assert "x.jsonl" in repr(JsonlSink("x.jsonl"))


# -- idempotency keys ------------------------------------------------------------------------

EFFECT = "0123456789abcdef0123456789abcdef"


async def test_a_repeated_key_is_skipped_and_lines_stay_the_records(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    sink = JsonlSink(path)
    await sink.start()
    try:
        await sink.send_keyed([{"n": 0}, {"n": 1}, {"n": 0}], [f"{EFFECT}-0", None, f"{EFFECT}-0"])
        await sink.send_keyed([{"n": 0}, {"n": 2}], [f"{EFFECT}-0", f"{EFFECT}-2"])
        await sink.send([{"n": 1}])  # unkeyed records are always written
    finally:
        await sink.close()
    # Each line is exactly the record: no key field is added to the documented format.
    assert path.read_bytes() == b'{"n":0}\n{"n":1}\n{"n":2}\n{"n":1}\n'
    assert list(read_jsonl(path)) == [{"n": 0}, {"n": 1}, {"n": 2}, {"n": 1}]
    assert sink.keys_path == tmp_path / "out.jsonl.keys"
    assert sink.keys_path.read_bytes() == f'"{EFFECT}-0"\n"{EFFECT}-2"\n'.encode()


async def test_the_window_is_bounded_and_the_sidecar_compacted(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    sink = JsonlSink(path, dedup_window=3)
    await sink.start()
    try:
        for n in range(10):
            await sink.send_keyed([{"n": n}], [f"k{n}"])
        await sink.send_keyed([{"n": 9}, {"n": 7}, {"n": 2}], ["k9", "k7", "k2"])
    finally:
        await sink.close()
    # k9 and k7 are in the window of 3; k2 left it long ago and is written again.
    assert [r["n"] for r in read_jsonl(path)] == [*range(10), 2]
    # The sidecar was compacted whenever it passed twice the window.
    assert sink.keys_path.read_text().splitlines() == ['"k8"', '"k9"', '"k2"']
    # A restart loads the sidecar's last 3 keys: k8 is still a repeat, k7 no longer.
    again = JsonlSink(path, dedup_window=3)
    await send_once(again, [{"n": 8}, {"n": 7}], ["k8", "k7"])
    assert [r["n"] for r in read_jsonl(path)] == [*range(10), 2, 7]
    assert sink.keys_path.read_text().splitlines() == ['"k8"', '"k9"', '"k2"', '"k7"']


async def test_a_torn_sidecar_tail_is_repaired(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"n":0}\n')
    (tmp_path / "out.jsonl.keys").write_bytes(b'"k0"\n"k1')  # the crash cut the last key
    sink = JsonlSink(path)
    await send_once(sink, [{"n": 0}, {"n": 1}], ["k0", "k1"])
    assert list(read_jsonl(path)) == [{"n": 0}, {"n": 1}]
    assert sink.keys_path.read_text().splitlines() == ['"k0"', '"k1"']


async def test_dedup_can_be_turned_off_and_unkeyed_sinks_write_no_sidecar(
    tmp_path: Path,
) -> None:
    off = JsonlSink(tmp_path / "off.jsonl", dedup_window=0)
    plain = JsonlSink(tmp_path / "plain.jsonl")
    for sink in (off, plain):
        await send_once(sink, [{"n": 0}, {"n": 0}], ["k", "k"] if sink is off else [None, None])
        assert len(list(read_jsonl(sink.path))) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["off.jsonl", "plain.jsonl"]
    with pytest.raises(ValueError, match="dedup_window"):
        JsonlSink(tmp_path / "x.jsonl", dedup_window=-1)


async def test_a_failed_write_remembers_no_key(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    sink = JsonlSink(path)
    await sink.start()
    try:
        with pytest.raises(SinkError):
            await sink.send_keyed([{"ok": 1}, object()], ["k0", "k1"])
        await sink.send_keyed([{"ok": 1}], ["k0"])
    finally:
        await sink.close()
    assert list(read_jsonl(path)) == [{"ok": 1}]


async def test_a_long_sidecar_is_compacted_when_loaded(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    keys = tmp_path / "out.jsonl.keys"
    keys.write_text("".join(f'"k{n}"\n' for n in range(50)))  # written with a larger window
    sink = JsonlSink(path, dedup_window=5)
    await send_once(sink, [{"n": 49}, {"n": 44}], ["k49", "k44"])
    assert list(read_jsonl(path)) == [{"n": 44}]
    assert keys.read_text().splitlines() == [f'"k{n}"' for n in (45, 46, 47, 48, 49, 44)]
