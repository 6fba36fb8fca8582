"""Generated TaskIds are unique across processes, not only within one.

Two test runs against one persistent dedup store (or built notifications sent by two
processes) would otherwise reuse ids, and the second run's notifications would be skipped
as duplicates of the first's.
"""

from __future__ import annotations

import subprocess
import sys

from mpsflow.testing import build_live_notification, build_notification

_PRINT_IDS = (
    "from mpsflow.testing import build_live_notification, build_notification\n"
    "print(build_notification()['WorkflowTaskEvent']['TaskId'])\n"
    "print(build_live_notification('AiReviewResult', {})['TaskId'])\n"
)


def _ids_of_a_new_process() -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PRINT_IDS], capture_output=True, text=True, check=True
    )
    return done.stdout.split()


def test_ids_differ_between_processes() -> None:
    first, second = _ids_of_a_new_process(), _ids_of_a_new_process()
    assert len(first) == len(second) == 2
    assert not set(first) & set(second)


def test_ids_differ_within_a_process() -> None:
    workflow = {build_notification()["WorkflowTaskEvent"]["TaskId"] for _ in range(100)}
    live = {build_live_notification("AiReviewResult", {})["TaskId"] for _ in range(100)}
    assert len(workflow) == len(live) == 100
