"""An empty SessionId/SessionContext hashes as an absent one: MPS sends either form, and a
notification rebuilt from the API (reconciliation) may differ from the pushed one only there."""

from __future__ import annotations

from mpsflow.codec import decode
from mpsflow.dedup.keys import typed_payload_hash
from mpsflow.testing import build_notification


def test_empty_and_absent_session_fields_hash_alike() -> None:
    with_empty = build_notification(task_id="t-1", session_id="", session_context="")
    without = {k: v for k, v in with_empty.items() if k not in ("SessionId", "SessionContext")}
    assert "SessionId" in with_empty
    hashes = {typed_payload_hash(decode(note)) for note in (with_empty, without)}
    assert len(hashes) == 1
    other = build_notification(task_id="t-1", session_id="s-1")
    assert typed_payload_hash(decode(other)) not in hashes
