"""A local MPS-API-compatible server, for development and tests only (not for production).

It answers the Tencent Cloud API 3.0 ``POST /`` of MPS (version ``2019-06-12``) for the three
actions that show tasks, so a client that looks up tasks (a reconciler finding notifications
that never arrived, the official SDK's ``MpsClient``) can be run and tested without an account:

* ``DescribeTasks``: ``Status``, ``SubTaskHasFailed``, ``StartTime``/``EndTime`` filters,
  ``Limit`` (default 10, at most 100), ``ScrollToken`` paging (``""`` when there is no more),
  ``TotalCount``; ``TaskSet`` of ``TaskSimpleInfo``, newest first.
* ``DescribeTaskDetail`` / ``DescribeBatchTaskDetail``: a task's type, status, times and
  result (``WorkflowTask``, ``EditMediaTask``, ``ScheduleTask``, …, ``BatchTaskResult``).

Requests must carry a TC3-HMAC-SHA256 signature of a known SecretId, made within five minutes
of the server's clock (``AuthFailure.SecretIdNotFound`` / ``SignatureFailure`` /
``SignatureExpire`` otherwise); errors come back as
``{"Response": {"Error": {"Code", "Message"}, "RequestId"}}`` with HTTP 200, as from MPS.
Tasks are loaded from notifications (:meth:`MpsServer.add_from_notification`,
:meth:`MpsServer.load`, ``--tasks FILE|DIR``): a notification's event object is the detail's
result verbatim, the same SDK classes on both sides. State lives in memory only.

Where MPS is undocumented the server makes a choice, and says so: the order of
``DescribeTasks`` (newest first), what ``StartTime``/``EndTime`` bound (creation time unless
``time_field="finish"``), the ``SubTaskTypes`` values and the ``ScrollToken`` format (opaque).
Time comes from an injectable :class:`~mpsflow.clock.Clock`. Run it with
``python -m mpsflow.devservers.mps`` (or ``mpsflow mps-server``).
"""

from __future__ import annotations

from mpsflow.devservers.mps.actions import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    TASK_NOT_FOUND,
    ApiError,
)
from mpsflow.devservers.mps.command import (
    DEFAULT_PORT,
    DESCRIPTION,
    add_arguments,
    build_parser,
    main,
    run_server,
)
from mpsflow.devservers.mps.server import DEFAULT_MAX_CLOCK_SKEW, SERVICE, VERSION, MpsServer
from mpsflow.devservers.mps.tasks import UNSET_TIME, LocalTask, TaskStore

__all__ = [
    "DEFAULT_LIMIT",
    "DEFAULT_MAX_CLOCK_SKEW",
    "DEFAULT_PORT",
    "DESCRIPTION",
    "MAX_LIMIT",
    "SERVICE",
    "TASK_NOT_FOUND",
    "UNSET_TIME",
    "VERSION",
    "ApiError",
    "LocalTask",
    "MpsServer",
    "TaskStore",
    "add_arguments",
    "build_parser",
    "main",
    "run_server",
]
