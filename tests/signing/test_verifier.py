"""Signature verification: MPS's MD5(Timestamp + NotifyKey), expiry, rotation, secrecy."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpsflow.clock import FakeClock
from mpsflow.errors import ConfigurationError, DecodeError
from mpsflow.signing.verifier import (
    NotificationRef,
    SignatureVerifier,
    VerifyReason,
    VerifyResult,
    extract_timestamp_sign,
    notification_ref,
    scan_timestamp_sign,
    sign,
    sign_notification,
)
from mpsflow.testing import sign_payload
from tests.plugins.samples import LIVE_SAMPLE_PATHS, SAMPLE_KEY, SAMPLE_PATHS, SAMPLES_DIR

SAMPLES = SAMPLES_DIR
SIGNED_PATHS = [p for p in SAMPLE_PATHS + LIVE_SAMPLE_PATHS if b'"Sign"' in p.read_bytes()]
JAN_2_2025 = 1_735_787_000.0  # 2025-01-02T03:03:20Z, before every sample's expiry
TS = 1_735_787_400
SECRET = "s3cret-notify-key-2026"
OLD_SECRET = "0ld-notify-key-2025"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=JAN_2_2025)


@pytest.fixture
def verifier(clock: FakeClock) -> SignatureVerifier:
    return SignatureVerifier([SECRET], clock=clock, skew_seconds=30)


def _reason(result: VerifyResult) -> VerifyReason:
    return result.reason


def test_sign_is_md5_of_timestamp_then_key() -> None:
    # md5("1735787400mps-sample-notify-key"), as in samples/03
    assert sign(1735787400, SAMPLE_KEY) == "eab3fbdbc656c0546f4c02b50ad32044"
    assert sign("1735787400", SAMPLE_KEY) == sign(1735787400, SAMPLE_KEY)


@pytest.mark.parametrize("path", SIGNED_PATHS, ids=lambda p: p.stem)
def test_every_signed_sample_verifies_at_its_time(path: Path) -> None:
    """At the time MPS signed it: ten minutes before its expiry (MPS's default lifetime)."""
    raw = path.read_bytes()
    clock = FakeClock(start=json.loads(raw)["Timestamp"] - 600.0)
    result = SignatureVerifier([SAMPLE_KEY], clock=clock).verify_payload(raw)
    assert result == VerifyResult(VerifyReason.OK, 0)
    assert result.ok
    assert SignatureVerifier([SAMPLE_KEY], clock=clock).verify_payload(json.loads(raw)).ok


def test_the_signed_samples_are_all_found() -> None:
    assert len(SIGNED_PATHS) >= 12


def test_right_key_passes(verifier: SignatureVerifier) -> None:
    assert verifier.verify(TS, sign(TS, SECRET)) == VerifyResult(VerifyReason.OK, 0)
    assert verifier.verify(TS, sign(TS, SECRET).upper()).ok


def test_a_timestamp_given_as_a_string_is_malformed(verifier: SignatureVerifier) -> None:
    """As the notification's decoder says (Timestamp is an integer), before anything else."""
    assert verifier.verify(str(TS), sign(TS, SECRET)) == VerifyResult(VerifyReason.MALFORMED)


def test_an_expiry_further_ahead_than_the_lifetime_is_refused(clock: FakeClock) -> None:
    """A captured pair with an expiry years ahead would pass on any body until then."""
    now = int(clock.time())
    verifier = SignatureVerifier([SECRET], clock=clock, skew_seconds=30)
    for expiry, reason in [
        (now + 600, VerifyReason.OK),  # MPS's 10 minutes
        (now + 3600 + 30, VerifyReason.OK),  # the default hour, and the skew
        (now + 3600 + 31, VerifyReason.TOO_FAR_AHEAD),
        (now + 10 * 365 * 86400, VerifyReason.TOO_FAR_AHEAD),
        (999_999_999_999_999, VerifyReason.TOO_FAR_AHEAD),
    ]:
        assert verifier.verify(expiry, sign(expiry, SECRET)).reason is reason, expiry
        assert verifier.verify(expiry, sign(expiry, SECRET)).reason is reason  # cached pair
    unbounded = SignatureVerifier([SECRET], clock=clock, max_lifetime_seconds=None)
    assert unbounded.verify(999_999_999_999_999, sign(999_999_999_999_999, SECRET)).ok
    longer = SignatureVerifier([SECRET], clock=clock, max_lifetime_seconds=86400)
    assert longer.verify(now + 7200, sign(now + 7200, SECRET)).ok


def test_wrong_key_is_a_mismatch(verifier: SignatureVerifier) -> None:
    result = verifier.verify(TS, sign(TS, "someone-else"))
    assert result == VerifyResult(VerifyReason.MISMATCH)
    assert not result.ok
    # The signature binds the timestamp: another timestamp's valid sign does not fit.
    assert _reason(verifier.verify(TS + 1, sign(TS, SECRET))) is VerifyReason.MISMATCH


def test_rotated_keys_all_pass_and_report_which(clock: FakeClock) -> None:
    rotating = SignatureVerifier([SECRET, OLD_SECRET], clock=clock)
    assert rotating.verify(TS, sign(TS, SECRET)) == VerifyResult(VerifyReason.OK, 0)
    assert rotating.verify(TS, sign(TS, OLD_SECRET)) == VerifyResult(VerifyReason.OK, 1)
    retired = SignatureVerifier([SECRET], clock=clock)
    assert _reason(retired.verify(TS, sign(TS, OLD_SECRET))) is VerifyReason.MISMATCH


def test_expiry_and_the_skew_boundary(verifier: SignatureVerifier, clock: FakeClock) -> None:
    good = sign(TS, SECRET)
    clock.advance(TS + 30 - clock.time())  # exactly Timestamp + skew: still accepted
    assert verifier.verify(TS, good).ok
    clock.advance(0.001)
    assert verifier.verify(TS, good) == VerifyResult(VerifyReason.EXPIRED, 0)


def test_remembered_pairs_still_expire_and_never_admit_another_sign(
    verifier: SignatureVerifier, clock: FakeClock
) -> None:
    good = sign(TS, SECRET)
    for _ in range(3):  # the second and third checks answer from the memo
        assert verifier.verify(TS, good) == VerifyResult(VerifyReason.OK, 0)
    assert _reason(verifier.verify(TS, sign(TS, "someone-else"))) is VerifyReason.MISMATCH
    assert _reason(verifier.verify(TS, good[:-1] + "x")) is VerifyReason.MALFORMED
    for n in range(1, 5000):  # the memo stays bounded
        stamp = TS + n % 3000  # within the hour the expiry may lie ahead
        assert verifier.verify(stamp, sign(stamp, SECRET)).ok
    clock.advance(TS + 31 - clock.time())
    assert verifier.verify(TS, good) == VerifyResult(VerifyReason.EXPIRED, 0)


def test_zero_skew_expires_right_after_the_timestamp(clock: FakeClock) -> None:
    strict = SignatureVerifier([SECRET], clock=clock, skew_seconds=0)
    clock.advance(TS - clock.time())
    assert strict.verify(TS, sign(TS, SECRET)).ok
    clock.advance(1)
    assert _reason(strict.verify(TS, sign(TS, SECRET))) is VerifyReason.EXPIRED


def test_replaying_an_old_notification_is_rejected(clock: FakeClock) -> None:
    raw = (SAMPLES / "03_workflow_task_all_media_process_types.json").read_bytes()
    verifier = SignatureVerifier([SAMPLE_KEY], clock=clock)
    assert verifier.verify_payload(raw).ok
    clock.advance(24 * 3600)  # the same bytes, captured and sent again a day later
    assert verifier.verify_payload(raw) == VerifyResult(VerifyReason.EXPIRED, 0)


@pytest.mark.parametrize(
    ("timestamp", "signature"),
    [(None, None), ("", ""), (TS, None), (TS, ""), (None, ""), ("", None)],
)
def test_unsigned_is_missing(verifier: SignatureVerifier, timestamp: Any, signature: Any) -> None:
    assert verifier.verify(timestamp, signature) == VerifyResult(VerifyReason.MISSING)


@pytest.mark.parametrize("timestamp", [None, ""])
def test_a_sign_without_timestamp_is_missing(verifier: SignatureVerifier, timestamp: Any) -> None:
    assert _reason(verifier.verify(timestamp, sign(TS, SECRET))) is VerifyReason.MISSING


@pytest.mark.parametrize(
    "signature",
    [
        "z" * 32,  # not hex
        sign(TS, SECRET)[:-1],  # too short
        sign(TS, SECRET) + "0",  # too long
        " " + sign(TS, SECRET)[1:],
        True,
        12345,
        1.5,
        ["0" * 32],
        {"Sign": "0" * 32},
        "é" * 32,
    ],
)
def test_malformed_signs(verifier: SignatureVerifier, signature: object) -> None:
    assert _reason(verifier.verify(TS, signature)) is VerifyReason.MALFORMED


@pytest.mark.parametrize(
    "timestamp",
    [
        True,
        False,
        float(TS),
        1735787400.5,
        -TS,
        "-1735787400",
        "1735787400.0",
        "0x676",
        " 1735787400",
        "+1735787400",
        "01735787400",
        "１７３５７８７４００",  # full-width digits: str.isdigit() says yes, ASCII says no
        "9" * 40,
        [TS],
    ],
)
def test_malformed_timestamps(verifier: SignatureVerifier, timestamp: object) -> None:
    assert _reason(verifier.verify(timestamp, sign(TS, SECRET))) is VerifyReason.MALFORMED


def test_compare_digest_is_used(
    verifier: SignatureVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert verifier.verify(TS, sign(TS, SECRET).upper()).ok
    assert not verifier.verify(TS, sign(TS, "other")).ok
    assert len(calls) == 2
    assert calls[0] == (sign(TS, SECRET).encode(), sign(TS, SECRET).encode())


def test_unsigned_policy_true_accepts_every_unsigned(clock: FakeClock) -> None:
    lenient = SignatureVerifier([SECRET], clock=clock, allow_unsigned=True)
    result = lenient.verify(None, None)
    assert result == VerifyResult(VerifyReason.UNSIGNED_ALLOWED)
    assert result.ok
    # A bad signature is never "unsigned".
    assert _reason(lenient.verify(TS, "0" * 32)) is VerifyReason.MISMATCH


def test_unsigned_policy_callable_sees_the_notification(clock: FakeClock) -> None:
    seen: list[NotificationRef] = []

    def only_edits(ref: NotificationRef) -> bool:
        seen.append(ref)
        return ref.event_type == "EditMediaTask"

    verifier = SignatureVerifier([SECRET], clock=clock, allow_unsigned=only_edits)
    edit = json.loads((SAMPLES / "06_edit_media_task_success.json").read_bytes())
    del edit["Timestamp"], edit["Sign"]
    workflow = (SAMPLES / "01_workflow_task_seed_verbatim.json").read_bytes()  # unsigned

    assert _reason(verifier.verify_payload(edit)) is VerifyReason.UNSIGNED_ALLOWED
    assert _reason(verifier.verify_payload(workflow)) is VerifyReason.MISSING
    assert seen[0] == NotificationRef(
        "EditMediaTask", "1300123456-EditMediaTask-2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d7ct0", "edit-0001"
    )
    assert seen[1].event_type == "WorkflowTask"
    assert seen[1].task_id == "245****654-WorkflowTask-f46dac7fe2436c47******d71946986t0"
    # Without a payload the policy gets an empty reference.
    assert _reason(verifier.verify(None, None)) is VerifyReason.MISSING
    assert seen[-1] == NotificationRef()


def test_notification_ref_of_live_wrapped_and_garbage() -> None:
    live = json.loads(LIVE_SAMPLE_PATHS[0].read_bytes())
    ref = notification_ref(json.dumps({"Response": live}).encode())
    assert ref == NotificationRef(live["NotificationType"], live["TaskId"], "", live=True)
    assert notification_ref(b"garbage") == NotificationRef()
    assert notification_ref({"EventType": 5}) == NotificationRef()


def test_extract_reads_top_level_and_response_wrapper() -> None:
    raw = (SAMPLES / "03_workflow_task_all_media_process_types.json").read_bytes()
    document = json.loads(raw)
    expected = (1735787400, "eab3fbdbc656c0546f4c02b50ad32044")
    assert extract_timestamp_sign(raw) == expected
    assert extract_timestamp_sign(document) == expected
    assert extract_timestamp_sign(json.dumps({"Response": document}).encode()) == expected
    assert extract_timestamp_sign({"Response": document}) == expected
    assert extract_timestamp_sign(b'{"Timestamp": "1735787400", "Sign": "ab"}') == (
        "1735787400",
        "ab",
    )
    assert extract_timestamp_sign(b'{"EventType": "WorkflowTask"}') == (None, None)
    assert extract_timestamp_sign(b'{"Timestamp": {"nested": [1, 2]}}') == (
        {"nested": [1, 2]},
        None,
    )


def test_sign_notification_signs_where_verification_reads(verifier: SignatureVerifier) -> None:
    document = json.loads((SAMPLES / "06_edit_media_task_success.json").read_bytes())
    del document["Timestamp"], document["Sign"]
    expected = (TS, sign(TS, SECRET))

    plain = dict(document)
    assert sign_notification(plain, SECRET, expires_at=TS) is plain  # in place
    assert extract_timestamp_sign(plain) == expected
    wrapped: dict[str, Any] = {"Response": dict(document), "RequestId": "r-1"}
    sign_notification(wrapped, SECRET, expires_at=TS)
    assert "Sign" not in wrapped  # inside the wrapper, where MPS's API puts it
    assert (wrapped["Response"]["Timestamp"], wrapped["Response"]["Sign"]) == expected
    assert extract_timestamp_sign(wrapped) == expected

    for body in (json.dumps(document).encode(), json.dumps({"Response": document}).encode()):
        signed = sign_notification(body, SECRET, expires_at=TS)
        assert isinstance(signed, bytes)
        assert extract_timestamp_sign(signed) == expected
        assert verifier.verify_payload(signed).ok
    # testing.sign_payload is the same signer
    assert sign_payload(
        {"Response": dict(document), "RequestId": "r-1"}, SECRET, expires_at=TS
    ) == (wrapped)
    with pytest.raises(DecodeError):
        sign_notification(b"[1, 2]", SECRET, expires_at=TS)


@pytest.mark.parametrize("path", SAMPLE_PATHS, ids=lambda p: p.name)
def test_scan_agrees_with_the_exact_read_on_every_sample(path: Path) -> None:
    raw = path.read_bytes()
    found = scan_timestamp_sign(raw)
    if found is None:  # an unsigned sample: the exact read finds no Sign either
        assert extract_timestamp_sign(raw)[1] in (None, "")
    else:
        assert found == extract_timestamp_sign(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"Timestamp": 1735787400, "Sign": "ab"}', (1735787400, "ab")),
        (b'{"Sign":"ab","Timestamp":"1735787400"}', ("1735787400", "ab")),
        (b'{"Timestamp" :\n 17 ,\n "Sign" : "ab"}', (17, "ab")),
        # the scan does not track nesting: the last pair wins (the middleware confirms it)
        (b'{"Timestamp": 1, "Sign": "a", "X": {"Timestamp": 2, "Sign": "b"}}', (2, "b")),
    ],
)
def test_scan_reads_the_last_plain_pair(raw: bytes, expected: tuple[object, object]) -> None:
    assert scan_timestamp_sign(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        b'{"EventType": "WorkflowTask"}',
        b'{"Timestamp": 1735787400}',
        b'{"Sign": "ab"}',
        b'{"Timestamp": null, "Sign": "ab"}',
        b'{"Timestamp": 17.5, "Sign": "ab"}',
        b'{"Timestamp": 1e9, "Sign": "ab"}',
        b'{"Timestamp": 1735787400, "Sign": "a\\u0062"}',
        b'{"Timestamp": 1735787400, "Sign": null}',
        b'{"Timestamp": 1735787400, "Type": "Sign"}',
        b"Timestamp=1&Sign=ab",
        b"",
    ],
)
def test_scan_gives_up_on_anything_but_a_plain_pair(raw: bytes) -> None:
    assert scan_timestamp_sign(raw) is None


