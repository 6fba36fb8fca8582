"""One harness per sink for the sink contract: the sink on its real peer, read back, broken.

A harness builds its sink against a real peer on loopback (a file, an aiohttp server, moto
behind a front, the local CMQ server), reads back what the peer holds, and makes the peer
fail (``fail(*faults)``: what the next requests meet). It declares what its sink documents
(order, which keys reach the peer, which repeats it drops) and, in ``impossible``, the
contract cases that cannot apply to it and why; those cases are skipped for it, and only those.

Every sink a harness builds is watched: ``sink_batches`` holds the size of every batch the
channel handed it, failed calls included.
"""

from __future__ import annotations

import abc
import contextlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Generic, Literal, TypeVar, cast

import msgspec
import pytest

from mpsflow.clock import FakeClock
from mpsflow.devservers.cmq import CmqServer
from mpsflow.retry import RetryPolicy
from mpsflow.sinks.base import Sink, keyed_sender
from mpsflow.sinks.cmq import CmqSink
from mpsflow.sinks.cos import S3Sink
from mpsflow.sinks.jsonl import JsonlSink, read_jsonl
from mpsflow.sinks.memory import MemorySink
from mpsflow.sinks.scf import ScfInvokeSink
from mpsflow.sinks.webhook import WebhookSink
from mpsflow.sinks.wecom import WeComRobotSink, wecom_markdown
from mpsflow.tencentcloud.cmq import Credential
from mpsflow.tencentcloud.cmq.client import MAX_BATCH
from tests.plugins.cmq_server import CMQ_SECRET_ID, CMQ_SECRET_KEY
from tests.plugins.moto_server import S3Bucket
from tests.sinks.peers import (
    CountingCmqClient,
    Fault,
    LoopbackPeer,
    RobotPeer,
    S3Front,
    ScfApi,
    WebhookPeer,
)

__all__ = ["HARNESSES", "Case", "SinkHarness", "Unencodable", "contract", "record"]

Case = Literal["transient", "permanent", "unencodable", "half_way", "peer_batches"]
"""Contract cases some sinks cannot be put through (see ``SinkHarness.impossible``)."""

_P = TypeVar("_P", bound=LoopbackPeer)

_ONE_REQUEST_PER_RECORD = "one request per record: the peer never sees a batch"
_ONE_CALL_PER_BATCH = "a batch is one call that succeeds or fails whole: it cannot fail half way"
_DISK_FULL = Path("/dev/full")


def record(n: int) -> dict[str, Any]:
    """The contract's ``n``-th record: a small notification every sink can carry."""
    task = f"1250000000-WorkflowTask-contract{n}t0"
    return {
        "EventType": "WorkflowTask",
        "WorkflowTaskEvent": {"TaskId": task, "Status": "FINISH"},
        "n": n,
    }


class Unencodable:
    """A record with no JSON form."""

    def __repr__(self) -> str:
        return "<Unencodable>"


