"""Typed ``on``: one overload per routing key's result type (GENERATED, do not edit).

Regenerate with ``python scripts/gen_typed_on.py``; the keyword options come from
``mpsflow.handler_options.ON_OPTIONS``. A handler registered for a key must accept that key's
result type as its first parameter and a ``Context`` as its second; anything else is a type
error. A non-literal ``str`` key falls back to an untyped handler (still checked at
registration time).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any, Literal, TypedDict, TypeVar, overload

from mpsflow.context import Context
from mpsflow.events import (
    AiAnalysisResult,
    AiAnalysisTaskClassificationResult,
    AiAnalysisTaskCoverResult,
    AiAnalysisTaskCutoutResult,
    AiAnalysisTaskDelLogoResult,
    AiAnalysisTaskDescriptionResult,
    AiAnalysisTaskDubbingResult,
    AiAnalysisTaskFrameTagResult,
    AiAnalysisTaskGenericResult,
    AiAnalysisTaskHeadTailResult,
    AiAnalysisTaskHighlightResult,
    AiAnalysisTaskHorizontalToVerticalResult,
    AiAnalysisTaskReelResult,
    AiAnalysisTaskSegmentResult,
    AiAnalysisTaskTagResult,
    AiAnalysisTaskVideoComprehensionResult,
    AiAnalysisTaskVideoRemakeResult,
    AiContentReviewResult,
    AIDubbingTaskResult,
    AiRecognitionResult,
    AiRecognitionTaskAsrFullTextResult,
    AiRecognitionTaskAsrWordsResult,
    AiRecognitionTaskFaceResult,
    AiRecognitionTaskObjectResult,
    AiRecognitionTaskOcrFullTextResult,
    AiRecognitionTaskOcrWordsResult,
    AiRecognitionTaskTransTextResult,
    AiReviewTaskPoliticalAsrResult,
    AiReviewTaskPoliticalOcrResult,
    AiReviewTaskPoliticalResult,
    AiReviewTaskPornAsrResult,
    AiReviewTaskPornOcrResult,
    AiReviewTaskPornResult,
    AiReviewTaskProhibitedAsrResult,
    AiReviewTaskProhibitedOcrResult,
    AiReviewTaskTerrorismOcrResult,
    AiReviewTaskTerrorismResult,
    BatchSmartSubtitlesResult,
    BatchSubTaskResult,
    EditMediaTask,
    ExtractBlindWatermarkTask,
    LiveStreamAiAnalysisResultInfo,
    LiveStreamAiQualityControlResultInfo,
    LiveStreamAiRecognitionResultInfo,
    LiveStreamAiReviewResultInfo,
    LiveStreamAiSmartSubtitleResultInfo,
    LiveStreamProcessErrorInfo,
    LiveStreamRecordResultInfo,
    MediaProcessTaskAdaptiveDynamicStreamingResult,
    MediaProcessTaskAnimatedGraphicResult,
    MediaProcessTaskImageSpriteResult,
    MediaProcessTaskResult,
    MediaProcessTaskSampleSnapshotResult,
    MediaProcessTaskSnapshotByTimeOffsetResult,
    MediaProcessTaskTranscodeResult,
    MpsStruct,
    PureSubtitleTransResult,
    ScheduleAnalysisTaskResult,
    ScheduleExecRuleTaskResult,
    ScheduleQualityControlTaskResult,
    ScheduleRecognitionTaskResult,
    ScheduleReviewTaskResult,
    ScheduleSmartSubtitleTaskResult,
    ScheduleTask,
    SmartEraseTaskResult,
    SmartSubtitlesResult,
    SmartSubtitleTaskAsrFullTextResult,
    SmartSubtitleTaskFullTextResult,
    SmartSubtitleTaskTransTextResult,
    WorkflowTask,
)
from mpsflow.middleware.base import Middleware
from mpsflow.retry import RetryPolicy
from mpsflow.routing import HandlerFunc

__all__ = ["Handler", "OnOptions", "TypedOn"]

_T = TypeVar("_T")

Handler = Callable[[_T, Context], Awaitable[object]]
"""An async handler of one result type: ``async def h(result: T, ctx: Context) -> None``."""


class OnOptions(TypedDict):
    """The keyword options of one ``on`` call, as ``Router._register`` receives them."""

    status: str | Collection[str] | None
    failed: bool | None
    ok: bool | None
    when: Callable[[Any], bool] | None
    name: str | None
    retry: RetryPolicy | None
    timeout: float | None
    max_concurrency: int | None
    middleware: Iterable[Middleware]
    emits: Iterable[str]


class TypedOn:
    """Mixin giving routers the typed ``on`` decorator."""

    if TYPE_CHECKING:

        def _register(
            self, key: str, options: OnOptions
        ) -> Callable[[HandlerFunc], HandlerFunc]: ...

    @overload
    def on(
        self,
        key: Literal["AiDubbing"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AIDubbingTaskResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[AIDubbingTaskResult]], Handler[AIDubbingTaskResult]]: ...

    @overload
    def on(
        self,
        key: Literal["AiAnalysis"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiAnalysisResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[AiAnalysisResult]], Handler[AiAnalysisResult]]: ...

    @overload
    def on(
        self,
        key: Literal["AiAnalysis.Classification"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiAnalysisTaskClassificationResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[AiAnalysisTaskClassificationResult]], Handler[AiAnalysisTaskClassificationResult]
    ]: ...

    @overload
    def on(
        self,
        key: Literal["AiAnalysis.Cover"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiAnalysisTaskCoverResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[AiAnalysisTaskCoverResult]], Handler[AiAnalysisTaskCoverResult]]: ...

    @overload
    def on(
        self,
        key: Literal["AiAnalysis.Cutout"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiAnalysisTaskCutoutResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[AiAnalysisTaskCutoutResult]], Handler[AiAnalysisTaskCutoutResult]]: ...

    @overload
    def on(
        self,
        key: Literal["AiAnalysis.DeLogo"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiAnalysisTaskDelLogoResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[AiAnalysisTaskDelLogoResult]], Handler[AiAnalysisTaskDelLogoResult]]: ...

    @overload
    def on(
        self,
        key: Literal["AiAnalysis.Description"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiAnalysisTaskDescriptionResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[AiAnalysisTaskDescriptionResult]], Handler[AiAnalysisTaskDescriptionResult]
    ]: ...

    @overload
    def on(
        self,
        key: Literal["AiAnalysis.Dubbing"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiAnalysisTaskDubbingResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[AiAnalysisTaskDubbingResult]], Handler[AiAnalysisTaskDubbingResult]]: ...

    @overload
    def on(
        self,
        key: Literal["AiAnalysis.FrameTag"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiAnalysisTaskFrameTagResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[AiAnalysisTaskFrameTagResult]], Handler[AiAnalysisTaskFrameTagResult]
    ]: ...

    @overload
    def on(
        self,
        key: Literal["AiAnalysis.Generic"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiAnalysisTaskGenericResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[AiAnalysisTaskGenericResult]], Handler[AiAnalysisTaskGenericResult]]: ...

    @overload
    def on(
        self,
        key: Literal["AiAnalysis.HeadTailRecognition"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiAnalysisTaskHeadTailResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[AiAnalysisTaskHeadTailResult]], Handler[AiAnalysisTaskHeadTailResult]
    ]: ...

    @overload
    def on(
        self,
        key: Literal["AiAnalysis.Highlight"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiAnalysisTaskHighlightResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[AiAnalysisTaskHighlightResult]], Handler[AiAnalysisTaskHighlightResult]
    ]: ...

    @overload
    def on(
        self,
        key: Literal["AiAnalysis.HorizontalToVertical"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiAnalysisTaskHorizontalToVerticalResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[AiAnalysisTaskHorizontalToVerticalResult]],
        Handler[AiAnalysisTaskHorizontalToVerticalResult],
    ]: ...

    @overload
    def on(
        self,
        key: Literal["AiAnalysis.Reel"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiAnalysisTaskReelResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[AiAnalysisTaskReelResult]], Handler[AiAnalysisTaskReelResult]]: ...

    @overload
    def on(
        self,
        key: Literal["AiAnalysis.SegmentRecognition"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiAnalysisTaskSegmentResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[AiAnalysisTaskSegmentResult]], Handler[AiAnalysisTaskSegmentResult]]: ...

    @overload
    def on(
        self,
        key: Literal["AiAnalysis.Tag"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiAnalysisTaskTagResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[AiAnalysisTaskTagResult]], Handler[AiAnalysisTaskTagResult]]: ...

    @overload
    def on(
        self,
        key: Literal["AiAnalysis.VideoComprehension"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiAnalysisTaskVideoComprehensionResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[AiAnalysisTaskVideoComprehensionResult]],
        Handler[AiAnalysisTaskVideoComprehensionResult],
    ]: ...

    @overload
    def on(
        self,
        key: Literal["AiAnalysis.VideoRemake"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiAnalysisTaskVideoRemakeResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[AiAnalysisTaskVideoRemakeResult]], Handler[AiAnalysisTaskVideoRemakeResult]
    ]: ...

    @overload
    def on(
        self,
        key: Literal["AiContentReview"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiContentReviewResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[AiContentReviewResult]], Handler[AiContentReviewResult]]: ...

    @overload
    def on(
        self,
        key: Literal["AiRecognition"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiRecognitionResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[AiRecognitionResult]], Handler[AiRecognitionResult]]: ...

    @overload
    def on(
        self,
        key: Literal["AiRecognition.AsrFullTextRecognition"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiRecognitionTaskAsrFullTextResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[AiRecognitionTaskAsrFullTextResult]], Handler[AiRecognitionTaskAsrFullTextResult]
    ]: ...

    @overload
    def on(
        self,
        key: Literal["AiRecognition.AsrWordsRecognition"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiRecognitionTaskAsrWordsResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[AiRecognitionTaskAsrWordsResult]], Handler[AiRecognitionTaskAsrWordsResult]
    ]: ...

    @overload
    def on(
        self,
        key: Literal["AiRecognition.FaceRecognition"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiRecognitionTaskFaceResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[AiRecognitionTaskFaceResult]], Handler[AiRecognitionTaskFaceResult]]: ...

    @overload
    def on(
        self,
        key: Literal["AiRecognition.ObjectRecognition"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiRecognitionTaskObjectResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[AiRecognitionTaskObjectResult]], Handler[AiRecognitionTaskObjectResult]
    ]: ...

    @overload
    def on(
        self,
        key: Literal["AiRecognition.OcrFullTextRecognition"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiRecognitionTaskOcrFullTextResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[AiRecognitionTaskOcrFullTextResult]], Handler[AiRecognitionTaskOcrFullTextResult]
    ]: ...

    @overload
    def on(
        self,
        key: Literal["AiRecognition.OcrWordsRecognition"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiRecognitionTaskOcrWordsResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[AiRecognitionTaskOcrWordsResult]], Handler[AiRecognitionTaskOcrWordsResult]
    ]: ...

    @overload
    def on(
        self,
        key: Literal["AiRecognition.TransTextRecognition"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiRecognitionTaskTransTextResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[AiRecognitionTaskTransTextResult]], Handler[AiRecognitionTaskTransTextResult]
    ]: ...

    @overload
    def on(
        self,
        key: Literal["AiContentReview.Political.Asr"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiReviewTaskPoliticalAsrResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[AiReviewTaskPoliticalAsrResult]], Handler[AiReviewTaskPoliticalAsrResult]
    ]: ...

    @overload
    def on(
        self,
        key: Literal["AiContentReview.Political.Ocr"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiReviewTaskPoliticalOcrResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[AiReviewTaskPoliticalOcrResult]], Handler[AiReviewTaskPoliticalOcrResult]
    ]: ...

    @overload
    def on(
        self,
        key: Literal["AiContentReview.Political"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiReviewTaskPoliticalResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[AiReviewTaskPoliticalResult]], Handler[AiReviewTaskPoliticalResult]]: ...

    @overload
    def on(
        self,
        key: Literal["AiContentReview.Porn.Asr"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiReviewTaskPornAsrResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[AiReviewTaskPornAsrResult]], Handler[AiReviewTaskPornAsrResult]]: ...

    @overload
    def on(
        self,
        key: Literal["AiContentReview.Porn.Ocr"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiReviewTaskPornOcrResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[AiReviewTaskPornOcrResult]], Handler[AiReviewTaskPornOcrResult]]: ...

    @overload
    def on(
        self,
        key: Literal["AiContentReview.Porn"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiReviewTaskPornResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[AiReviewTaskPornResult]], Handler[AiReviewTaskPornResult]]: ...

    @overload
    def on(
        self,
        key: Literal["AiContentReview.Prohibited.Asr"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiReviewTaskProhibitedAsrResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[AiReviewTaskProhibitedAsrResult]], Handler[AiReviewTaskProhibitedAsrResult]
    ]: ...

    @overload
    def on(
        self,
        key: Literal["AiContentReview.Prohibited.Ocr"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiReviewTaskProhibitedOcrResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[AiReviewTaskProhibitedOcrResult]], Handler[AiReviewTaskProhibitedOcrResult]
    ]: ...

    @overload
    def on(
        self,
        key: Literal["AiContentReview.Terrorism.Ocr"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiReviewTaskTerrorismOcrResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[AiReviewTaskTerrorismOcrResult]], Handler[AiReviewTaskTerrorismOcrResult]
    ]: ...

    @overload
    def on(
        self,
        key: Literal["AiContentReview.Terrorism"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[AiReviewTaskTerrorismResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[AiReviewTaskTerrorismResult]], Handler[AiReviewTaskTerrorismResult]]: ...

    @overload
    def on(
        self,
        key: Literal["BatchSmartSubtitles"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[BatchSmartSubtitlesResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[BatchSmartSubtitlesResult]], Handler[BatchSmartSubtitlesResult]]: ...

    @overload
    def on(
        self,
        key: Literal["BatchTask"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[BatchSubTaskResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[BatchSubTaskResult]], Handler[BatchSubTaskResult]]: ...

    @overload
    def on(
        self,
        key: Literal["EditMediaTask"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[EditMediaTask], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[EditMediaTask]], Handler[EditMediaTask]]: ...

    @overload
    def on(
        self,
        key: Literal["ExtractBlindWatermark"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[ExtractBlindWatermarkTask], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[ExtractBlindWatermarkTask]], Handler[ExtractBlindWatermarkTask]]: ...

    @overload
    def on(
        self,
        key: Literal["AiAnalysisResult"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[LiveStreamAiAnalysisResultInfo], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[LiveStreamAiAnalysisResultInfo]], Handler[LiveStreamAiAnalysisResultInfo]
    ]: ...

    @overload
    def on(
        self,
        key: Literal["AiQualityControlResult"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[LiveStreamAiQualityControlResultInfo], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[LiveStreamAiQualityControlResultInfo]],
        Handler[LiveStreamAiQualityControlResultInfo],
    ]: ...

    @overload
    def on(
        self,
        key: Literal["AiRecognitionResult"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[LiveStreamAiRecognitionResultInfo], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[LiveStreamAiRecognitionResultInfo]], Handler[LiveStreamAiRecognitionResultInfo]
    ]: ...

    @overload
    def on(
        self,
        key: Literal["AiReviewResult"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[LiveStreamAiReviewResultInfo], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[LiveStreamAiReviewResultInfo]], Handler[LiveStreamAiReviewResultInfo]
    ]: ...

    @overload
    def on(
        self,
        key: Literal["AiSmartSubtitleResult"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[LiveStreamAiSmartSubtitleResultInfo], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[LiveStreamAiSmartSubtitleResultInfo]], Handler[LiveStreamAiSmartSubtitleResultInfo]
    ]: ...

    @overload
    def on(
        self,
        key: Literal["ProcessEof"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[LiveStreamProcessErrorInfo], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[LiveStreamProcessErrorInfo]], Handler[LiveStreamProcessErrorInfo]]: ...

    @overload
    def on(
        self,
        key: Literal["LiveRecordResult"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[LiveStreamRecordResultInfo], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[LiveStreamRecordResultInfo]], Handler[LiveStreamRecordResultInfo]]: ...

    @overload
    def on(
        self,
        key: Literal["AdaptiveDynamicStreaming"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[MediaProcessTaskAdaptiveDynamicStreamingResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[MediaProcessTaskAdaptiveDynamicStreamingResult]],
        Handler[MediaProcessTaskAdaptiveDynamicStreamingResult],
    ]: ...

    @overload
    def on(
        self,
        key: Literal["AnimatedGraphics"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[MediaProcessTaskAnimatedGraphicResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[MediaProcessTaskAnimatedGraphicResult]],
        Handler[MediaProcessTaskAnimatedGraphicResult],
    ]: ...

    @overload
    def on(
        self,
        key: Literal["ImageSprites"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[MediaProcessTaskImageSpriteResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[MediaProcessTaskImageSpriteResult]], Handler[MediaProcessTaskImageSpriteResult]
    ]: ...

    @overload
    def on(
        self,
        key: Literal["CoverBySnapshot"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[MediaProcessTaskResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[MediaProcessTaskResult]], Handler[MediaProcessTaskResult]]: ...

    @overload
    def on(
        self,
        key: Literal["SampleSnapshot"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[MediaProcessTaskSampleSnapshotResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[MediaProcessTaskSampleSnapshotResult]],
        Handler[MediaProcessTaskSampleSnapshotResult],
    ]: ...

    @overload
    def on(
        self,
        key: Literal["SnapshotByTimeOffset"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[MediaProcessTaskSnapshotByTimeOffsetResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[MediaProcessTaskSnapshotByTimeOffsetResult]],
        Handler[MediaProcessTaskSnapshotByTimeOffsetResult],
    ]: ...

    @overload
    def on(
        self,
        key: Literal["Transcode"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[MediaProcessTaskTranscodeResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[MediaProcessTaskTranscodeResult]], Handler[MediaProcessTaskTranscodeResult]
    ]: ...

    @overload
    def on(
        self,
        key: Literal["Unknown"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[MpsStruct], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[MpsStruct]], Handler[MpsStruct]]: ...

    @overload
    def on(
        self,
        key: Literal["SmartSubtitles.PureSubtitleTrans"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[PureSubtitleTransResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[PureSubtitleTransResult]], Handler[PureSubtitleTransResult]]: ...

    @overload
    def on(
        self,
        key: Literal["Schedule.AiAnalysis"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[ScheduleAnalysisTaskResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[ScheduleAnalysisTaskResult]], Handler[ScheduleAnalysisTaskResult]]: ...

    @overload
    def on(
        self,
        key: Literal["ExecRule"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[ScheduleExecRuleTaskResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[ScheduleExecRuleTaskResult]], Handler[ScheduleExecRuleTaskResult]]: ...

    @overload
    def on(
        self,
        key: Literal["AiQualityControl"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[ScheduleQualityControlTaskResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[ScheduleQualityControlTaskResult]], Handler[ScheduleQualityControlTaskResult]
    ]: ...

    @overload
    def on(
        self,
        key: Literal["Schedule.AiRecognition"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[ScheduleRecognitionTaskResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[ScheduleRecognitionTaskResult]], Handler[ScheduleRecognitionTaskResult]
    ]: ...

    @overload
    def on(
        self,
        key: Literal["Schedule.AiContentReview"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[ScheduleReviewTaskResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[ScheduleReviewTaskResult]], Handler[ScheduleReviewTaskResult]]: ...

    @overload
    def on(
        self,
        key: Literal["Schedule.SmartSubtitles"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[ScheduleSmartSubtitleTaskResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[ScheduleSmartSubtitleTaskResult]], Handler[ScheduleSmartSubtitleTaskResult]
    ]: ...

    @overload
    def on(
        self,
        key: Literal["ScheduleTask"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[ScheduleTask], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[ScheduleTask]], Handler[ScheduleTask]]: ...

    @overload
    def on(
        self,
        key: Literal["SmartErase"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[SmartEraseTaskResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[SmartEraseTaskResult]], Handler[SmartEraseTaskResult]]: ...

    @overload
    def on(
        self,
        key: Literal["SmartSubtitles.AsrFullTextRecognition"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[SmartSubtitleTaskAsrFullTextResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[SmartSubtitleTaskAsrFullTextResult]], Handler[SmartSubtitleTaskAsrFullTextResult]
    ]: ...

    @overload
    def on(
        self,
        key: Literal["SmartSubtitles.OcrFullTextRecognition"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[SmartSubtitleTaskFullTextResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[SmartSubtitleTaskFullTextResult]], Handler[SmartSubtitleTaskFullTextResult]
    ]: ...

    @overload
    def on(
        self,
        key: Literal["SmartSubtitles.TransTextRecognition"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[SmartSubtitleTaskTransTextResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[SmartSubtitleTaskTransTextResult]], Handler[SmartSubtitleTaskTransTextResult]
    ]: ...

    @overload
    def on(
        self,
        key: Literal["SmartSubtitles"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[SmartSubtitlesResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[SmartSubtitlesResult]], Handler[SmartSubtitlesResult]]: ...

    @overload
    def on(
        self,
        key: Literal["WorkflowTask"],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[WorkflowTask], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[WorkflowTask]], Handler[WorkflowTask]]: ...

    @overload
    def on(
        self,
        key: str,
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[Any], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[HandlerFunc], HandlerFunc]: ...

    def on(
        self,
        key: str,
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[Any], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Any], Any]:
        """Register the decorated ``async def handler(result, ctx)`` for ``key``.

        ``key`` is an ``EventType`` (``"WorkflowTask"``), a subtask key (``"Transcode"``,
        ``"AiContentReview.Porn"``, …) or a live ``NotificationType``; unknown keys raise
        ``ConfigurationError`` at once. The options filter results or set per-handler
        policies:

        * ``status``: only results whose ``Status`` is this one (or one of these).
        * ``failed``: only failed results (``False``: only not failed).
        * ``ok``: only successful results (``False``: only not ok).
        * ``when``: only results this predicate accepts.
        * ``name``: the handler's name (it keys the dedup records); default ``module.qualname``.
        * ``retry``: retry policy (default: the nearest router's).
        * ``timeout``: seconds one call may take (default: the nearest router's).
        * ``max_concurrency``: how many calls may run at once.
        * ``middleware``: middleware around this handler only (inside the routers').
        * ``emits``: names of the sinks it emits to (checked at startup).
        """
        return self._register(
            key,
            OnOptions(
                status=status,
                failed=failed,
                ok=ok,
                when=when,
                name=name,
                retry=retry,
                timeout=timeout,
                max_concurrency=max_concurrency,
                middleware=middleware,
                emits=emits,
            ),
        )