@pytest.mark.parametrize("raw", [b"not json", b"[1]", b'"x"', b""])
def test_extract_rejects_non_objects(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        extract_timestamp_sign(raw)


@pytest.mark.parametrize(
    ("keys", "match"),
    [([], "at least one"), ([""], "non-empty"), (["ok", ""], "non-empty"), ("abc", "sequence")],
)
def test_bad_key_lists_are_configuration_errors(keys: Any, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match) as caught:
        SignatureVerifier(keys)
    assert "abc" not in str(caught.value)


def test_negative_skew_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        SignatureVerifier([SECRET], skew_seconds=-1)


def test_keys_never_show(
    clock: FakeClock, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = SignatureVerifier([SECRET, OLD_SECRET], clock=clock, allow_unsigned=True)
    assert repr(verifier) == "SignatureVerifier(keys=<2 keys>, skew_seconds=30.0)"
    assert str(verifier) == repr(verifier)
    _assert_no_key(repr(verifier))

    checks: list[Callable[[], object]] = [
        lambda: verifier.verify(TS, sign(TS, SECRET)),
        lambda: verifier.verify(TS, sign(TS, "other")),
        lambda: verifier.verify(TS, "nope"),
        lambda: verifier.verify(None, None),
        lambda: verifier.verify_payload(b"{bad"),
        lambda: verifier.verify_payload({"Timestamp": TS, "Sign": 3}),
    ]
    with caplog.at_level(logging.DEBUG):
        for check in checks:
            try:
                outcome = check()
            except DecodeError as exc:
                outcome = exc
            _assert_no_key(repr(outcome))
            _assert_no_key(str(outcome))
        clock.advance(10**6)
        expired = verifier.verify(TS, sign(TS, SECRET))
        assert _reason(expired) is VerifyReason.EXPIRED
        _assert_no_key(repr(expired))
    for record in caplog.records:
        _assert_no_key(record.getMessage())
        _assert_no_key(repr(record.args))


def _assert_no_key(text: str) -> None:
    assert SECRET not in text
    assert OLD_SECRET not in text


@settings(max_examples=200)
@given(
    key=st.text(min_size=1, max_size=64),
    timestamp=st.integers(min_value=0, max_value=10**12),
    as_text=st.booleans(),
)
def test_any_key_and_timestamp_round_trip(key: str, timestamp: int, as_text: bool) -> None:
    clock = FakeClock(start=float(timestamp))
    verifier = SignatureVerifier([key], clock=clock, skew_seconds=0)
    if as_text:  # a digit string is not a Timestamp (the decoder refuses it too)
        assert _reason(verifier.verify(str(timestamp), sign(timestamp, key))) is (
            VerifyReason.MALFORMED
        )
        return
    stamp = timestamp
    assert verifier.verify(stamp, sign(timestamp, key)) == VerifyResult(VerifyReason.OK, 0)
    assert _reason(verifier.verify(stamp, sign(timestamp, key + "x"))) is VerifyReason.MISMATCH
    clock.advance(1)
    assert _reason(verifier.verify(stamp, sign(timestamp, key))) is VerifyReason.EXPIRED
