"""How the ``run --workers`` supervisor words a worker's end in its log lines."""

from __future__ import annotations

import signal

import pytest

from mpsflow.cli.supervisor import exit_reason


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (0, "exit status 0"),
        (3, "exit status 3"),
        (-signal.SIGKILL, "killed by SIGKILL"),
        (-signal.SIGSEGV, "killed by SIGSEGV"),
    ],
)
def test_a_worker_end_is_named_in_words(status: int, reason: str) -> None:
    assert exit_reason(status) == reason


def test_a_signal_python_does_not_name_is_given_by_number() -> None:
    named = {s.value for s in signal.Signals}
    unnamed = next(n for n in range(1, 256) if n not in named)
    assert exit_reason(-unnamed) == f"killed by signal {unnamed}"
