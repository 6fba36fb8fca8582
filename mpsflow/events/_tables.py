"""Where each known part of a notification sits: the discriminator tables.

For every discriminator value MPS sends (a ``MediaProcessResultSet`` item's ``Type``, an AI
category item's ``Type``, a schedule activity's task, a live ``NotificationType``, an
``EventType``) the routing key, the Struct attribute and the JSON wire name of its part.
``keys`` builds the key registries from them, ``subtasks`` walks a notification with them and
``unknown`` finds the parts they do not name. Plain data: importing it imports nothing else.
"""

from __future__ import annotations

__all__ = [
    "ACTIVITY_TASKS",
    "ANALYSIS_TYPES",
    "CATEGORY_TYPES",
    "EVENT_TYPES",
    "KNOWN_ACTIVITY_TYPES",
    "LIVE_TYPES",
    "MEDIA_TYPES",
    "RECOGNITION_TYPES",
    "REVIEW_TYPES",
    "SUBTITLE_TYPES",
]

MEDIA_TYPES: dict[str, tuple[str, str | None, str]] = {
    "Transcode": ("Transcode", "transcode_task", "TranscodeTask"),
    "AnimatedGraphics": ("AnimatedGraphics", "animated_graphic_task", "AnimatedGraphicTask"),
    "SnapshotByTimeOffset": (
        "SnapshotByTimeOffset",
        "snapshot_by_time_offset_task",
        "SnapshotByTimeOffsetTask",
    ),
    "SampleSnapshot": ("SampleSnapshot", "sample_snapshot_task", "SampleSnapshotTask"),
    "ImageSprites": ("ImageSprites", "image_sprite_task", "ImageSpriteTask"),
    "ImageSprite": ("ImageSprites", "image_sprite_task", "ImageSpriteTask"),
    "AdaptiveDynamicStreaming": (
        "AdaptiveDynamicStreaming",
        "adaptive_dynamic_streaming_task",
        "AdaptiveDynamicStreamingTask",
    ),
    "CoverBySnapshot": ("CoverBySnapshot", None, ""),
}
"""``MediaProcessResultSet`` item ``Type`` -> (key, attribute of its task, wire name); no
attribute means the item itself is the result."""

REVIEW_TYPES: dict[str, tuple[str, str]] = {
    "Porn": ("porn_task", "PornTask"),
    "Terrorism": ("terrorism_task", "TerrorismTask"),
    "Political": ("political_task", "PoliticalTask"),
    "Porn.Asr": ("porn_asr_task", "PornAsrTask"),
    "Porn.Ocr": ("porn_ocr_task", "PornOcrTask"),
    "Political.Asr": ("political_asr_task", "PoliticalAsrTask"),
    "Political.Ocr": ("political_ocr_task", "PoliticalOcrTask"),
    "Terrorism.Ocr": ("terrorism_ocr_task", "TerrorismOcrTask"),
    "Prohibited.Asr": ("prohibited_asr_task", "ProhibitedAsrTask"),
    "Prohibited.Ocr": ("prohibited_ocr_task", "ProhibitedOcrTask"),
}
"""``AiContentReviewResult`` ``Type`` -> (attribute, wire name) of its task."""

ANALYSIS_TYPES: dict[str, tuple[str, str]] = {
    "Classification": ("classification_task", "ClassificationTask"),
    "Cover": ("cover_task", "CoverTask"),
    "Tag": ("tag_task", "TagTask"),
    "FrameTag": ("frame_tag_task", "FrameTagTask"),
    "Highlight": ("highlight_task", "HighlightTask"),
    "DeLogo": ("de_logo_task", "DeLogoTask"),
    "SegmentRecognition": ("segment_task", "SegmentTask"),
    "HeadTailRecognition": ("head_tail_task", "HeadTailTask"),
    "Description": ("description_task", "DescriptionTask"),
    "HorizontalToVertical": ("horizontal_to_vertical_task", "HorizontalToVerticalTask"),
    "Dubbing": ("dubbing_task", "DubbingTask"),
    "VideoRemake": ("video_remake_task", "VideoRemakeTask"),
    "VideoComprehension": ("video_comprehension_task", "VideoComprehensionTask"),
    "Cutout": ("cutout_task", "CutoutTask"),
    "Reel": ("reel_task", "ReelTask"),
    "Generic": ("generic_task", "GenericTask"),
}
"""``AiAnalysisResult`` ``Type`` -> (attribute, wire name) of its task."""

RECOGNITION_TYPES: dict[str, tuple[str, str]] = {
    "FaceRecognition": ("face_task", "FaceTask"),
    "AsrWordsRecognition": ("asr_words_task", "AsrWordsTask"),
    "AsrFullTextRecognition": ("asr_full_text_task", "AsrFullTextTask"),
    "OcrWordsRecognition": ("ocr_words_task", "OcrWordsTask"),
    "OcrFullTextRecognition": ("ocr_full_text_task", "OcrFullTextTask"),
    "TransTextRecognition": ("trans_text_task", "TransTextTask"),
    "ObjectRecognition": ("object_task", "ObjectTask"),
}
"""``AiRecognitionResult`` ``Type`` -> (attribute, wire name) of its task."""

