"""Payloads for the decode benchmark: small, the seed sample and a large one, each two ways.

Every payload comes in a pretty (indented, as MPS documents it) and a compact encoding. The large
payload is built from the samples in ``tests/samples``: every media-process result of sample 03
twice over and every AI review/analysis/recognition result of sample 05, i.e. 60 routed
subtasks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SAMPLES_DIR", "Payload", "large_document", "payloads"]

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "tests" / "samples"
"""The sample notifications (the test suite's)."""


@dataclass(frozen=True, slots=True)
class Payload:
    """One benchmark input: ``name`` (e.g. ``seed/pretty``) and its bytes."""

    name: str
    data: bytes


def _sample_bytes(name: str) -> bytes:
    return (SAMPLES_DIR / name).read_bytes()


def _sample(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(_sample_bytes(name))
    return doc


def large_document() -> dict[str, Any]:
    """A WorkflowTask notification with 60 routed subtasks (media-process and AI results)."""
    media = _sample("03_workflow_task_all_media_process_types.json")
    ai = _sample("05_workflow_task_ai_review_analysis_recognition.json")
    doc: dict[str, Any] = json.loads(json.dumps(media))
    event = doc["WorkflowTaskEvent"]
    event["MediaProcessResultSet"] = media["WorkflowTaskEvent"]["MediaProcessResultSet"] * 2
    for key in ("AiContentReviewResultSet", "AiAnalysisResultSet", "AiRecognitionResultSet"):
        event[key] = ai["WorkflowTaskEvent"][key]
    return doc


def _two_ways(name: str, doc: dict[str, Any], *, verbatim: bytes | None = None) -> list[Payload]:
    pretty = verbatim or json.dumps(doc, indent=4, ensure_ascii=False).encode()
    compact = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    return [Payload(f"{name}/pretty", pretty), Payload(f"{name}/compact", compact)]


def payloads() -> list[Payload]:
    """small (sample 07, an EditMediaTask failure), seed (sample 01) and large, two ways each.

    The seed's pretty form is the verbatim file from the MPS documentation.
    """
    seed = "01_workflow_task_seed_verbatim.json"
    return [
        *_two_ways("small", _sample("07_edit_media_task_failure.json")),
        *_two_ways("seed", _sample(seed), verbatim=_sample_bytes(seed)),
        *_two_ways("large", large_document()),
    ]