class SinkHarness(abc.ABC):
    """A sink on its real peer. Use as ``async with Harness(request) as harness``."""

    name: ClassVar[str]
    ordered: ClassVar[bool] = True
    """The peer holds records in the order they were submitted."""
    keyed: ClassVar[bool] = True
    """The sink is a ``KeyedSink`` (the channel hands it each record's key)."""
    keys_reach_peer: ClassVar[bool] = True
    """The keys travel to the peer (a header, an object name, a field, a sidecar)."""
    dedup_in_process: ClassVar[bool] = False
    """A record resent with a key this sink delivered is not delivered again."""
    dedup_across_processes: ClassVar[bool] = False
    """Nor when a new sink on the same peer (a re-run after a crash) resends it."""
    transient_faults: ClassVar[tuple[Fault, ...]] = (Fault.TRANSIENT,)
    """The transient failures the peer can be made to have."""
    client_retries: ClassVar[frozenset[Fault]] = frozenset()
    """Failures the sink's own HTTP client may retry below the sink (whether it does depends
    on the client's version), so the channel may never see them."""
    records_per_request: ClassVar[int] = 1
    """How many records of a batch go to the peer in one request (at most)."""
    impossible: ClassVar[Mapping[Case, str]] = {}
    """Contract cases the sink cannot be put through, and why."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.request = request
        self.script: list[Fault | None] = []
        self.sink_batches: list[int] = []
        self.sinks: list[Sink] = []
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> SinkHarness:
        try:
            await self.open(self._stack)
            self.sink = self.build()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def open(self, stack: contextlib.AsyncExitStack) -> None:  # noqa: B027 - optional
        """Start the peer; what it needs stopped goes on ``stack``."""

    def build(self) -> Sink:
        """A new sink on the same peer (as a new process would make), watched."""
        sink = self.make()
        method = "send_keyed" if keyed_sender(sink) is not None else "send"
        inner = getattr(sink, method)

        async def watched(batch: Sequence[object], *keys: Any) -> None:
            self.sink_batches.append(len(batch))
            self.before_call(sink)
            await inner(batch, *keys)

        setattr(sink, method, watched)
        self.sinks.append(sink)
        return sink

    @property
    def sink_calls(self) -> int:
        """How many times the channel called a sink of this harness."""
        return len(self.sink_batches)

    def fail(self, *faults: Fault | None) -> None:
        """Make the peer's next requests meet ``faults`` in order (``None``: no fault)."""
        possible = {*self.transient_faults}
        if "permanent" not in self.impossible:
            possible.add(Fault.PERMANENT)
        unknown = {fault for fault in faults if fault is not None} - possible
        if unknown:
            raise ValueError(f"{self.name} cannot be made to fail with {unknown}")
        self.script.extend(faults)

    def next_fault(self) -> Fault | None:
        return self.script.pop(0) if self.script else None

    def before_call(self, sink: Sink) -> None:  # noqa: B027 - optional hook
        """Runs before each call of a sink (for harnesses that fail per call)."""

    def rendered(self, value: dict[str, Any]) -> object:
        """What the peer holds for the record ``value``."""
        return value

    def number(self, held: Any) -> int:
        """The ``n`` of the record the peer holds as ``held``."""
        return int(held["n"])

    async def ids(self) -> list[int]:
        """The ``n`` of each record the peer holds, checking each holds the whole record."""
        numbers: list[int] = []
        for held in await self.delivered():
            n = self.number(held)
            if held != self.rendered(record(n)):
                raise AssertionError(f"{self.name} holds {held!r} for record {n}")
            numbers.append(n)
        return numbers

    @abc.abstractmethod
    def make(self) -> Sink:
        """A new sink on the peer."""

    @abc.abstractmethod
    async def delivered(self) -> list[Any]:
        """What the peer holds, one item a record (in the peer's order)."""

    @abc.abstractmethod
    async def requests(self) -> int:
        """How many delivery requests reached the peer, failed ones included."""

    @abc.abstractmethod
    async def peer_keys(self) -> list[str]:
        """The idempotency keys the peer was given (records without one give none)."""

    async def peer_batches(self) -> list[int]:
        """How many records each request to the peer carried (sinks that batch)."""
        raise NotImplementedError(self.impossible.get("peer_batches", self.name))


class MemoryHarness(SinkHarness):
    """``MemorySink`` is its own peer; its ``fail_next`` switch is the failure."""

    name = "memory"
    impossible: ClassVar[Mapping[Case, str]] = {
        "unencodable": "MemorySink keeps any Python object: no record is unencodable",
        "half_way": _ONE_CALL_PER_BATCH,
    }

    def make(self) -> Sink:
        return MemorySink()

    def _memories(self) -> list[MemorySink]:
        return [cast(MemorySink, sink) for sink in self.sinks]

    def before_call(self, sink: Sink) -> None:
        fault = self.next_fault()
        if fault is not None:
            cast(MemorySink, sink).fail_next(1, transient=fault is Fault.TRANSIENT)

    async def delivered(self) -> list[Any]:
        return [held for memory in self._memories() for held in memory.records]

    async def requests(self) -> int:
        return sum(memory.attempts for memory in self._memories())

    async def peer_keys(self) -> list[str]:
        return [key for memory in self._memories() for key in memory.keys if key is not None]

    async def peer_batches(self) -> list[int]:
        return [len(batch) for memory in self._memories() for batch in memory.batches]


class JsonlHarness(SinkHarness):
    """A JSONL file in a temporary directory; a full disk (``/dev/full``) is the failure.

    The disk is full from the start: the file's path is a link to ``/dev/full`` until the
    scripted failures are used up, then the link goes and the sink reopens a real file.
    """

    name = "jsonl"
    dedup_in_process = True
    dedup_across_processes = True  # the sidecar of keys is read back on start
    impossible: ClassVar[Mapping[Case, str]] = {
        "permanent": "an open local file cannot be made to refuse writes for good",
        "half_way": _ONE_CALL_PER_BATCH,
        "peer_batches": "a file keeps lines, not the batches they came in",
        **({} if _DISK_FULL.exists() else {"transient": "no /dev/full to fill a disk with"}),
    }

    async def open(self, stack: contextlib.AsyncExitStack) -> None:
        tmp_path: Path = self.request.getfixturevalue("tmp_path")
        self.path = tmp_path / "out.jsonl"

    def make(self) -> Sink:
        return JsonlSink(self.path)

    def fail(self, *faults: Fault | None) -> None:
        super().fail(*faults)
        if self.script[:1] == [Fault.TRANSIENT] and not self.path.exists():
            self.path.symlink_to(_DISK_FULL)

    def before_call(self, sink: Sink) -> None:
        fault = self.next_fault()
        if fault is None and self.path.is_symlink():
            self.path.unlink()  # space is free again
        elif fault is not None and not self.path.is_symlink():
            raise RuntimeError("the JSONL harness can only start with a full disk")

    async def delivered(self) -> list[Any]:
        if self.path.is_symlink() or not self.path.exists():
            return []
        return list(read_jsonl(self.path))

    async def requests(self) -> int:
        return self.sink_calls  # each call is one write of the file

    async def peer_keys(self) -> list[str]:
        sidecar = self.path.with_name(self.path.name + ".keys")
        if not sidecar.exists():
            return []
        return [msgspec.json.decode(line, type=str) for line in sidecar.read_bytes().splitlines()]