SUBTITLE_TYPES: dict[str, tuple[str, str]] = {
    "AsrFullTextRecognition": ("asr_full_text_task", "AsrFullTextTask"),
    "TransTextRecognition": ("trans_text_task", "TransTextTask"),
    "PureSubtitleTrans": ("pure_subtitle_trans_task", "PureSubtitleTransTask"),
    "OcrFullTextRecognition": ("ocr_full_text_task", "OcrFullTextTask"),
}
"""``SmartSubtitlesResult`` ``Type`` -> (attribute, wire name) of its task."""

CATEGORY_TYPES: dict[str, dict[str, tuple[str, str]]] = {
    "AiContentReview": REVIEW_TYPES,
    "AiAnalysis": ANALYSIS_TYPES,
    "AiRecognition": RECOGNITION_TYPES,
    "SmartSubtitles": SUBTITLE_TYPES,
}
"""AI category key -> its per-type table: item ``Type`` -> (attribute, wire name)."""

ACTIVITY_TASKS: tuple[tuple[str, str, str, str | None], ...] = (
    ("transcode_task", "TranscodeTask", "Transcode", None),
    ("animated_graphic_task", "AnimatedGraphicTask", "AnimatedGraphics", None),
    ("snapshot_by_time_offset_task", "SnapshotByTimeOffsetTask", "SnapshotByTimeOffset", None),
    ("sample_snapshot_task", "SampleSnapshotTask", "SampleSnapshot", None),
    ("image_sprite_task", "ImageSpriteTask", "ImageSprites", None),
    (
        "adaptive_dynamic_streaming_task",
        "AdaptiveDynamicStreamingTask",
        "AdaptiveDynamicStreaming",
        None,
    ),
    ("recognition_task", "RecognitionTask", "Schedule.AiRecognition", "AiRecognition"),
    ("review_task", "ReviewTask", "Schedule.AiContentReview", "AiContentReview"),
    ("analysis_task", "AnalysisTask", "Schedule.AiAnalysis", "AiAnalysis"),
    ("quality_control_task", "QualityControlTask", "AiQualityControl", None),
    ("exec_rule_task", "ExecRuleTask", "ExecRule", None),
    ("smart_subtitles_task", "SmartSubtitlesTask", "Schedule.SmartSubtitles", "SmartSubtitles"),
    ("smart_erase_task", "SmartEraseTask", "SmartErase", None),
    ("ai_dubbing_task", "AIDubbingTask", "AiDubbing", None),
)
"""``ActivityResItem`` attribute -> (wire name, key, category of the wrapper's ``Output`` items
or None), in document order."""

KNOWN_ACTIVITY_TYPES = frozenset(
    {
        "Transcode",
        "SampleSnapshot",
        "AnimatedGraphics",
        "SnapshotByTimeOffset",
        "ImageSprites",
        "AdaptiveDynamicStreaming",
        "AiContentReview",
        "AIRecognition",
        "AiRecognition",
        "AIAnalysis",
        "AiAnalysis",
        "AiQualityControl",
        "SmartSubtitles",
        "SmartErase",
        "Dubbing",
        "AiDubbing",
        "AIDubbing",
        "ExecRule",
        "ExecRules",
    }
)
"""Schedule ``ActivityType`` values mpsflow knows (an activity of another type is unknown)."""

LIVE_TYPES: dict[str, tuple[str, str]] = {
    "AiReviewResult": ("ai_review_result_info", "AiReviewResultInfo"),
    "AiRecognitionResult": ("ai_recognition_result_info", "AiRecognitionResultInfo"),
    "LiveRecordResult": ("live_record_result_info", "LiveRecordResultInfo"),
    "AiQualityControlResult": ("ai_quality_control_result_info", "AiQualityControlResultInfo"),
    "AiAnalysisResult": ("ai_analysis_result_info", "AiAnalysisResultInfo"),
    "AiSmartSubtitleResult": ("ai_smart_subtitle_result_info", "AiSmartSubtitleResultInfo"),
    "ProcessEof": ("process_eof_info", "ProcessEofInfo"),
}
"""Live ``NotificationType`` -> (attribute, wire name) of its info."""

EVENT_TYPES: dict[str, tuple[str, str]] = {
    "WorkflowTask": ("workflow_task_event", "WorkflowTaskEvent"),
    "EditMediaTask": ("edit_media_task_event", "EditMediaTaskEvent"),
    "ScheduleTask": ("schedule_task_event", "ScheduleTaskEvent"),
    "BatchTask": ("batch_task_event", "BatchTaskEvent"),
    "ExtractBlindWatermark": ("extract_blind_watermark_task", "ExtractBlindWatermarkTask"),
}
"""``EventType`` -> (attribute, wire name) of its event."""
