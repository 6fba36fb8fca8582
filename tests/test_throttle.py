"""Rate-limited log lines: held-back events are reported, by the next line or by their tail."""

from __future__ import annotations

import logging
from collections import Counter

import pytest

from mpsflow._throttle import LogThrottle, held_back, report_held_back, tail_line
from mpsflow.clock import FakeClock


def test_the_first_event_passes_and_the_rest_of_the_interval_is_counted_into_the_next() -> None:
    clock = FakeClock(0.0)
    throttle = LogThrottle(clock, 10.0)
    assert throttle.admit("a") == Counter()
    assert throttle.admit("a") is None
    clock.advance(5.0)
    assert throttle.admit("b") is None
    clock.advance(5.0)
    held = throttle.admit("a")
    assert held == Counter({"a": 1, "b": 1})
    assert held_back(held, "rejected") == "; 2 more rejected since the last such line (a 1, b 1)"


def test_a_tail_reports_what_no_later_line_counted_once_the_interval_passed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="tests.throttle")
    clock = FakeClock(0.0)
    tail = tail_line(logging.getLogger("tests.throttle"), "signature checks", "rejected")
    throttle = LogThrottle(clock, 10.0, tail=tail)
    throttle.admit("mismatch")
    throttle.admit("mismatch")
    throttle.admit("expired")
    report_held_back(due_only=True)
    assert caplog.records == []  # the interval of the last line has not passed
    clock.advance(10.0)
    report_held_back(due_only=True)
    report_held_back(due_only=True)  # reported once
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            "signature checks: 2 more rejected since the last such line (expired 1, mismatch 1)",
        )
    ]
    assert caplog.records[0].__dict__["suppressed"] == 2
    # The tail line was this interval's line: the next event is held back too.
    assert throttle.admit("mismatch") is None
    caplog.clear()
    report_held_back()  # not due, but the app stops: reported all the same
    assert [r.getMessage() for r in caplog.records] == [
        "signature checks: 1 more rejected since the last such line (mismatch 1)"
    ]


def test_a_throttle_without_a_tail_keeps_its_count_for_its_next_line() -> None:
    clock = FakeClock(0.0)
    throttle = LogThrottle(clock, 10.0)
    throttle.admit()
    throttle.admit()
    clock.advance(10.0)
    report_held_back()
    assert throttle.admit() == Counter({"": 1})