class _HttpHarness(SinkHarness, Generic[_P]):
    """A sink whose peer is a ``LoopbackPeer``; the peer fails as scripted."""

    transient_faults = (Fault.NETWORK, Fault.TRANSIENT)
    impossible: ClassVar[Mapping[Case, str]] = {"peer_batches": _ONE_REQUEST_PER_RECORD}
    peer: _P

    async def open(self, stack: contextlib.AsyncExitStack) -> None:
        self.peer = await stack.enter_async_context(self.make_peer().running())
        self.peer.faults = self.script

    @abc.abstractmethod
    def make_peer(self) -> _P:
        """The peer, not yet running."""

    async def requests(self) -> int:
        return self.peer.hits


class WebhookHarness(_HttpHarness[WebhookPeer]):
    """An aiohttp receiver that drops a repeated ``Idempotency-Key``, as receivers should."""

    name = "webhook"
    dedup_in_process = True  # the sink remembers the keys it delivered
    dedup_across_processes = True  # the same Idempotency-Key: the receiver drops the repeat

    def make_peer(self) -> WebhookPeer:
        return WebhookPeer()

    def make(self) -> Sink:
        return WebhookSink(f"{self.peer.url}/hook", clock=FakeClock())

    async def delivered(self) -> list[Any]:
        return [msgspec.json.decode(seen.body) for seen in self.peer.delivered]

    async def peer_keys(self) -> list[str]:
        return [
            seen.headers["Idempotency-Key"]
            for seen in self.peer.requests
            if "Idempotency-Key" in seen.headers
        ]


class WeComHarness(_HttpHarness[RobotPeer]):
    """A loopback WeCom robot; throttling (errcode 45009) is its transient failure."""

    name = "wecom"
    keys_reach_peer = False  # robots ignore headers: no Idempotency-Key is sent
    dedup_in_process = True  # the sink remembers the keys it delivered
    impossible: ClassVar[Mapping[Case, str]] = {
        "peer_batches": _ONE_REQUEST_PER_RECORD,
        "unencodable": "wecom_markdown renders any record, even one with no JSON form",
    }
    _TASK = re.compile(r"contract(\d+)t0")

    def make_peer(self) -> RobotPeer:
        return RobotPeer("contract-robot-key")

    def make(self) -> Sink:
        return WeComRobotSink(self.peer.url, clock=FakeClock())

    def rendered(self, value: dict[str, Any]) -> object:
        return wecom_markdown(value)

    def number(self, held: Any) -> int:
        found = self._TASK.search(held["markdown"]["content"])
        assert found is not None, held
        return int(found.group(1))

    async def delivered(self) -> list[Any]:
        return list(self.peer.messages)

    async def peer_keys(self) -> list[str]:
        return [h["Idempotency-Key"] for h in self.peer.headers if "Idempotency-Key" in h]


class ScfHarness(_HttpHarness[ScfApi]):
    """A loopback SCF API checking TC3 signatures; the callee's event carries the key."""

    name = "scf"
    KEY_FIELD = "mpsflowKey"
    SECRET_ID = "AKIDscfContract0001"
    SECRET_KEY = "scf-contract-secret-key"

    def make_peer(self) -> ScfApi:
        return ScfApi(self.SECRET_ID, self.SECRET_KEY)

    def make(self) -> Sink:
        return ScfInvokeSink(
            "mps-fanout",
            region="ap-guangzhou",
            endpoint=self.peer.url,
            credentials=Credential(self.SECRET_ID, self.SECRET_KEY),
            clock=FakeClock(),
            key_field=self.KEY_FIELD,
        )

    def _events(self) -> list[dict[str, Any]]:
        return [msgspec.json.decode(call["ClientContext"]) for call in self.peer.invocations]

    async def delivered(self) -> list[Any]:
        return [{k: v for k, v in event.items() if k != self.KEY_FIELD} for event in self._events()]

    async def peer_keys(self) -> list[str]:
        return [event[self.KEY_FIELD] for event in self._events() if self.KEY_FIELD in event]


