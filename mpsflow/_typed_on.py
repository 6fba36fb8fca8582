"""Typed ``on``: one overload per routing key's result type (GENERATED, do not edit).

Regenerate with ``python scripts/gen_typed_on.py``; the keyword options come from
``mpsflow.handler_options.ON_OPTIONS``. A handler registered for a key must accept that key's
result type as its first parameter and a ``Context`` as its second, and ``status=`` must name
statuses that key's results can have (``mpsflow.events.statuses``); anything else is a type
error. A non-literal ``str`` key falls back to an untyped handler (still checked at
registration time).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any, Literal, TypedDict, TypeVar, overload

from mpsflow import events
from mpsflow.context import Context
from mpsflow.events import statuses
from mpsflow.middleware.base import Middleware
from mpsflow.retry import RetryPolicy
from mpsflow.routing import HandlerFunc

__all__ = ["Handler", "OnOptions", "StatusOrWhenDoesNotFitKey", "TypedOn"]

_T = TypeVar("_T")

Handler = Callable[[_T, Context], Awaitable[object]]
"""An async handler of one result type: ``async def h(result: T, ctx: Context) -> None``."""


class StatusOrWhenDoesNotFitKey:
    """The only thing ``on`` takes, for mypy, when its ``status`` or ``when`` does not fit the key.

    Decorating a handler is then a type error that names this class: a ``status`` the key's
    results never have (``status="SUCESS"``, or any status for a key without one) or a
    ``when`` that does not take the key's result type. At runtime ``on`` raises
    ``ConfigurationError`` for the status, with the statuses the key has.
    """


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
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiDubbing"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AIDubbingTaskResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[events.AIDubbingTaskResult]], Handler[events.AIDubbingTaskResult]]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiAnalysis"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiAnalysisResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[events.AiAnalysisResult]], Handler[events.AiAnalysisResult]]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiAnalysis.Classification"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiAnalysisTaskClassificationResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiAnalysisTaskClassificationResult]],
        Handler[events.AiAnalysisTaskClassificationResult],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiAnalysis.Cover"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiAnalysisTaskCoverResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiAnalysisTaskCoverResult]], Handler[events.AiAnalysisTaskCoverResult]
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiAnalysis.Cutout"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiAnalysisTaskCutoutResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiAnalysisTaskCutoutResult]], Handler[events.AiAnalysisTaskCutoutResult]
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiAnalysis.DeLogo"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiAnalysisTaskDelLogoResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiAnalysisTaskDelLogoResult]], Handler[events.AiAnalysisTaskDelLogoResult]
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiAnalysis.Description"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiAnalysisTaskDescriptionResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiAnalysisTaskDescriptionResult]],
        Handler[events.AiAnalysisTaskDescriptionResult],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiAnalysis.Dubbing"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiAnalysisTaskDubbingResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiAnalysisTaskDubbingResult]], Handler[events.AiAnalysisTaskDubbingResult]
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiAnalysis.FrameTag"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiAnalysisTaskFrameTagResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiAnalysisTaskFrameTagResult]], Handler[events.AiAnalysisTaskFrameTagResult]
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiAnalysis.Generic"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiAnalysisTaskGenericResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiAnalysisTaskGenericResult]], Handler[events.AiAnalysisTaskGenericResult]
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiAnalysis.HeadTailRecognition"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiAnalysisTaskHeadTailResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiAnalysisTaskHeadTailResult]], Handler[events.AiAnalysisTaskHeadTailResult]
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiAnalysis.Highlight"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiAnalysisTaskHighlightResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiAnalysisTaskHighlightResult]],
        Handler[events.AiAnalysisTaskHighlightResult],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiAnalysis.HorizontalToVertical"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiAnalysisTaskHorizontalToVerticalResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiAnalysisTaskHorizontalToVerticalResult]],
        Handler[events.AiAnalysisTaskHorizontalToVerticalResult],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiAnalysis.Reel"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiAnalysisTaskReelResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiAnalysisTaskReelResult]], Handler[events.AiAnalysisTaskReelResult]
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiAnalysis.SegmentRecognition"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiAnalysisTaskSegmentResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiAnalysisTaskSegmentResult]], Handler[events.AiAnalysisTaskSegmentResult]
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiAnalysis.Tag"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiAnalysisTaskTagResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiAnalysisTaskTagResult]], Handler[events.AiAnalysisTaskTagResult]
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiAnalysis.VideoComprehension"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiAnalysisTaskVideoComprehensionResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiAnalysisTaskVideoComprehensionResult]],
        Handler[events.AiAnalysisTaskVideoComprehensionResult],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiAnalysis.VideoRemake"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiAnalysisTaskVideoRemakeResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiAnalysisTaskVideoRemakeResult]],
        Handler[events.AiAnalysisTaskVideoRemakeResult],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiContentReview"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiContentReviewResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiContentReviewResult]], Handler[events.AiContentReviewResult]
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiRecognition"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiRecognitionResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[events.AiRecognitionResult]], Handler[events.AiRecognitionResult]]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiRecognition.AsrFullTextRecognition"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiRecognitionTaskAsrFullTextResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiRecognitionTaskAsrFullTextResult]],
        Handler[events.AiRecognitionTaskAsrFullTextResult],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiRecognition.AsrWordsRecognition"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiRecognitionTaskAsrWordsResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiRecognitionTaskAsrWordsResult]],
        Handler[events.AiRecognitionTaskAsrWordsResult],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiRecognition.FaceRecognition"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiRecognitionTaskFaceResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiRecognitionTaskFaceResult]], Handler[events.AiRecognitionTaskFaceResult]
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiRecognition.ObjectRecognition"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiRecognitionTaskObjectResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiRecognitionTaskObjectResult]],
        Handler[events.AiRecognitionTaskObjectResult],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiRecognition.OcrFullTextRecognition"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiRecognitionTaskOcrFullTextResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiRecognitionTaskOcrFullTextResult]],
        Handler[events.AiRecognitionTaskOcrFullTextResult],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiRecognition.OcrWordsRecognition"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiRecognitionTaskOcrWordsResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiRecognitionTaskOcrWordsResult]],
        Handler[events.AiRecognitionTaskOcrWordsResult],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiRecognition.TransTextRecognition"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiRecognitionTaskTransTextResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiRecognitionTaskTransTextResult]],
        Handler[events.AiRecognitionTaskTransTextResult],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiContentReview.Political.Asr"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiReviewTaskPoliticalAsrResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiReviewTaskPoliticalAsrResult]],
        Handler[events.AiReviewTaskPoliticalAsrResult],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiContentReview.Political.Ocr"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiReviewTaskPoliticalOcrResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiReviewTaskPoliticalOcrResult]],
        Handler[events.AiReviewTaskPoliticalOcrResult],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiContentReview.Political"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiReviewTaskPoliticalResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiReviewTaskPoliticalResult]], Handler[events.AiReviewTaskPoliticalResult]
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiContentReview.Porn.Asr"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiReviewTaskPornAsrResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiReviewTaskPornAsrResult]], Handler[events.AiReviewTaskPornAsrResult]
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiContentReview.Porn.Ocr"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiReviewTaskPornOcrResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiReviewTaskPornOcrResult]], Handler[events.AiReviewTaskPornOcrResult]
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiContentReview.Porn"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiReviewTaskPornResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiReviewTaskPornResult]], Handler[events.AiReviewTaskPornResult]
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiContentReview.Prohibited.Asr"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiReviewTaskProhibitedAsrResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiReviewTaskProhibitedAsrResult]],
        Handler[events.AiReviewTaskProhibitedAsrResult],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiContentReview.Prohibited.Ocr"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiReviewTaskProhibitedOcrResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiReviewTaskProhibitedOcrResult]],
        Handler[events.AiReviewTaskProhibitedOcrResult],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiContentReview.Terrorism.Ocr"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiReviewTaskTerrorismOcrResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiReviewTaskTerrorismOcrResult]],
        Handler[events.AiReviewTaskTerrorismOcrResult],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiContentReview.Terrorism"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.AiReviewTaskTerrorismResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.AiReviewTaskTerrorismResult]], Handler[events.AiReviewTaskTerrorismResult]
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["BatchSmartSubtitles"],
        *,
        status: statuses.NoStatus | Collection[statuses.NoStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.BatchSmartSubtitlesResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.BatchSmartSubtitlesResult]], Handler[events.BatchSmartSubtitlesResult]
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["BatchTask"],
        *,
        status: statuses.NoStatus | Collection[statuses.NoStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.BatchSubTaskResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[events.BatchSubTaskResult]], Handler[events.BatchSubTaskResult]]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["EditMediaTask"],
        *,
        status: statuses.TaskFlowStatus | Collection[statuses.TaskFlowStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.EditMediaTask], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[events.EditMediaTask]], Handler[events.EditMediaTask]]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["ExtractBlindWatermark"],
        *,
        status: statuses.BlindWatermarkStatus
        | Collection[statuses.BlindWatermarkStatus]
        | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.ExtractBlindWatermarkTask], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.ExtractBlindWatermarkTask]], Handler[events.ExtractBlindWatermarkTask]
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiAnalysisResult"],
        *,
        status: statuses.NoStatus | Collection[statuses.NoStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.LiveStreamAiAnalysisResultInfo], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.LiveStreamAiAnalysisResultInfo]],
        Handler[events.LiveStreamAiAnalysisResultInfo],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiQualityControlResult"],
        *,
        status: statuses.NoStatus | Collection[statuses.NoStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.LiveStreamAiQualityControlResultInfo], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.LiveStreamAiQualityControlResultInfo]],
        Handler[events.LiveStreamAiQualityControlResultInfo],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiRecognitionResult"],
        *,
        status: statuses.NoStatus | Collection[statuses.NoStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.LiveStreamAiRecognitionResultInfo], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.LiveStreamAiRecognitionResultInfo]],
        Handler[events.LiveStreamAiRecognitionResultInfo],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiReviewResult"],
        *,
        status: statuses.NoStatus | Collection[statuses.NoStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.LiveStreamAiReviewResultInfo], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.LiveStreamAiReviewResultInfo]], Handler[events.LiveStreamAiReviewResultInfo]
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiSmartSubtitleResult"],
        *,
        status: statuses.NoStatus | Collection[statuses.NoStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.LiveStreamAiSmartSubtitleResultInfo], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.LiveStreamAiSmartSubtitleResultInfo]],
        Handler[events.LiveStreamAiSmartSubtitleResultInfo],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["ProcessEof"],
        *,
        status: statuses.NoStatus | Collection[statuses.NoStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.LiveStreamProcessErrorInfo], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.LiveStreamProcessErrorInfo]], Handler[events.LiveStreamProcessErrorInfo]
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["LiveRecordResult"],
        *,
        status: statuses.NoStatus | Collection[statuses.NoStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.LiveStreamRecordResultInfo], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.LiveStreamRecordResultInfo]], Handler[events.LiveStreamRecordResultInfo]
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AdaptiveDynamicStreaming"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.MediaProcessTaskAdaptiveDynamicStreamingResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.MediaProcessTaskAdaptiveDynamicStreamingResult]],
        Handler[events.MediaProcessTaskAdaptiveDynamicStreamingResult],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AnimatedGraphics"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.MediaProcessTaskAnimatedGraphicResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.MediaProcessTaskAnimatedGraphicResult]],
        Handler[events.MediaProcessTaskAnimatedGraphicResult],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["ImageSprites"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.MediaProcessTaskImageSpriteResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.MediaProcessTaskImageSpriteResult]],
        Handler[events.MediaProcessTaskImageSpriteResult],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["CoverBySnapshot"],
        *,
        status: statuses.NoStatus | Collection[statuses.NoStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.MediaProcessTaskResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.MediaProcessTaskResult]], Handler[events.MediaProcessTaskResult]
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["SampleSnapshot"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.MediaProcessTaskSampleSnapshotResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.MediaProcessTaskSampleSnapshotResult]],
        Handler[events.MediaProcessTaskSampleSnapshotResult],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["SnapshotByTimeOffset"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.MediaProcessTaskSnapshotByTimeOffsetResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.MediaProcessTaskSnapshotByTimeOffsetResult]],
        Handler[events.MediaProcessTaskSnapshotByTimeOffsetResult],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["Transcode"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.MediaProcessTaskTranscodeResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.MediaProcessTaskTranscodeResult]],
        Handler[events.MediaProcessTaskTranscodeResult],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["Unknown"],
        *,
        status: statuses.NoStatus | Collection[statuses.NoStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.MpsStruct], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[events.MpsStruct]], Handler[events.MpsStruct]]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["SmartSubtitles.PureSubtitleTrans"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.PureSubtitleTransResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.PureSubtitleTransResult]], Handler[events.PureSubtitleTransResult]
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["Schedule.AiAnalysis"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.ScheduleAnalysisTaskResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.ScheduleAnalysisTaskResult]], Handler[events.ScheduleAnalysisTaskResult]
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["ExecRule"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.ScheduleExecRuleTaskResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.ScheduleExecRuleTaskResult]], Handler[events.ScheduleExecRuleTaskResult]
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["AiQualityControl"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.ScheduleQualityControlTaskResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.ScheduleQualityControlTaskResult]],
        Handler[events.ScheduleQualityControlTaskResult],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["Schedule.AiRecognition"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.ScheduleRecognitionTaskResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.ScheduleRecognitionTaskResult]],
        Handler[events.ScheduleRecognitionTaskResult],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["Schedule.AiContentReview"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.ScheduleReviewTaskResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.ScheduleReviewTaskResult]], Handler[events.ScheduleReviewTaskResult]
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["Schedule.SmartSubtitles"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.ScheduleSmartSubtitleTaskResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.ScheduleSmartSubtitleTaskResult]],
        Handler[events.ScheduleSmartSubtitleTaskResult],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["ScheduleTask"],
        *,
        status: statuses.TaskFlowStatus | Collection[statuses.TaskFlowStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.ScheduleTask], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[events.ScheduleTask]], Handler[events.ScheduleTask]]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["SmartErase"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.SmartEraseTaskResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[events.SmartEraseTaskResult]], Handler[events.SmartEraseTaskResult]]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["SmartSubtitles.AsrFullTextRecognition"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.SmartSubtitleTaskAsrFullTextResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.SmartSubtitleTaskAsrFullTextResult]],
        Handler[events.SmartSubtitleTaskAsrFullTextResult],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["SmartSubtitles.OcrFullTextRecognition"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.SmartSubtitleTaskFullTextResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.SmartSubtitleTaskFullTextResult]],
        Handler[events.SmartSubtitleTaskFullTextResult],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["SmartSubtitles.TransTextRecognition"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.SmartSubtitleTaskTransTextResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[
        [Handler[events.SmartSubtitleTaskTransTextResult]],
        Handler[events.SmartSubtitleTaskTransTextResult],
    ]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["SmartSubtitles"],
        *,
        status: statuses.TaskStatus | Collection[statuses.TaskStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.SmartSubtitlesResult], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[events.SmartSubtitlesResult]], Handler[events.SmartSubtitlesResult]]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal["WorkflowTask"],
        *,
        status: statuses.TaskFlowStatus | Collection[statuses.TaskFlowStatus] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[events.WorkflowTask], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[events.WorkflowTask]], Handler[events.WorkflowTask]]: ...

    @overload
    def on(  # type: ignore[overload-overlap]
        self,
        key: Literal[
            "AdaptiveDynamicStreaming",
            "AiAnalysis",
            "AiAnalysis.Classification",
            "AiAnalysis.Cover",
            "AiAnalysis.Cutout",
            "AiAnalysis.DeLogo",
            "AiAnalysis.Description",
            "AiAnalysis.Dubbing",
            "AiAnalysis.FrameTag",
            "AiAnalysis.Generic",
            "AiAnalysis.HeadTailRecognition",
            "AiAnalysis.Highlight",
            "AiAnalysis.HorizontalToVertical",
            "AiAnalysis.Reel",
            "AiAnalysis.SegmentRecognition",
            "AiAnalysis.Tag",
            "AiAnalysis.VideoComprehension",
            "AiAnalysis.VideoRemake",
            "AiAnalysisResult",
            "AiContentReview",
            "AiContentReview.Political",
            "AiContentReview.Political.Asr",
            "AiContentReview.Political.Ocr",
            "AiContentReview.Porn",
            "AiContentReview.Porn.Asr",
            "AiContentReview.Porn.Ocr",
            "AiContentReview.Prohibited.Asr",
            "AiContentReview.Prohibited.Ocr",
            "AiContentReview.Terrorism",
            "AiContentReview.Terrorism.Ocr",
            "AiDubbing",
            "AiQualityControl",
            "AiQualityControlResult",
            "AiRecognition",
            "AiRecognition.AsrFullTextRecognition",
            "AiRecognition.AsrWordsRecognition",
            "AiRecognition.FaceRecognition",
            "AiRecognition.ObjectRecognition",
            "AiRecognition.OcrFullTextRecognition",
            "AiRecognition.OcrWordsRecognition",
            "AiRecognition.TransTextRecognition",
            "AiRecognitionResult",
            "AiReviewResult",
            "AiSmartSubtitleResult",
            "AnimatedGraphics",
            "BatchSmartSubtitles",
            "BatchTask",
            "CoverBySnapshot",
            "EditMediaTask",
            "ExecRule",
            "ExtractBlindWatermark",
            "ImageSprites",
            "LiveRecordResult",
            "ProcessEof",
            "SampleSnapshot",
            "Schedule.AiAnalysis",
            "Schedule.AiContentReview",
            "Schedule.AiRecognition",
            "Schedule.SmartSubtitles",
            "ScheduleTask",
            "SmartErase",
            "SmartSubtitles",
            "SmartSubtitles.AsrFullTextRecognition",
            "SmartSubtitles.OcrFullTextRecognition",
            "SmartSubtitles.PureSubtitleTrans",
            "SmartSubtitles.TransTextRecognition",
            "SnapshotByTimeOffset",
            "Transcode",
            "Unknown",
            "WorkflowTask",
        ],
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
    ) -> Callable[[StatusOrWhenDoesNotFitKey], StatusOrWhenDoesNotFitKey]: ...

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
    ) -> Any:
        """Register the decorated ``async def handler(result, ctx)`` for ``key``.

        ``key`` is an ``EventType`` (``"WorkflowTask"``), a subtask key (``"Transcode"``,
        ``"AiContentReview.Porn"``, …) or a live ``NotificationType``; unknown keys raise
        ``ConfigurationError`` at once. The options filter results or set per-handler
        policies:

        * ``status``: only results whose ``Status`` is this one (or one of these the key can have).
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
