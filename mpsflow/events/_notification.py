"""Convenience methods of the two notification roots (mixed into the generated Structs).

``Notification`` gets what every handler reaches for: the one ``event``, its ``task_id`` and
``status``, the ``input`` location, ``subtasks()`` and ``output_paths()``.
``LiveStreamNotification`` gets ``info`` and ``subtasks()``. Both keep ``raw`` (the untyped
document) when some part of them was of an unknown type.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from ._base import RawPayload
from ._tables import EVENT_TYPES, LIVE_TYPES

if TYPE_CHECKING:
    from ._generated import (
        BatchSubTaskResult,
        EditMediaTask,
        ExtractBlindWatermarkTask,
        LiveStreamAiAnalysisResultInfo,
        LiveStreamAiQualityControlResultInfo,
        LiveStreamAiRecognitionResultInfo,
        LiveStreamAiReviewResultInfo,
        LiveStreamAiSmartSubtitleResultInfo,
        LiveStreamNotification,
        LiveStreamProcessErrorInfo,
        LiveStreamRecordResultInfo,
        MediaInputInfo,
        ScheduleTask,
        WorkflowTask,
    )
    from .locations import InputLocation, OutputPath
    from .subtasks import Subtask

__all__ = ["LiveNotificationMixin", "NotificationMixin"]

_EVENT_ATTRS = {key: attr for key, (attr, _wire) in EVENT_TYPES.items()}
_EVENT_ORDER = tuple(_EVENT_ATTRS.values())
_LIVE_ATTRS = {key: attr for key, (attr, _wire) in LIVE_TYPES.items()}


class NotificationMixin(RawPayload):
    """Methods of ``Notification`` (the ``ParseNotification`` output)."""

    __slots__ = ()

    if TYPE_CHECKING:
        event_type: str | None
        workflow_task_event: WorkflowTask | None
        edit_media_task_event: EditMediaTask | None
        schedule_task_event: ScheduleTask | None
        batch_task_event: BatchSubTaskResult | None
        extract_blind_watermark_task: ExtractBlindWatermarkTask | None

    @property
    def event(
        self,
    ) -> (
        WorkflowTask
        | EditMediaTask
        | ScheduleTask
        | BatchSubTaskResult
        | ExtractBlindWatermarkTask
        | None
    ):
        """The event object ``EventType`` names (else the first non-null one), or None."""
        attr = _EVENT_ATTRS.get(self.event_type or "")
        if attr is not None:
            found = getattr(self, attr)
            if found is not None:
                return found  # type: ignore[no-any-return]
        for name in _EVENT_ORDER:
            found = getattr(self, name)
            if found is not None:
                return found  # type: ignore[no-any-return]
        return None

    @property
    def task_id(self) -> str | None:
        """The event's ``TaskId`` (a batch event has none)."""
        return getattr(self.event, "task_id", None)

    @property
    def status(self) -> str | None:
        """The event's ``Status`` (``PROCESSING`` / ``FINISH``; not the subtasks' outcome)."""
        return getattr(self.event, "status", None)

    def _input_infos(self) -> Iterator[MediaInputInfo]:
        event = self.event
        if event is None:
            return
        single = getattr(event, "input_info", None)
        if single is not None:
            yield single
        yield from getattr(event, "input_infos", None) or ()
        edit_input = getattr(event, "input", None)
        if edit_input is not None:
            for clip in edit_input.file_info_set or ():
                if clip.input_info is not None:
                    yield clip.input_info

    @property
    def input(self) -> InputLocation | None:
        """Where the task's (first) input media is: COS, URL, AWS-S3 or VOD; no secrets."""
        from .locations import input_location

        return next((input_location(i) for i in self._input_infos()), None)

    def inputs(self) -> list[InputLocation]:
        """Every input location (an edit task has one per clip, a batch one per file)."""
        from .locations import input_location

        return [loc for i in self._input_infos() if (loc := input_location(i)) is not None]

    def subtasks(self) -> Iterator[Subtask]:
        """Every subtask result with its routing key, in document order."""
        from .subtasks import iter_subtasks

        return iter_subtasks(self)  # type: ignore[arg-type]

    def output_paths(self) -> list[OutputPath]:
        """Every output object key with its storage, from all subtasks (and an edit's output)."""
        from .keys import CONTAINER_KEYS
        from .locations import iter_output_paths

        paths: list[OutputPath] = []
        edit = self.edit_media_task_event
        if edit is not None:
            paths.extend(iter_output_paths(edit, "EditMediaTask"))
        for sub in self.subtasks():
            if sub.key not in CONTAINER_KEYS:
                paths.extend(iter_output_paths(sub.result, sub.key))
        return paths


class LiveNotificationMixin(RawPayload):
    """Methods of ``LiveStreamNotification`` (the ``ParseLiveStreamProcessNotification`` output)."""

    __slots__ = ()

    if TYPE_CHECKING:
        notification_type: str | None

    @property
    def info(
        self,
    ) -> (
        LiveStreamAiReviewResultInfo
        | LiveStreamAiRecognitionResultInfo
        | LiveStreamRecordResultInfo
        | LiveStreamAiQualityControlResultInfo
        | LiveStreamAiAnalysisResultInfo
        | LiveStreamAiSmartSubtitleResultInfo
        | LiveStreamProcessErrorInfo
        | None
    ):
        """The result object ``NotificationType`` names, or None (unknown type or null)."""
        attr = _LIVE_ATTRS.get(self.notification_type or "")
        return None if attr is None else getattr(self, attr)

    def subtasks(self) -> Iterator[Subtask]:
        """The live result under its ``NotificationType`` key (``Unknown`` if not known)."""
        from .subtasks import iter_live_subtasks

        live: LiveStreamNotification = self  # type: ignore[assignment]
        return iter_live_subtasks(live)