class S3Harness(_HttpHarness[S3Front]):
    """A moto S3 bucket behind a loopback front that fails as scripted (SlowDown, 403)."""

    name = "cos"
    ordered = False  # one object a record, written concurrently
    # aiohttp under recent aiobotocore resends an idempotent PUT once when the connection
    # drops (RFC 9112 9.3.1), older ones do not; either way the PUT overwrites the same
    # object, so the record is still stored once.
    client_retries = frozenset({Fault.NETWORK})
    dedup_in_process = True  # a keyed record is always written to the same object
    dedup_across_processes = True
    _KEYED = re.compile(r"mps/(?!\d{4}-\d\d-\d\d/)[^/]+/(?P<key>[^/]+)\.json")

    async def open(self, stack: contextlib.AsyncExitStack) -> None:
        self.bucket: S3Bucket = self.request.getfixturevalue("s3_bucket")
        await super().open(stack)

    def make_peer(self) -> S3Front:
        return S3Front(self.bucket.server.endpoint_url)

    def make(self) -> Sink:
        server = self.bucket.server
        return S3Sink(
            self.bucket.name,
            endpoint_url=self.peer.url,
            region=server.region,
            credentials=Credential(server.access_key, server.secret_key),
            addressing_style="path",
            clock=FakeClock(),
        )

    async def delivered(self) -> list[Any]:
        return [msgspec.json.decode(self.bucket.read(key)) for key in self.bucket.object_keys()]

    async def peer_keys(self) -> list[str]:
        names = (self._KEYED.fullmatch(name) for name in self.bucket.object_keys())
        return [found["key"] for found in names if found is not None]


class _ScriptedCmqClient(CountingCmqClient):
    """Makes the local server refuse the next BatchSendMessage as the harness scripted."""

    def __init__(self, harness: CmqHarness, server: CmqServer, **options: Any) -> None:
        super().__init__(server.url, Credential(CMQ_SECRET_ID, CMQ_SECRET_KEY), **options)
        self.harness = harness
        self.server = server

    async def batch_send(
        self, queue: str, bodies: Sequence[str | bytes], *, delay_seconds: int = 0
    ) -> list[str]:
        fault = self.harness.next_fault()
        if fault is Fault.TRANSIENT:
            self.server.throttle(1)  # code 4420
        elif fault is Fault.PERMANENT:
            self.server.remove_credential(CMQ_SECRET_ID)  # code 4100, as for a revoked key
        try:
            return await super().batch_send(queue, bodies, delay_seconds=delay_seconds)
        finally:
            if fault is Fault.PERMANENT:
                self.server.set_credential(Credential(CMQ_SECRET_ID, CMQ_SECRET_KEY))


class CmqHarness(SinkHarness):
    """The local CMQ server; the client does not retry, so the channel sees each failure."""

    name = "cmq"
    ordered = False  # CMQ queues do not promise order
    keyed = False  # messages carry only a body: there is nothing to put a key in
    keys_reach_peer = False
    records_per_request = MAX_BATCH
    QUEUE = "contract"

    async def open(self, stack: contextlib.AsyncExitStack) -> None:
        server = CmqServer({CMQ_SECRET_ID: CMQ_SECRET_KEY})
        await server.start("127.0.0.1", 0)
        stack.push_async_callback(server.stop)
        client = _ScriptedCmqClient(
            self, server, clock=FakeClock(), retry=RetryPolicy(max_attempts=1)
        )
        self.client = await stack.enter_async_context(client)
        self._drained: list[Any] = []

    def make(self) -> Sink:
        return CmqSink(self.client, self.QUEUE)

    async def delivered(self) -> list[Any]:
        while batch := await self.client.batch_receive(self.QUEUE, MAX_BATCH, 0):
            self._drained += [msgspec.json.decode(message.msg_body) for message in batch]
            await self.client.batch_delete(self.QUEUE, [m.receipt_handle for m in batch])
        return list(self._drained)

    async def requests(self) -> int:
        return len(self.client.batches)

    async def peer_keys(self) -> list[str]:
        return []

    async def peer_batches(self) -> list[int]:
        return list(self.client.batches)


HARNESSES: tuple[type[SinkHarness], ...] = (
    MemoryHarness,
    JsonlHarness,
    WebhookHarness,
    WeComHarness,
    S3Harness,
    ScfHarness,
    CmqHarness,
)


def contract(case: Case | None = None) -> pytest.MarkDecorator:
    """Run a test against every harness; those that cannot go through ``case`` skip it."""
    params = [
        pytest.param(
            harness,
            id=harness.name,
            marks=[pytest.mark.skip(reason=f"{harness.name}: {harness.impossible[case]}")]
            if case is not None and case in harness.impossible
            else [],
        )
        for harness in HARNESSES
    ]
    return pytest.mark.parametrize("harness", params, indirect=True)
